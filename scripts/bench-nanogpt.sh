#!/usr/bin/env bash
# nanoGPT's CPU setting of the Shakespeare-char baby GPT, hone and nanoGPT one after the other
# on this machine with the same thread count (nanoGPT README's CPU command: 4 layers, 4 heads,
# 128 embedding, block 64, batch 12, 2000 iterations, dropout 0).
#
#   NANOGPT_DIR=/path/to/nanoGPT scripts/bench-nanogpt.sh
#
# Env: NANOGPT_DIR (a karpathy/nanoGPT checkout where data/shakespeare_char/prepare.py has
# been run), PEER_PYTHON (a python with torch; default /tmp/peer-venv/bin/python), THREADS
# (default 2), OUT (default /tmp/hone-nanogpt-bench).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${NANOGPT_DIR:?set NANOGPT_DIR to a nanoGPT checkout}"
PEER_PYTHON=${PEER_PYTHON:-/tmp/peer-venv/bin/python}
THREADS=${THREADS:-2}
OUT=${OUT:-/tmp/hone-nanogpt-bench}
rm -rf "$OUT" && mkdir -p "$OUT"
cargo build --release --locked -q

echo "# $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, $THREADS threads, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# hone"
RAYON_NUM_THREADS=$THREADS /usr/bin/time -f "hone wall %e s" \
    ./target/release/hone pretrain --log warn --config examples/shakespeare-char-cpu.toml \
    --set "output_dir=\"$OUT/hone\"" --set progress=false >/dev/null
grep eval_loss "$OUT/hone/metrics.jsonl" | tail -n 1
echo "# nanoGPT"
(cd "$NANOGPT_DIR" && OMP_NUM_THREADS=$THREADS /usr/bin/time -f "nanoGPT wall %e s" \
    "$PEER_PYTHON" train.py config/train_shakespeare_char.py --device=cpu --compile=False \
    --eval_iters=20 --log_interval=250 --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 \
    --n_embd=128 --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0 \
    --out_dir="$OUT/nanogpt" 2>&1) | grep -E "^step|wall"
