#!/usr/bin/env bash
# Builds the server's container image (Containerfile at the repository root): first the
# statically linked `cifar10` with only the serve feature (the CPU engine and both shipped
# models built in; no ONNX backend, which needs dlopen; no bundled eval sample), stripped,
# then `podman build` (or $ENGINE, e.g. ENGINE=docker) with that binary as the only file.
# Works offline: the image is FROM scratch and the build downloads nothing.
#   scripts/build-image.sh [TAG]      (default tag: localhost/cifar10-serve:latest)
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=${1:-localhost/cifar10-serve:latest}
ENGINE=${ENGINE:-podman}
TARGET=x86_64-unknown-linux-gnu
command -v "$ENGINE" >/dev/null || {
  echo "build-image: $ENGINE not found (scripts/setup-container.sh installs podman)" >&2
  exit 1
}

# The explicit --target keeps build scripts and proc-macros dynamic; only cifar10 is static.
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
  cargo build --release --locked --quiet -p cifar10 --no-default-features --features serve --target "$TARGET"
context=target/image-context
rm -rf "$context"
mkdir -p "$context"
strip -o "$context/cifar10" "target/$TARGET/release/cifar10"
# A static binary has no interpreter and no needed libraries: refuse to ship anything else.
if readelf -l "$context/cifar10" | grep -q 'INTERP' || readelf -d "$context/cifar10" | grep -q 'NEEDED'; then
  echo "build-image: target/$TARGET/release/cifar10 is not statically linked" >&2
  exit 1
fi
"$ENGINE" build --quiet -f Containerfile -t "$TAG" "$context" >/dev/null
echo "build-image: $TAG ($(du -k "$context/cifar10" | cut -f1) KiB binary)"
