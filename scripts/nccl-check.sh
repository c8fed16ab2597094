#!/usr/bin/env bash
# On a GPU machine: a one-rank NCCL run (torchrun's variables, so every collective goes
# through NCCL) against the plain CUDA path, 20 updates of the baby GPT in fp32: the losses
# must agree. With two or more GPUs it also runs 2 ranks (`hone launch --engine nccl`).
# Usage: HONE=path/to/hone (built by scripts/build-nccl.sh) scripts/nccl-check.sh [DATA]
set -euo pipefail
hone=${HONE:-target/release/hone}
data=${1:-../shared/data/tinyshakespeare/input.txt}
out=${OUT:-/tmp/nccl-check}
rm -rf "$out" && mkdir -p "$out"
run() { # run NAME [env...] -- [hone args before the command]
  local name=$1; shift
  env "$@" "$hone" pretrain --config examples/shakespeare-char.toml --device cuda --precision fp32 \
    --set "data.train_files=[\"$data\"]" --set output_dir=\""$out/$name"\" --set max_steps=20 \
    --set lr_decay_steps=20 --set warmup_steps=2 --set eval_steps=10 --set logging_steps=1 \
    --set progress=false --log warn > "$out/$name.json"
}
run plain X=1
run nccl1 RANK=0 WORLD_SIZE=1 LOCAL_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=29561
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
def losses(name):
    return [json.loads(l)["loss"] for l in open(f"{out}/{name}/metrics.jsonl") if '"loss"' in l and "eval_loss" not in l]
a, b = losses("plain"), losses("nccl1")
worst = max(abs(x - y) for x, y in zip(a, b))
print(f"plain CUDA vs one NCCL rank: {len(a)} losses, largest difference {worst:.2e}")
sys.exit(0 if len(a) == len(b) == 20 and worst <= 1e-6 else 1)
PY
if [ "$(nvidia-smi -L | wc -l)" -ge 2 ]; then
  "$hone" launch --nproc 2 --engine nccl -- pretrain --config examples/shakespeare-char.toml --device cuda \
    --set "data.train_files=[\"$data\"]" --set output_dir=\""$out/nccl2"\" --set max_steps=20 \
    --set progress=false --log warn
fi
