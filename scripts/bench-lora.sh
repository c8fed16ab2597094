#!/usr/bin/env bash
# LoRA against full fine-tuning, hone and Hugging Face PEFT side by side on this machine:
# the training step time and peak memory of all-MiniLM-L6-v2 at batch B, length S (random
# ids, as `hone bench` times them), each case in its own process, one after the other.
#
#   scripts/bench-lora.sh [BATCH] [SEQ]        (default 32 128)
#
# hone: r 8, alpha 16, dropout 0.1 on query/value, the classifier trained whole; PEFT the
# same (scripts/peft_peer.py, in the venv scripts/peft-peer.sh makes). THREADS (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
B=${1:-32}
S=${2:-128}
export THREADS=${THREADS:-2}
cargo build --release --locked -q -p hone
hone=target/release/hone
model=models/all-MiniLM-L6-v2
bench() { RAYON_NUM_THREADS=$THREADS $hone bench train --model $model --batch-size "$B" --seq-len "$S" --steps 8 --warmup 2 --log warn "$@"; }
echo "# load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
bench
bench --lora-r 8 --lora-targets query,value
scripts/peft-peer.sh $model ../shared/data/sst2/train.tsv --batch-size "$B" --random-len "$S"
