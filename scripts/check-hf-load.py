"""Check that a directory written by `hone finetune` loads unchanged in Hugging Face
Transformers and gives the same probabilities as `hone predict`.

Usage (needs torch + transformers; not part of the test suite, which never needs Python):
    python scripts/check-hf-load.py runs/sst2 "a wonderful , moving film" "dull and lifeless"
"""
import json
import subprocess
import sys

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

model_dir, texts = sys.argv[1], sys.argv[2:]
model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
tok = AutoTokenizer.from_pretrained(model_dir)
with torch.no_grad():
    hf = model(**tok(texts, padding=True, return_tensors="pt")).logits.softmax(-1)
out = subprocess.run(["target/release/hone", "predict", model_dir, "--log", "warn"],
                     input="\n".join(texts), capture_output=True, text=True, check=True).stdout
worst = 0.0
for row, line in zip(hf.tolist(), out.splitlines()):
    probs = json.loads(line)["probabilities"]
    for i, p in enumerate(row):
        worst = max(worst, abs(p - probs[model.config.id2label[i]]))
print(f"max |p_hf - p_hone| = {worst:.2e}")
sys.exit(0 if worst < 1e-4 else 1)
