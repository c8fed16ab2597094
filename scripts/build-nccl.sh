#!/usr/bin/env bash
# Build hone for data-parallel GPU training (`--features nccl`: CUDA + NCCL) on a machine
# without a GPU: nvcc and the CUDA link stubs come from ../shared/tools/cuda-env.sh, and
# NCCL's from here (an empty libnccl.so.2 carrying the symbol names cudarc links; the GPU
# machine's real NCCL, e.g. the nvidia-nccl-cu13 wheel's lib/, is loaded in its place).
# Usage: scripts/build-nccl.sh [extra cargo args]   -> target/release/hone
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${HONE_SHARED:-../shared}
cargo fetch -q
# shellcheck disable=SC1091
source "$shared/tools/cuda-env.sh" >/dev/null
stubs="${CUDA_VENV:-$HOME/.cache/cuda-13.0}/stubs"
if [ ! -e "$stubs/libnccl.so" ]; then
  src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.* | sort -V | tail -1)
  c="$stubs/libnccl.c"
  grep -oE 'load::<_F>\("[A-Za-z0-9_]+"\)' "$src/src/nccl/sys/mod.rs" |
    sed -E 's/.*"([A-Za-z0-9_]+)".*/void \1(void) {}/' | sort -u > "$c"
  cc -shared -fPIC -Wl,-soname,libnccl.so.2 -o "$stubs/libnccl.so" "$c"
  rm -f "$c"
fi
cargo build --release -p hone --features nccl "$@"
echo "built ${CARGO_TARGET_DIR:-target}/release/hone with CUDA and NCCL; on the GPU machine put NCCL's lib/ on LD_LIBRARY_PATH"
