#!/usr/bin/env bash
# hone's ONNX export checked by ONNX Runtime (issue 17): all-MiniLM-L6-v2's hidden states
# (through `hone embed`, CLS and mean pooling) and an SST-2 classifier's probabilities
# (through `hone predict`) against ONNX Runtime on the exported graph, for a batch of
# validation sentences of mixed lengths, padded as one batch.
#
#   scripts/onnx-check.sh [SST2_MODEL_DIR]
#
# SST2_MODEL_DIR defaults to the LoRA fixture on all-MiniLM-L6-v2 (an adapter directory:
# exported merged). Makes (once) a venv at ${ORT_VENV:-/tmp/ort-venv} with onnxruntime,
# numpy and tokenizers; the test suite does not use this script. Env: HONE (default
# target/release/hone), MODEL_DIR (default models/all-MiniLM-L6-v2), SHARED (../shared),
# N (sentences, default 48), OPSET (default 17).
set -euo pipefail
cd "$(dirname "$0")/.."
HONE=${HONE:-$PWD/target/release/hone}
MODEL_DIR=${MODEL_DIR:-$PWD/models/all-MiniLM-L6-v2}
SHARED=${SHARED:-$PWD/../shared}
SST2=${1:-$SHARED/fixtures/lora-minilm-sst2}
N=${N:-48}
OPSET=${OPSET:-17}
venv=${ORT_VENV:-/tmp/ort-venv}
fail() { echo "onnx-check.sh: $*" >&2; exit 1; }
[ -x "$HONE" ] || fail "$HONE is missing: cargo build --release -p hone"
if ! "$venv/bin/python" -c "import onnxruntime, numpy, tokenizers" 2>/dev/null; then
    echo "onnx-check.sh: building the venv at $venv (once)" >&2
    python3 -m venv "$venv" || fail "cannot create a venv at $venv"
    "$venv/bin/python" -m pip install -q onnxruntime numpy tokenizers || fail "pip could not install onnxruntime, numpy, tokenizers"
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Validation sentences, mixed lengths (the first column of the TSV after its header).
sed -n "2,$((N + 1))p" "$SHARED/data/sst2/validation.tsv" | cut -f1 > "$work/texts.txt"

"$HONE" export "$MODEL_DIR" --output "$work/minilm.onnx" --opset "$OPSET"
"$HONE" embed "$MODEL_DIR" --pooling cls --batch-size 7 < "$work/texts.txt" > "$work/cls.jsonl"
"$HONE" embed "$MODEL_DIR" --pooling mean --batch-size 7 < "$work/texts.txt" > "$work/mean.jsonl"
base=()
[ -f "$SST2/adapter_config.json" ] && base=(--base "$MODEL_DIR")
"$HONE" export "$SST2" "${base[@]}" --output "$work/sst2.onnx" --opset "$OPSET"
"$HONE" predict "$SST2" "${base[@]}" --batch-size 7 < "$work/texts.txt" > "$work/predict.jsonl"
tok_dir="$MODEL_DIR"
[ -f "$SST2/tokenizer.json" ] && tok_dir="$SST2"
"$venv/bin/python" "$PWD/scripts/onnx_check.py" "$work" "$tok_dir/tokenizer.json" "$SST2"
