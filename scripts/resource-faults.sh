#!/usr/bin/env bash
# Resource faults of `hone finetune`, each with its outcome checked:
#   1. the disk fills during a checkpoint (a 400 MB tmpfs; a MiniLM checkpoint is 270 MB):
#      a one-line error naming the file, the previous checkpoint intact, and `--resume`
#      elsewhere ends bit for bit where an uninterrupted run does;
#   2. a read-only output directory: a one-line error before any work;
#   3. the model directory deleted while the run trains: the run finishes (weights and
#      tokenizer are read once, at the start).
# Needs root for the tmpfs mounts (1 and 2 are skipped otherwise).
#
#   scripts/resource-faults.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-$PWD/../shared}
HONE=${HONE:-target/release/hone}
[ -x "$HONE" ] || cargo build --release -p hone -q
scripts/fetch-model.sh >/dev/null
work=$(mktemp -d)
cleanup() { umount "$work/small" "$work/ro" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
args=(--config examples/sst2.toml --log warn
      --set "data.train_file=\"$SHARED/data/sst2/train.tsv\""
      --set "data.validation_file=\"$SHARED/data/sst2/validation.tsv\""
      --set data.max_train_samples=64 --set data.max_eval_samples=16
      --set data.max_seq_length=16 --set per_device_train_batch_size=8 --set max_steps=6
      --set 'eval_strategy="steps"' --set eval_steps=2 --set progress=false)
"$HONE" finetune "${args[@]}" --set "output_dir=\"$work/straight\"" >/dev/null

if [ "$(id -u)" = 0 ] && mkdir "$work/small" && mount -t tmpfs -o size=400m tmpfs "$work/small"; then
    echo "1. full disk during a checkpoint"
    if "$HONE" finetune "${args[@]}" --set "output_dir=\"$work/small/run\"" >/dev/null 2>"$work/err"; then
        echo "   the run did not fail" >&2; exit 1
    fi
    echo "   $(tail -n 1 "$work/err")"
    echo "   left: $(cd "$work/small/run" && ls -A | tr '\n' ' ')"
    cp -r "$work/small/run" "$work/resumed"
    "$HONE" finetune "${args[@]}" --set "output_dir=\"$work/resumed\"" --resume >/dev/null
    cmp "$work/straight/model.safetensors" "$work/resumed/model.safetensors"
    echo "   resumed on a larger disk: final weights identical to the uninterrupted run's"

    echo "2. read-only output directory"
    mkdir "$work/ro" && mount -t tmpfs -o ro,size=1m tmpfs "$work/ro"
    if "$HONE" finetune "${args[@]}" --set "output_dir=\"$work/ro/run\"" >/dev/null 2>"$work/err"; then
        echo "   the run did not fail" >&2; exit 1
    fi
    echo "   $(tail -n 1 "$work/err")"
else
    echo "1-2. skipped (tmpfs mounts need root)"
fi

echo "3. the model directory deleted during the run"
cp -r models/all-MiniLM-L6-v2 "$work/model"
"$HONE" finetune "${args[@]}" --set "model.model_name_or_path=\"$work/model\"" \
    --set "output_dir=\"$work/deleted\"" >/dev/null 2>"$work/err" &
pid=$!
sleep 2
rm -rf "$work/model"
wait "$pid"
cmp "$work/straight/model.safetensors" "$work/deleted/model.safetensors"
echo "   finished; final weights identical to the uninterrupted run's"
