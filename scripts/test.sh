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
# Lints, docs and the edge build use the tests' profile: build scripts (torch-sys compiles
# libtorch's C++ wrapper, minutes on 2 cores) then run once for all of them and the tests.
echo "test.sh: clippy"
cargo clippy --profile test --workspace --all-targets --all-features --locked -- -D warnings
echo "test.sh: docs"
RUSTDOCFLAGS=-Dwarnings cargo doc --profile test --workspace --lib --no-deps --all-features --locked --quiet
echo "test.sh: the edge build (infer without default features)"
cargo build --profile test -p cifar10-infer --no-default-features --locked --quiet
echo "test.sh: the published crates (model-format, cifar10-infer): contents, and each built from its tarball"
bash scripts/check-crates.sh
echo "test.sh: the release build of cifar10 (README's first command; the example pipelines' test runs it)"
cargo build --release -p cifar10 --locked --quiet
echo "test.sh: tests"
cargo test --workspace --all-features --locked --no-fail-fast
echo "test.sh: Python tests: the module, the wheel, the C package, README's install blocks and the example CI pipelines"
.venv/bin/python -m pytest infer-py/tests infer-c/tests/package tests/readme examples/ci -q
echo "test.sh: deployment (deploy/tests: the static server's container image, the KServe manifests, replicas behind nginx)"
.venv/bin/python -m pytest deploy/tests -q -s  # -s: prints the image size, the stop time and the load summary
