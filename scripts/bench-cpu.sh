#!/usr/bin/env bash
# CPU forward latency of all-MiniLM-L6-v2: hone against PyTorch + Transformers, run alternately
# on the same machine with the same thread count, so that noise hits both alike.
#
#   scripts/bench-cpu.sh [ROUNDS]
#
# Env: THREADS (default 2), MODEL_DIR (default models/all-MiniLM-L6-v2), PEER_PYTHON (a python
# with torch + transformers; default /tmp/peer-venv/bin/python; the peer is skipped if absent),
# With target/release/hone, hone's int8 model (`hone quantize --int8`) is timed too;
# ORT_PYTHON (a python with onnxruntime, onnx and tokenizers, e.g. the venv
# scripts/onnx-check.sh makes plus `pip install onnx`; default /tmp/ort-venv/bin/python;
# ONNX Runtime on hone's export is skipped if absent; needs target/release/hone),
# SHARED (default ../shared), PEER_TRAIN (1: run the whole peer script, which times a training
# step first, about 10 steps; default 0: only its inference part, the same code and inputs).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
THREADS=${THREADS:-2}
MODEL_DIR=${MODEL_DIR:-$PWD/models/all-MiniLM-L6-v2}
PEER_PYTHON=${PEER_PYTHON:-/tmp/peer-venv/bin/python}
SHARED=${SHARED:-$PWD/../shared}
PEER_TRAIN=${PEER_TRAIN:-0}
ORT_PYTHON=${ORT_PYTHON:-/tmp/ort-venv/bin/python}
ort_dir=$(mktemp -d)
trap 'rm -rf "$ort_dir"' EXIT
if [ -x target/release/hone ]; then
    target/release/hone quantize "$MODEL_DIR" --output "$ort_dir/minilm-int8" --int8 2>/dev/null
    if [ -x "$ORT_PYTHON" ]; then
        target/release/hone export "$MODEL_DIR" --output "$ort_dir/minilm.onnx" 2>/dev/null
    fi
fi

cargo bench -p hone-core --bench minilm_forward --no-run 2>&1 | tail -1
BIN=$(cargo bench -p hone-core --bench minilm_forward --no-run --message-format=json 2>/dev/null |
    sed -n 's/.*"executable":"\([^"]*minilm_forward[^"]*\)".*/\1/p' | tail -1)
[ -x "$BIN" ] || { echo "bench binary not found" >&2; exit 1; }

echo "# $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, $THREADS threads"
for r in $(seq 1 "$ROUNDS"); do
    echo "# round $r"
    RAYON_NUM_THREADS=$THREADS "$BIN" "$MODEL_DIR"
    if [ -d "$ort_dir/minilm-int8" ]; then
        RAYON_NUM_THREADS=$THREADS "$BIN" "$ort_dir/minilm-int8"
    fi
    if [ -f "$ort_dir/minilm.onnx" ]; then
        "$ORT_PYTHON" scripts/ort_bench.py "$ort_dir/minilm.onnx" "$MODEL_DIR/tokenizer.json" "$THREADS"
    fi
    if [ -x "$PEER_PYTHON" ]; then
        OMP_NUM_THREADS=$THREADS "$PEER_PYTHON" -c "
import runpy, sys, torch
torch.set_num_threads($THREADS)
sys.argv = ['hf_cpu_baseline.py', '$MODEL_DIR']
src = open('$SHARED/bench/hf_cpu_baseline.py').read()
if not $PEER_TRAIN:
    # Drop the training-step block (from its comment up to m.eval()); the rest is unchanged.
    a = src.index('# training step'); b = src.index('m.eval()')
    src = src[:a] + src[b:]
exec(compile(src, 'hf_cpu_baseline.py', 'exec'), {'__name__': '__main__'})
" 2>/dev/null | sed 's/^{/{"peer": "pytorch", /'
    fi
done
