#!/usr/bin/env bash
# Installs what the `c10d` crate's C++ shim needs to compile, only when missing: Debian's
# `libgloo-dev`, for gloo's headers (the torch wheel ships libtorch's c10d headers but not
# gloo's; the Gloo implementation used at run time is the one inside libtorch_cpu.so).
# Safe to run again: it does nothing when the headers are in place. Needs root (or sudo).
set -euo pipefail

if [ -f /usr/include/gloo/config.h ]; then
  echo "setup-dist: ok (gloo headers in /usr/include/gloo)"
  exit 0
fi
SUDO=
if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
fi
echo "setup-dist: installing libgloo-dev with apt-get"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends libgloo-dev >/dev/null
echo "setup-dist: ok (gloo headers in /usr/include/gloo)"
