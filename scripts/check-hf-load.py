"""Check that a directory written by `hone finetune` (or `hone merge`, or a PEFT adapter written by
hone) loads unchanged in Hugging Face Transformers and gives the same probabilities as `hone predict`.

Usage (needs torch + transformers, and peft for adapters; scripts/peft-peer.sh makes such a venv;
not part of the test suite, which never needs Python):
    python scripts/check-hf-load.py runs/sst2 "a wonderful , moving film" "dull and lifeless"
    python scripts/check-hf-load.py runs/sst2-lora [--base models/all-MiniLM-L6-v2] TEXT...
    python scripts/check-hf-load.py DIR --hf-only TEXT...    (Transformers' probabilities as JSON lines)
DIR is a sequence classifier (BERT, GPT-2) or a PEFT adapter directory (has adapter_config.json:
the base comes from its base_model_name_or_path, or from --base, and is wrapped by
PeftModel.from_pretrained); it is compared with `hone predict DIR [--base DIR]`.
A translation directory (model_type marian) loads in MarianMTModel instead; its `generate` tokens
and beam scores are compared with `hone translate DIR --json` (--beam, --max-new-tokens):
    python scripts/check-hf-load.py runs/multi30k-de-en --beam 5 "Ein Mann schläft." "Zwei Hunde."
"""
import argparse
import json
import os
import subprocess
import sys

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("model_dir")
ap.add_argument("texts", nargs="+")
ap.add_argument("--base", help="base model of a PEFT adapter (default: its base_model_name_or_path)")
ap.add_argument("--hf-only", action="store_true", help="print Transformers' probabilities, compare nothing")
ap.add_argument("--max-length", type=int, default=128, help="truncation, as hone predict's --max-length")
ap.add_argument("--beam", type=int, default=1, help="translation: beam width")
ap.add_argument("--max-new-tokens", type=int, default=40, help="translation: generated tokens")
args = ap.parse_args()
model_dir, texts = args.model_dir, args.texts


def check_marian():
    """generate() in Transformers against `hone translate --json`: same ids, same scores."""
    from transformers import MarianMTModel, PreTrainedTokenizerFast
    model = MarianMTModel.from_pretrained(model_dir).eval()
    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(model_dir, "tokenizer.json"),
                                  pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    enc = tok(texts, padding=True, return_tensors="pt")
    kw = dict(num_beams=args.beam, max_new_tokens=args.max_new_tokens, length_penalty=1.0,
              early_stopping=True, do_sample=False, output_scores=True, return_dict_in_generate=True)
    with torch.no_grad():
        out = model.generate(**enc, **kw)
    eos = model.config.eos_token_id
    hf = []
    for row in out.sequences.tolist():
        ids = row[1:]  # drop the decoder start token
        hf.append(ids[: ids.index(eos) + 1] if eos in ids else [i for i in ids if i != model.config.pad_token_id])
    cmd = ["cargo", "run", "-q", "--release", "-p", "hone", "--", "translate", model_dir, "--json",
           "--beam", str(args.beam), "--max-new-tokens", str(args.max_new_tokens)]
    res = subprocess.run(cmd, input="\n".join(texts) + "\n", capture_output=True, text=True, check=True)
    hone = [json.loads(l) for l in res.stdout.splitlines()]
    worst = 0.0
    for i, (h, o) in enumerate(zip(hf, hone)):
        if h != o["ids"]:
            sys.exit(f"sentence {i}: Transformers {h} vs hone {o['ids']}")
        if args.beam > 1:
            worst = max(worst, abs(out.sequences_scores[i].item() - o["score"]))
    print(f"MarianMTModel loads {model_dir}: same tokens for {len(texts)} sentences"
          + (f", beam scores within {worst:.1e}" if args.beam > 1 else ""))
    if worst > 1e-3:
        sys.exit("beam scores differ")


if json.load(open(os.path.join(model_dir, "config.json"))).get("model_type") == "marian":
    check_marian()
    sys.exit(0)

adapter_cfg = os.path.join(model_dir, "adapter_config.json")
if os.path.exists(adapter_cfg):
    from peft import PeftModel
    from safetensors import safe_open
    base = args.base or json.load(open(adapter_cfg))["base_model_name_or_path"]
    if not os.path.isdir(base):
        sys.exit(f"base model {base!r} is not a directory here: pass --base DIR")
    # The head's size from the adapter's saved head (modules_to_save), else the base's own.
    kw = {}
    with safe_open(os.path.join(model_dir, "adapter_model.safetensors"), "pt") as f:
        for k in f.keys():
            if k.endswith(("classifier.weight", "score.weight", "classifier.out_proj.weight")):
                kw["num_labels"] = f.get_slice(k).get_shape()[0]
    # hone writes its own config.json beside the adapter: the labels' names are there.
    own = os.path.join(model_dir, "config.json")
    if os.path.exists(own):
        id2label = {int(k): v for k, v in json.load(open(own)).get("id2label", {}).items()}
        if id2label:
            kw.update(id2label=id2label, label2id={v: k for k, v in id2label.items()})
    model = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(base, **kw), model_dir)
    has_tok = any(os.path.exists(os.path.join(model_dir, f)) for f in ("tokenizer.json", "vocab.txt"))
    tok = AutoTokenizer.from_pretrained(model_dir if has_tok else base)
    config = model.base_model.model.config
else:
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    config = model.config
model.eval()
if tok.pad_token_id is None and config.pad_token_id is not None:  # GPT-2: batches need a pad token
    tok.pad_token_id = config.pad_token_id
with torch.no_grad():
    enc = tok(texts, padding=True, truncation=True, max_length=args.max_length, return_tensors="pt")
    hf = model(**enc).logits.softmax(-1)
labels = [config.id2label[i] for i in range(hf.shape[1])]
if args.hf_only:
    for text, row in zip(texts, hf.tolist()):
        best = max(range(len(row)), key=row.__getitem__)
        print(json.dumps(dict(text=text, label=labels[best], score=row[best], probabilities=dict(zip(labels, row)))))
    sys.exit(0)
cmd = ["target/release/hone", "predict", model_dir, "--log", "warn"] + (["--base", args.base] if args.base else [])
run = subprocess.run(cmd, input="\n".join(texts), capture_output=True, text=True)
if run.returncode:
    sys.exit(f"{' '.join(cmd)} failed (exit {run.returncode}):\n{run.stderr.strip()}")
out = run.stdout
worst = 0.0
lines = out.splitlines()
if len(lines) != len(texts):
    sys.exit(f"hone predict gave {len(lines)} lines for {len(texts)} texts")
for row, line in zip(hf.tolist(), lines):
    probs = json.loads(line)["probabilities"]
    for i, p in enumerate(row):
        worst = max(worst, abs(p - probs[labels[i]]))
print(f"max |p_hf - p_hone| = {worst:.2e}")
sys.exit(0 if worst < 1e-4 else 1)
