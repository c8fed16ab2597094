#!/usr/bin/env bash
# PEFT's own step time and peak memory (LoRA and full fine-tuning), for a same-run comparison with hone.
# Usage:
#   scripts/peft-peer.sh MODEL_DIR TRAIN_TSV [--batch-size 32] [--max-length 128] [--steps 8] [--warmup 2]
#   scripts/peft-peer.sh check-fixture [--adapter DIR] [--base DIR] [--expected JSON]
# Makes (once) a venv at ${PEER_VENV:-/tmp/peft-venv} with CPU torch, transformers, peft and safetensors,
# then runs scripts/peft_peer.py in it. THREADS (default 2) is torch's thread count.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${PEER_VENV:-/tmp/peft-venv}"
fail() { echo "peft-peer.sh: $*" >&2; exit 1; }
check() { "$venv/bin/python" -c "import torch, transformers, peft, safetensors" 2>/dev/null; }
if [ ! -x "$venv/bin/python" ] || ! check; then
  echo "peft-peer.sh: building the venv at $venv (once)" >&2
  python3 -m venv "$venv" || fail "cannot create a venv at $venv with 'python3 -m venv' (Debian: apt-get install python3-venv)"
  pip=("$venv/bin/python" -m pip install -q)
  if "$venv/bin/python" -c "import urllib.request as u; u.urlopen('https://download.pytorch.org/whl/cpu/', timeout=10)" 2>/dev/null; then
    "${pip[@]}" torch --index-url https://download.pytorch.org/whl/cpu || fail "pip could not install CPU torch from download.pytorch.org"
  else
    echo "peft-peer.sh: download.pytorch.org unreachable; installing torch from PyPI (CUDA build: a larger download, runs on CPU)" >&2
    "${pip[@]}" torch || fail "pip could not install torch from PyPI (is PyPI reachable? see the pip error above)"
  fi
  "${pip[@]}" transformers peft safetensors || fail "pip could not install transformers, peft, safetensors"
  check || fail "the venv at $venv was built but 'import torch, transformers, peft, safetensors' fails; remove it and retry"
fi
export THREADS="${THREADS:-2}"
exec "$venv/bin/python" "$here/peft_peer.py" "$@"
