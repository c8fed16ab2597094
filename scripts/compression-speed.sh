#!/usr/bin/env bash
# Forward speed of compressed models against their reference, in the same run: for each
# model directory, `hone bench infer` (random ids, batch 32 x 64 tokens) and `hone eval` over
# the SST-2 validation set (its wall time and accuracy), alternating models, ROUNDS times.
# Prints each measurement, then the medians and each model's speed-up over the first.
# Usage: scripts/compression-speed.sh REFERENCE_DIR OTHER_DIR...
#   env: ROUNDS (3), THREADS (all cores), HONE (a built hone binary; default: build one)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-3}
threads=${THREADS:-$(nproc)}
[ $# -ge 2 ] || { sed -n '2,6p' "$0"; exit 2; }
hone=${HONE:-}
if [ -z "$hone" ]; then
  cargo build --release -q -p hone
  hone=target/release/hone
fi
shared=${HONE_SHARED:-../shared}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
echo "# $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, $threads threads; $rounds rounds"
echo "# model  bench_ms(32x64)  eval_seconds(6735 sentences)  accuracy"
for _ in $(seq "$rounds"); do
  for m in "$@"; do
    ms=$("$hone" bench infer --model "$m" --batch-size 32 --seq-len 64 --steps 20 --warmup 3 \
      --threads "$threads" --log warn | python3 -c "import json,sys; print(json.load(sys.stdin)['median_ms'])")
    start=$(date +%s.%N)
    acc=$("$hone" eval "$m" --data "$shared/data/sst2/validation.tsv" --text-column sentence \
      --json --threads "$threads" --log warn | python3 -c "import json,sys; print(json.load(sys.stdin)['accuracy'])")
    secs=$(python3 -c "import time; print(round(time.time() - $start, 3))")
    echo "$m $ms $secs $acc" | tee -a "$out"
  done
done
python3 - "$out" "$@" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
models = sys.argv[2:]
med = {m: (statistics.median(float(r[1]) for r in rows if r[0] == m),
           statistics.median(float(r[2]) for r in rows if r[0] == m),
           [r[3] for r in rows if r[0] == m][0]) for m in models}
ref = med[models[0]]
print("# medians: model  bench_ms  eval_s  accuracy  bench speed-up  eval speed-up")
for m in models:
    b, e, a = med[m]
    print(f"{m}  {b:.1f}  {e:.2f}  {a}  {ref[0] / b:.2f}x  {ref[1] / e:.2f}x")
PY
