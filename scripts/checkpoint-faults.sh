#!/usr/bin/env bash
# Damaged checkpoints and numerical faults in `hone finetune` (all-MiniLM-L6-v2 on 64 SST-2
# sentences, a checkpoint every 2 updates), each with its outcome checked and its message
# printed:
#   1. a bit flipped in a tensor of a checkpoint's weights: --resume refuses, naming it;
#   2. the optimizer state of another model (a LoRA run's) in the checkpoint: refused;
#   3. a checkpoint of a newer format version: refused before anything is read;
#   4. a NaN loss injected at update 3 (HONE_INJECT_FAULT): the run stops naming the
#      update, and resumed without the fault it ends as an undisturbed run does;
#   5. an infinite gradient injected at update 3: stops naming the parameter and update;
#   6. the same in fp16: the update is skipped, the loss scale halved, the run finishes.
#
#   scripts/checkpoint-faults.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-$PWD/../shared}
HONE=${HONE:-target/release/hone}
[ -x "$HONE" ] || cargo build --release -p hone -q
scripts/fetch-model.sh >/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
data=(--set "data.train_file=\"$SHARED/data/sst2/train.tsv\""
      --set "data.validation_file=\"$SHARED/data/sst2/validation.tsv\""
      --set data.max_train_samples=64 --set data.max_eval_samples=16
      --set data.max_seq_length=16 --set per_device_train_batch_size=8
      --set 'eval_strategy="steps"' --set eval_steps=2 --set progress=false)
args=(--config examples/sst2.toml --log warn "${data[@]}")
run() { "$HONE" finetune "$@" >/dev/null 2>"$work/err"; }
fails() { # the run must fail with one line on stderr
    if run "$@"; then echo "   the run did not fail" >&2; exit 1; fi
    [ "$(wc -l <"$work/err")" -eq 1 ] || { cat "$work/err" >&2; exit 1; }
    echo "   $(cat "$work/err")"
}
run "${args[@]}" --set max_steps=4 --set "output_dir=\"$work/straight\""
cp -r "$work/straight" "$work/pristine"
ckpt="$work/straight/checkpoint-4"
[ -d "$ckpt" ] || ckpt="$work/straight/checkpoint-2"
resume=("${args[@]}" --set max_steps=6 --set "output_dir=\"$work/straight\"" --resume)

echo "1. a bit flipped in a tensor of $(basename "$ckpt")/model.safetensors"
python3 - "$ckpt/model.safetensors" <<'PY'
import json, struct, sys
path = sys.argv[1]
data = bytearray(open(path, "rb").read())
n = struct.unpack("<Q", data[:8])[0]
begin = json.loads(data[8:8 + n])["bert.encoder.layer.2.output.dense.weight"]["data_offsets"][0]
data[8 + n + begin + 1001] ^= 0x08
open(path, "wb").write(data)
PY
fails "${resume[@]}"
cmp "$work/straight/model.safetensors" "$work/pristine/model.safetensors"
diff -r -x model.safetensors "$work/straight" "$work/pristine" >/dev/null
echo "   nothing else in the output directory changed"
rm -rf "$work/straight" && cp -r "$work/pristine" "$work/straight"

echo "2. the optimizer state of another model (a LoRA run's) in the checkpoint"
run --config examples/sst2-lora.toml --log warn "${data[@]}" --set max_steps=2 \
    --set "output_dir=\"$work/lora\""
cp "$work/lora/checkpoint-2/optimizer.safetensors" "$work/lora/checkpoint-2/optimizer.json" "$ckpt/"
fails "${resume[@]}"
diff -r -x 'optimizer.*' "$work/straight" "$work/pristine" >/dev/null
echo "   nothing else in the output directory changed"
rm -rf "$work/straight" && cp -r "$work/pristine" "$work/straight"

echo "3. a checkpoint written by a newer hone (format_version 2)"
sed -i 's/"format_version": 1/"format_version": 2/' "$ckpt/trainer_state.json"
fails "${resume[@]}"
diff -r -x trainer_state.json "$work/straight" "$work/pristine" >/dev/null
echo "   nothing else in the output directory changed"

echo "4. a NaN loss injected at update 3"
HONE_INJECT_FAULT=nan-loss@3 fails "${args[@]}" --set max_steps=6 --set "output_dir=\"$work/nan\""
run "${args[@]}" --set max_steps=6 --set "output_dir=\"$work/six\""
run "${args[@]}" --set max_steps=6 --set "output_dir=\"$work/nan\"" --resume
cmp "$work/nan/model.safetensors" "$work/six/model.safetensors"
echo "   resumed without the fault from $(cd "$work/nan" && ls -d checkpoint-* | head -n 1): final weights byte-identical to an undisturbed run's"

echo "5. an infinite gradient injected at update 3"
HONE_INJECT_FAULT=inf-grad@3 fails "${args[@]}" --set max_steps=6 --set "output_dir=\"$work/inf\""

echo "6. the same in fp16"
HONE_INJECT_FAULT=inf-grad@3 "$HONE" finetune --config examples/sst2.toml --log warn "${data[@]}" \
    --set max_steps=6 --set 'precision="fp16"' --set "output_dir=\"$work/fp16\"" >/dev/null 2>"$work/err"
echo "   $(grep -o -m1 "fp16 gradients overflowed.*" "$work/err")"
echo "   finished: $(ls "$work/fp16" | grep -c model.safetensors) model.safetensors at the top"
