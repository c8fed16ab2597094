#!/usr/bin/env bash
# Load test of `hone serve` against a Python reference server (FastAPI + a Transformers
# pipeline, scripts/serve_reference.py) on the same machine, one after the other: POST
# /predict with SST-2 validation sentences (one per request) at each concurrency for
# SECONDS, the closed-loop generator crates/hone-serve/examples/loadgen.rs. Both serve the
# same SST-2 classifier: PEFT's fixture adapter on all-MiniLM-L6-v2, merged by `hone merge`.
#
#   scripts/serve-load.sh [SECONDS] [CONCURRENCIES...]     (default 30, and 1 16 64)
#
# Env: REF_PYTHON (a python with torch and transformers; fastapi and uvicorn are installed
# into it when missing; default: a venv made here, .venv-serve-ref), THREADS (2), SHARED.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:-30}
shift || true
CONCURRENCIES=${*:-1 16 64}
THREADS=${THREADS:-2}
SHARED=${SHARED:-$PWD/../shared}
PORT_HONE=${PORT_HONE:-18181}
PORT_REF=${PORT_REF:-18182}

scripts/fetch-model.sh >/dev/null
cargo build --release -p hone -q
cargo build --release -p hone-serve --example loadgen -q
LOADGEN=target/release/examples/loadgen

if [ -z "${REF_PYTHON:-}" ]; then
    [ -x .venv-serve-ref/bin/python ] || python3 -m venv .venv-serve-ref
    REF_PYTHON=.venv-serve-ref/bin/python
fi
"$REF_PYTHON" -c "import torch, transformers" 2>/dev/null ||
    "$REF_PYTHON" -m pip install -q torch transformers
"$REF_PYTHON" -c "import fastapi, uvicorn" 2>/dev/null ||
    "$REF_PYTHON" -m pip install -q fastapi uvicorn

work=$(mktemp -d)
server=
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

target/release/hone merge "$SHARED/fixtures/lora-minilm-sst2" --base models/all-MiniLM-L6-v2 \
    --output "$work/sst2" 2>/dev/null
# The same labels for both servers' answers.
tail -n +2 "$SHARED/data/sst2/validation.tsv" | cut -f1 |
    python3 -c 'import json,sys; [print(json.dumps({"inputs": l.rstrip("\n")})) for l in sys.stdin]' \
    > "$work/bodies.jsonl"

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
wait_health() {
    for _ in $(seq 1 600); do
        curl -sf "http://127.0.0.1:$1/health" >/dev/null && return 0
        sleep 0.1
    done
    echo "server on port $1 did not come up" >&2
    return 1
}

# "inputs forward-passes" from hone's /metrics (nothing from a server without them).
batches() {
    curl -s "http://127.0.0.1:$1/metrics" 2>/dev/null |
        awk '/^hone_batch_size_sum/ {s=$2} /^hone_batch_size_count/ {c=$2} END {print s+0, c+0}'
}
mean_batch() { # "sum count" before, after
    python3 -c 'import sys; a=sys.argv[1].split(); b=sys.argv[2].split(); n=float(b[1])-float(a[1]); print(round((float(b[0])-float(a[0]))/n, 2) if n else "null")' "$1" "$2"
}

run_server() { # name port
    local name=$1 port=$2
    wait_health "$port"
    # Warm-up, then the memory at rest.
    "$LOADGEN" "http://127.0.0.1:$port/predict" "$work/bodies.jsonl" 4 3 >/dev/null
    local rest
    rest=$(rss_kb "$server")
    for c in $CONCURRENCIES; do
        local before after
        before=$(batches "$port")
        out=$("$LOADGEN" "http://127.0.0.1:$port/predict" "$work/bodies.jsonl" "$c" "$SECONDS_EACH")
        after=$(batches "$port")
        echo "{\"server\": \"$name\", \"mean_batch_size\": $(mean_batch "$before" "$after"), ${out#\{}"
    done
    echo "{\"server\": \"$name\", \"rss_at_rest_mb\": $((rest / 1024)), \"peak_rss_mb\": $(($(hwm_kb "$server") / 1024))}"
}

echo "# $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, $THREADS threads, $(date -u +%FT%TZ)"
target/release/hone --threads "$THREADS" --log warn serve "$work/sst2" --port "$PORT_HONE" &
server=$!
run_server hone "$PORT_HONE"
kill -TERM "$server"; wait "$server" || true
server=

OMP_NUM_THREADS=$THREADS "$REF_PYTHON" scripts/serve_reference.py "$work/sst2" "$PORT_REF" "$THREADS" &
server=$!
run_server python-fastapi-transformers "$PORT_REF"
kill "$server"; wait "$server" 2>/dev/null || true
server=
