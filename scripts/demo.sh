#!/usr/bin/env bash
# Set up from scratch and run the main job on its built-in default: fetch all-MiniLM-L6-v2,
# build hone, show the model, and embed a few sentences.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-model.sh
cargo build --release --locked
hone=target/release/hone
$hone info models/all-MiniLM-L6-v2
$hone embed models/all-MiniLM-L6-v2 --pooling mean \
  "A man is playing a guitar." "Someone plays an instrument." "The stock market fell today." \
  | cut -c1-160
