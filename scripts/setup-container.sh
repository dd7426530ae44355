#!/usr/bin/env bash
# Installs what the deployment tests (deploy/tests/) need, only when missing: Debian's `podman`
# (with `runc`) to build and run the container image, `nginx` as the load balancer in front of
# replicas. Writes /etc/containers/containers.conf for machines like this one (no systemd,
# containers inside a container): `[containers] default_ulimits = []` and `[engine]
# cgroup_manager = "cgroupfs"`, `runtime = "runc"`, only when the file does not set them already.
# Safe to run again: it does nothing when everything is in place. Needs root (or sudo).
set -euo pipefail

SUDO=
if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
fi
missing=()
command -v podman >/dev/null || missing+=(podman)
command -v runc >/dev/null || missing+=(runc)
# nginx is in /usr/sbin, which a non-root PATH may lack.
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null || missing+=(nginx)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup-container: installing ${missing[*]} with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

conf=/etc/containers/containers.conf
set_key() { # section key value: appends "key = value" under [section] unless the key is set
  local section=$1 key=$2 value=$3
  if [ -f "$conf" ] && grep -Eq "^[[:space:]]*$key[[:space:]]*=" "$conf"; then
    return
  fi
  $SUDO mkdir -p "$(dirname "$conf")"
  $SUDO touch "$conf"
  if grep -Eq "^[[:space:]]*\[$section\]" "$conf"; then
    $SUDO sed -i "/^[[:space:]]*\[$section\]/a $key = $value" "$conf"
  else
    printf '\n[%s]\n%s = %s\n' "$section" "$key" "$value" | $SUDO tee -a "$conf" >/dev/null
  fi
}
set_key containers default_ulimits '[]'
set_key engine cgroup_manager '"cgroupfs"'
set_key engine runtime '"runc"'
echo "setup-container: ok ($(podman --version), $(/usr/sbin/nginx -v 2>&1 || nginx -v 2>&1))"
