#!/usr/bin/env bash
# Data-parallel scaling on this machine's CPU: SST-2 fine-tuning of all-MiniLM-L6-v2 for
# STEPS updates of a global batch of 32, as 1 process (all cores) and as 2 MPI ranks of 16
# (half the cores each), alternating, ROUNDS times. Prints each run's seconds per update and
# all-reduce seconds per update, then the medians and the speed-up.
# Usage: scripts/dp-scaling.sh [STEPS=40] [ROUNDS=3]
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-40}
rounds=${2:-3}
scripts/fetch-model.sh >/dev/null
scripts/install-mpi.sh
cargo build --release -q -p hone --features mpi
hone=target/release/hone
shared=${HONE_SHARED:-../shared}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
export OMPI_MCA_btl_vader_single_copy_mechanism=none
cores=$(nproc)
run() { # run RANKS
  local ranks=$1 launch=()
  [ "$ranks" -gt 1 ] && launch=(launch --nproc "$ranks" --)
  "$hone" "${launch[@]}" finetune --config examples/sst2.toml --log warn --overwrite-output-dir \
    --set "data.train_file=\"$shared/data/sst2/train.tsv\"" \
    --set "data.validation_file=\"$shared/data/sst2/validation.tsv\"" \
    --set data.max_train_samples=4000 --set data.max_eval_samples=64 \
    --set per_device_train_batch_size=$((32 / ranks)) --set max_steps="$steps" \
    --set 'eval_strategy="no"' --set logging_steps="$steps" --set progress=false \
    --set "output_dir=\"$out/r$ranks\"" |
    python3 -c "import json,sys; s=json.load(sys.stdin); print(s['ranks'], s['train_seconds']/s['global_step'], s['allreduce_seconds']/s['global_step'])"
}
echo "# $(lscpu | sed -n 's/^Model name: *//p'), $cores cores; $steps updates of 32 SST-2 sentences"
echo "# ranks  seconds/update  all-reduce seconds/update"
for _ in $(seq "$rounds"); do
  run 1 | tee -a "$out/results"
  run 2 | tee -a "$out/results"
done
python3 - "$out/results" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
by = {}
for r, t, a in rows:
    by.setdefault(int(r), []).append((float(t), float(a)))
med = {r: (statistics.median(t for t, _ in v), statistics.median(a for _, a in v)) for r, v in by.items()}
for r, (t, a) in sorted(med.items()):
    print(f"median, {r} rank(s): {t:.3f} s/update, all-reduce {a*1000:.1f} ms/update ({100*a/t:.1f}%)")
print(f"speed-up of 2 ranks over 1 process: {med[1][0]/med[2][0]:.2f}x")
PY
