#!/usr/bin/env bash
# Installs what the browser tests (serve/tests/page.rs) need, only when missing: Debian's
# `chromium` (headless browser) and `chromium-driver` (its WebDriver server, `chromedriver`).
# Safe to run again: it does nothing when both are in place. Needs root (or sudo) for apt-get.
set -euo pipefail

if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  echo "setup-browser: ok ($(chromium --version 2>/dev/null | head -n1))"
  exit 0
fi
SUDO=
if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
fi
echo "setup-browser: installing chromium and chromium-driver with apt-get"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
echo "setup-browser: ok ($(chromium --version 2>/dev/null | head -n1))"
