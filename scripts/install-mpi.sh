#!/usr/bin/env bash
# Open MPI (the engine of data-parallel CPU training, `--features mpi`) and libclang (the
# `mpi` crate generates its bindings with bindgen), from the OS packages. Does nothing when
# they are there already.
set -euo pipefail
have_mpi() { command -v mpirun >/dev/null && command -v mpicc >/dev/null; }
have_clang() { ls /usr/lib/llvm-*/lib/libclang*.so* /usr/lib/*/libclang*.so* >/dev/null 2>&1; }
if have_mpi && have_clang; then
  exit 0
fi
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
if command -v apt-get >/dev/null; then
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    libopenmpi-dev openmpi-bin libclang-dev >/dev/null
elif command -v dnf >/dev/null; then
  $sudo dnf install -y openmpi-devel clang-devel
  echo "dnf installs Open MPI under /usr/lib64/openmpi: add its bin/ to PATH" >&2
elif command -v brew >/dev/null; then
  brew install open-mpi llvm
else
  echo "install Open MPI (or MPICH) and libclang with your package manager" >&2
  exit 1
fi
have_mpi || { echo "mpirun/mpicc still not found after installing Open MPI" >&2; exit 1; }
