"""ONNX Runtime on hone's exported graphs against hone's own outputs (scripts/onnx-check.sh).
Usage: onnx_check.py WORK_DIR TOKENIZER_JSON CLASSIFIER_DIR"""
import json, os, sys

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

work, tokenizer_json, classifier_dir = sys.argv[1:4]
TOL = 1e-4


def session(name):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    return ort.InferenceSession(f"{work}/{name}", so, providers=["CPUExecutionProvider"])


def batch(rows):
    """Right-padded int64 ids and mask for token-id rows of mixed lengths."""
    t = max(len(r) for r in rows)
    ids = np.zeros((len(rows), t), dtype=np.int64)
    mask = np.zeros((len(rows), t), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)], mask[i, : len(r)] = r, 1
    return ids, mask


def feed(sess, ids, mask):
    names = [i.name for i in sess.get_inputs()]
    inputs = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    return {n: inputs[n] for n in names}


def jsonl(name):
    return [json.loads(line) for line in open(f"{work}/{name}")]


results = {}
# all-MiniLM-L6-v2: last_hidden_state, pooled as hone embed pools it.
cls, mean = jsonl("cls.jsonl"), jsonl("mean.jsonl")
ids, mask = batch([e["input_ids"] for e in cls])
sess = session("minilm.onnx")
(hidden,) = sess.run(["last_hidden_state"], feed(sess, ids, mask))
m = mask[..., None].astype(np.float32)
ort_mean = (hidden * m).sum(1) / m.sum(1)
results["minilm cls"] = float(np.abs(hidden[:, 0] - np.array([e["embedding"] for e in cls])).max())
results["minilm mean"] = float(np.abs(ort_mean - np.array([e["embedding"] for e in mean])).max())

# The SST-2 classifier: softmax(logits) against hone predict's probabilities.
preds = jsonl("predict.jsonl")
tok = Tokenizer.from_file(tokenizer_json)
tok.no_padding()
tok.enable_truncation(128)
rows = [tok.encode(p["text"]).ids for p in preds]
ids, mask = batch(rows)
sess = session("sst2.onnx")
(logits,) = sess.run(["logits"], feed(sess, ids, mask))
p = np.exp(logits - logits.max(1, keepdims=True))
p /= p.sum(1, keepdims=True)
# Label names in id order: config.json's id2label, else (an adapter directory) hone's
# LABEL_<id> names, which sort in id order below ten labels.
config = os.path.join(classifier_dir, "config.json")
if os.path.exists(config):
    id2label = json.load(open(config))["id2label"]
    labels = [id2label[str(i)] for i in range(len(id2label))]
else:
    labels = sorted(preds[0]["probabilities"])
hone = np.array([[q["probabilities"][l] for l in labels] for q in preds])
results["sst2 probabilities"] = float(np.abs(p - hone).max())

print(json.dumps(dict(onnxruntime=ort.__version__, batch=list(ids.shape), tolerance=TOL, max_abs_diff=results)))
bad = {k: v for k, v in results.items() if not v <= TOL}
if bad:
    sys.exit(f"onnx_check.py: ONNX Runtime differs from hone beyond {TOL}: {bad}")
