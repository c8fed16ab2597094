#!/usr/bin/env bash
# Set up from scratch and run the main job on its built-in default: fetch all-MiniLM-L6-v2,
# build hone, then fine-tune it on a 2,000-sentence slice of SST-2 for one epoch, evaluate
# it on the validation file, and classify two sentences. (The full recipe is
# `hone finetune --config examples/sst2.toml`.)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-model.sh
cargo build --release --locked
hone=target/release/hone
$hone info models/all-MiniLM-L6-v2
$hone finetune --config examples/sst2.toml --overwrite-output-dir \
  --set output_dir=runs/sst2-demo --set data.max_train_samples=2000 \
  --set per_device_train_batch_size=16 --set num_train_epochs=1
$hone eval runs/sst2-demo --data ../shared/data/sst2/validation.tsv --text-column sentence
printf 'a gripping , beautifully acted film\nthe plot is a tedious mess\n' | $hone predict runs/sst2-demo
