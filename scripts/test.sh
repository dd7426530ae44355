#!/usr/bin/env bash
# README's test command: set up (only what is missing), check formatting, lints and docs,
# build the edge configuration of the engine, then build once and run every test of every
# crate with every feature on.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

# Tests in every crate find the full data set through this variable (cargo runs each crate's
# tests in that crate's folder, so the relative default would not be found from there).
if [ -z "${CIFAR10_DATA_DIR:-}" ] && [ -d ../shared/cifar10/cifar-10-batches-bin ]; then
  CIFAR10_DATA_DIR=$(cd ../shared/cifar10/cifar-10-batches-bin && pwd)
  export CIFAR10_DATA_DIR
fi

echo "test.sh: rustfmt"
cargo fmt --all --check
echo "test.sh: clippy"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings
echo "test.sh: docs"
RUSTDOCFLAGS=-Dwarnings cargo doc --workspace --lib --no-deps --all-features --locked --quiet
echo "test.sh: the edge build (infer without default features)"
cargo build -p infer --no-default-features --locked --quiet
echo "test.sh: the release build of cifar10 (README's first command; the example pipelines' test runs it)"
cargo build --release -p cifar10 --locked --quiet
echo "test.sh: cargo install of cifar10 (README's install; it reuses that build), run from outside the checkout"
install_root=$(mktemp -d)
trap 'rm -rf "$install_root"' EXIT
cargo install --path cli --locked --quiet --root "$install_root"
(cd "$install_root" && env -u CIFAR10_DATA_DIR -u CI ./bin/cifar10 eval --limit 100 | grep -E '^(model|precision)')
echo "test.sh: tests"
cargo test --workspace --all-features --locked --no-fail-fast
echo "test.sh: the Python module and the example CI pipelines (pytest; the module loads the libcifar10.so that cargo test built)"
.venv/bin/python -m pytest infer-py/tests infer-c/tests/package examples/ci -q
echo "test.sh: deployment (deploy/tests: the static server's container image, the KServe manifests, replicas behind nginx)"
.venv/bin/python -m pytest deploy/tests -q -s  # -s: prints the image size, the stop time and the load summary
