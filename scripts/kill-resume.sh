#!/usr/bin/env bash
# Crash consistency of `hone finetune` (a short SST-2 run) or `hone pretrain` (the CPU
# character GPT on Tiny Shakespeare): SIGKILL it at KILLS random moments (loading,
# training steps, evaluations, checkpoint writes), `--resume` it after each, and check that
# the final weights equal an uninterrupted run's bit for bit, that every checkpoint left
# behind is complete, and that metrics.jsonl has each step exactly once.
#
#   scripts/kill-resume.sh [KILLS] [SEED] [finetune|pretrain]   (default 20 kills, seed 1, finetune)
#
# Env: HONE (default target/release/hone, built if absent), SHARED (default ../shared).
set -euo pipefail
cd "$(dirname "$0")/.."
KILLS=${1:-20}
SEED=${2:-1}
COMMAND=${3:-finetune}
SHARED=${SHARED:-$PWD/../shared}
HONE=${HONE:-target/release/hone}
[ -x "$HONE" ] || cargo build --release -p hone -q
scripts/fetch-model.sh >/dev/null

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
case "$COMMAND" in
finetune)
    # 96 updates of 8 sentences, an evaluation and a checkpoint every 6, a log line per step.
    args=(--config examples/sst2.toml --log warn
          --set "data.train_file=\"$SHARED/data/sst2/train.tsv\""
          --set "data.validation_file=\"$SHARED/data/sst2/validation.tsv\""
          --set data.max_train_samples=768 --set data.max_eval_samples=64
          --set data.max_seq_length=32 --set per_device_train_batch_size=8
          --set max_steps=96 --set 'eval_strategy="steps"' --set eval_steps=6
          --set logging_steps=1 --set progress=false --set seed=7) ;;
pretrain)
    # 480 updates of the 4-layer character GPT, an evaluation and a checkpoint every 20.
    args=(--config examples/shakespeare-char-cpu.toml --log warn
          --set "data.train_files=[\"$SHARED/data/tinyshakespeare/input.txt\"]"
          --set data.max_train_chars=200000 --set max_steps=480 --set lr_decay_steps=480
          --set warmup_steps=20 --set eval_steps=20 --set logging_steps=1
          --set progress=false) ;;
*) echo "unknown command $COMMAND: finetune or pretrain" >&2; exit 2 ;;
esac

"$HONE" "$COMMAND" "${args[@]}" --set "output_dir=\"$work/straight\"" >/dev/null
echo "uninterrupted run: $(grep -c '"loss"' "$work/straight/metrics.jsonl") log lines"

out="$work/killed"
RANDOM=$SEED
kills=0 runs=0
while :; do
    # A run killed before its first checkpoint starts again, as a user would restart it.
    if compgen -G "$out/checkpoint-*" >/dev/null; then
        flags=(--resume)
    elif [ -d "$out" ]; then
        flags=(--overwrite-output-dir)
    else
        flags=()
    fi
    "$HONE" "$COMMAND" "${args[@]}" --set "output_dir=\"$out\"" "${flags[@]}" >/dev/null 2>"$work/err" &
    pid=$!
    runs=$((runs + 1))
    if [ "$kills" -lt "$KILLS" ]; then
        # 0.2-3.0 s: start-up, steps, evaluations and checkpoint writes all get hit.
        sleep "$(printf '%d.%02d' $((RANDOM % 3)) $((RANDOM % 100)))"
        if kill -9 "$pid" 2>/dev/null; then
            wait "$pid" 2>/dev/null || true
            kills=$((kills + 1))
            last=$(tail -n 1 "$out/metrics.jsonl" 2>/dev/null | sed -n 's/.*"step":\([0-9]*\).*/\1/p')
            echo "kill $kills: after step ${last:-0}; checkpoints: $(ls "$out" 2>/dev/null | grep -c '^checkpoint-' || true)"
            continue
        fi
    fi
    if ! wait "$pid"; then
        echo "run $runs failed:" >&2
        cat "$work/err" >&2
        exit 1
    fi
    break
done
echo "$kills kills, $runs runs"

# Every checkpoint complete: the files a resume reads are all there.
for c in "$out"/checkpoint-*; do
    for f in model.safetensors optimizer.safetensors trainer_state.json; do
        [ -f "$c/$f" ] || { echo "incomplete checkpoint $c: no $f" >&2; exit 1; }
    done
done
echo "checkpoints left: $(cd "$out" && ls -d checkpoint-* | tr '\n' ' ')"
echo "other entries: $(cd "$out" && ls -A | grep -v '^checkpoint-' | tr '\n' ' ')"
cmp "$work/straight/model.safetensors" "$out/model.safetensors" ||
    { echo "final weights differ from the uninterrupted run" >&2; exit 1; }
python3 - "$work/straight/metrics.jsonl" "$out/metrics.jsonl" <<'PY'
import json, sys
def steps(path, key):
    return [json.loads(l)["step"] for l in open(path) if key in json.loads(l)]
for key in ("loss", "eval_loss"):
    a, b = steps(sys.argv[1], key), steps(sys.argv[2], key)
    assert b == sorted(set(b)), f"{key}: duplicate or unordered steps {b}"
    assert a == b, f"{key}: steps {b} differ from the uninterrupted run's {a}"
print("metrics.jsonl: every step once, as in the uninterrupted run")
PY
echo "final weights: bit for bit the uninterrupted run's"
