#!/usr/bin/env bash
# Distillation against its control, on SST-2: the 3-layer student of examples/sst2-distill.toml
# trained against TEACHER (alpha 0.5, T 2) and the same student without it (alpha 0), side by
# side with one thread each, then the teacher's and both students' validation accuracy and
# forward speed (scripts/compression-speed.sh), then the two students sentence by sentence
# (scripts/paired-accuracy.py). Extra arguments are --set overrides for both
# students (e.g. --set data.max_train_samples=4000).
# Usage: scripts/distill-compare.sh TEACHER_DIR OUT_PREFIX [--set KEY=VALUE ...]
#   env: HONE (a built hone binary; default: build one)
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { sed -n '2,9p' "$0"; exit 2; }
teacher=$1 out=$2
shift 2
hone=${HONE:-}
if [ -z "$hone" ]; then
  cargo build --release -q -p hone
  hone=target/release/hone
fi
student() { # student ALPHA [--set ...]
  local a=$1
  shift
  "$hone" distill --config examples/sst2-distill.toml --threads 1 --log warn \
    --set "distill.teacher=\"$teacher\"" \
    --set "distill.teacher_logits_cache=\"$out-teacher-logits.safetensors\"" \
    --set "distill.alpha=$a" --set "output_dir=\"$out-a$a\"" --set progress=false "$@" \
    > "$out-a$a.json"
}
# The first computes the teacher's logits once; the second reads them.
student 0.5 "$@" &
kd=$!
until [ -f "$out-teacher-logits.safetensors" ] || ! kill -0 "$kd" 2>/dev/null; do sleep 5; done
student 0 "$@"
wait "$kd"
for a in 0.5 0; do
  python3 -c "import json,sys; s=json.load(open(sys.argv[1])); print(sys.argv[2], 'best accuracy', s['best_metric'], 'train_seconds', round(s['train_seconds']))" \
    "$out-a$a.json" "alpha=$a"
done
HONE=$hone scripts/compression-speed.sh "$teacher" "$out-a0.5" "$out-a0"
# Sentence by sentence: which validation sentences only one student gets right, and whether
# the split is more uneven than chance (McNemar).
for a in 0.5 0; do
  "$hone" predict "$out-a$a" --input ../shared/data/sst2/validation.tsv --text-column sentence \
    --log warn > "$out-a$a.predictions.jsonl"
done
python3 scripts/paired-accuracy.py ../shared/data/sst2/validation.tsv \
  "$out-a0.5.predictions.jsonl" "$out-a0.predictions.jsonl"
