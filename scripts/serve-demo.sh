#!/usr/bin/env bash
# hone serve in two minutes: all-MiniLM-L6-v2 for /embed and an SST-2 sentiment classifier
# (PEFT's LoRA adapter of ../shared/fixtures, loaded over the same base) for /predict, a
# few requests with curl in TEI's formats, the metrics, an error, and a clean stop.
#
#   scripts/serve-demo.sh            (env: PORT, default 8080; SHARED, default ../shared)
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${PORT:-8080}
SHARED=${SHARED:-$PWD/../shared}
scripts/fetch-model.sh >/dev/null
cargo build --release -p hone -q

target/release/hone serve models/all-MiniLM-L6-v2 "$SHARED/fixtures/lora-minilm-sst2" \
    --base models/all-MiniLM-L6-v2 --port "$PORT" &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do curl -sf "localhost:$PORT/health" >/dev/null && break; sleep 0.1; done

show() { echo; echo "\$ curl $*"; curl -s "$@"; echo; }
show "localhost:$PORT/info"
show "localhost:$PORT/embed" -H 'Content-Type: application/json' \
    -d '{"inputs": "What is Deep Learning?"}' --max-time 10 -o /dev/null -w 'HTTP %{http_code}, one 384-float vector\n'
show "localhost:$PORT/predict" -H 'Content-Type: application/json' \
    -d '{"inputs": "a gorgeous, witty, seductive movie."}'
show "localhost:$PORT/predict" -H 'Content-Type: application/json' \
    -d '{"inputs": [["the plot is paper-thin"], ["an unforgettable performance"]]}'
show "localhost:$PORT/tokenize" -H 'Content-Type: application/json' -d '{"inputs": "hone it"}'
show "localhost:$PORT/predict" -H 'Content-Type: application/json' -d '{"inputs": 42}'
echo; echo "\$ curl localhost:$PORT/metrics | grep hone_requests_total"
curl -s "localhost:$PORT/metrics" | grep '^hone_requests_total'

echo; echo "SIGTERM: the server finishes what is in flight and exits"
kill -TERM "$server"
wait "$server"
echo "exit status $?"
