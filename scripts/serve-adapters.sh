#!/usr/bin/env bash
# Two LoRA adapters over all-MiniLM-L6-v2 behind `hone serve`, two ways, one after the
# other on the same machine: (1) `--adapter` (one base in memory, requests for both
# adapters in the same batches) and (2) the two adapter directories as separate models
# (a base copy and a worker each). The same closed-loop /predict load, alternating the two
# adapters, for SECONDS at CONCURRENCY; prints memory at rest and under load, throughput
# and latency, and the mean batch size from /metrics.
#
#   scripts/serve-adapters.sh [SECONDS] [CONCURRENCY]      (default 20, 16)
#
# The adapters: PEFT's fixture (lora-minilm-sst2) and one hone trains here for 60 steps on
# SST-2 (examples/sst2-lora.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:-20}
CONC=${2:-16}
SHARED=${SHARED:-$PWD/../shared}
PORT=${PORT:-18191}
scripts/fetch-model.sh >/dev/null
cargo build --release -p hone -q
cargo build --release -p hone-serve --example loadgen -q
LOADGEN=target/release/examples/loadgen
HONE=target/release/hone

work=$(mktemp -d)
server=
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

fixture="$SHARED/fixtures/lora-minilm-sst2"
mine="$work/mine"
"$HONE" finetune --config examples/sst2-lora.toml --log warn \
    --set "data.train_file=\"$SHARED/data/sst2/train.tsv\"" \
    --set "data.validation_file=\"$SHARED/data/sst2/validation.tsv\"" \
    --set data.max_eval_samples=64 --set max_steps=60 --set 'eval_strategy="no"' \
    --set progress=false --set "output_dir=\"$mine\"" >/dev/null

sentences() { tail -n +2 "$SHARED/data/sst2/validation.tsv" | cut -f1; }
# Bodies alternate between the adapters: by "adapter" (1) or by "model" (2).
sentences | python3 -c '
import json, sys
for i, l in enumerate(sys.stdin):
    print(json.dumps({"inputs": l.rstrip("\n"), "adapter": ["sst2", "mine"][i % 2]}))' >"$work/by-adapter.jsonl"
sentences | python3 -c '
import json, sys
for i, l in enumerate(sys.stdin):
    print(json.dumps({"inputs": l.rstrip("\n"), "model": ["lora-minilm-sst2", "mine"][i % 2]}))' >"$work/by-model.jsonl"

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
batches() {
    curl -s "http://127.0.0.1:$PORT/metrics" |
        awk '/^hone_batch_size_sum/ {s=$2} /^hone_batch_size_count/ {c=$2} END {print s+0, c+0}'
}
measure() { # name bodies
    for _ in $(seq 1 600); do
        curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break
        sleep 0.1
    done
    "$LOADGEN" "http://127.0.0.1:$PORT/predict" "$2" 4 3 >/dev/null
    local rest before after out
    rest=$(rss_kb "$server")
    before=$(batches)
    out=$("$LOADGEN" "http://127.0.0.1:$PORT/predict" "$2" "$CONC" "$SECONDS_EACH")
    after=$(batches)
    local mean
    mean=$(python3 -c 'import sys; a=sys.argv[1].split(); b=sys.argv[2].split(); print(round((float(b[0])-float(a[0]))/max(1.0, float(b[1])-float(a[1])), 2))' "$before" "$after")
    echo "{\"setup\": \"$1\", \"rss_at_rest_mb\": $((rest / 1024)), \"peak_rss_mb\": $(($(hwm_kb "$server") / 1024)), \"mean_batch_size\": $mean, ${out#\{}"
    kill -TERM "$server"; wait "$server" || true
    server=
}

echo "# $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, concurrency $CONC, $(date -u +%FT%TZ)"
"$HONE" --log warn serve --base models/all-MiniLM-L6-v2 --port "$PORT" \
    --adapter "sst2=$fixture" --adapter "mine=$mine" &
server=$!
measure "--adapter: one base, shared batches" "$work/by-adapter.jsonl"
"$HONE" --log warn serve --base models/all-MiniLM-L6-v2 --port "$PORT" "$fixture" "$mine" &
server=$!
measure "two adapter directories: a base each" "$work/by-model.jsonl"
