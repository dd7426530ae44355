#!/usr/bin/env bash
# README's test command: set up (only what is missing), then build once and run every test
# of every crate with every feature on (the ONNX Runtime, serving and download paths included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo test --workspace --all-features --locked
