"""ONNX Runtime on hone's own ONNX export of all-MiniLM-L6-v2, fp32 and dynamic int8
(onnxruntime.quantization.quantize_dynamic, as ../shared/bench/ort_cpu_baseline.py makes
it), in the cases and with the timing of hone's bench (crates/hone-core/benches/
minilm_forward.rs): the sentence alone (batch 1), and padded to 64 positions, 64 times.
Usage: ort_bench.py MODEL_ONNX TOKENIZER_JSON THREADS [ROUNDS]"""
import json, os, sys, time

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import QuantType, quantize_dynamic
from tokenizers import Tokenizer

SENTENCE = "the film is a charming and often affecting journey ."
path, tokenizer_json, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 1

int8 = path.replace(".onnx", ".int8.onnx")
if not os.path.exists(int8):
    quantize_dynamic(path, int8, weight_type=QuantType.QInt8)

tok = Tokenizer.from_file(tokenizer_json)
tok.no_padding()
ids = tok.encode(SENTENCE).ids


def median_ms(f, warmup, n):
    for _ in range(warmup):
        f()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return 1e3 * sorted(ts)[n // 2]


def feed(b, t):
    x = np.zeros((b, t), dtype=np.int64)
    m = np.zeros((b, t), dtype=np.int64)
    x[:, : len(ids)], m[:, : len(ids)] = ids, 1
    return {"input_ids": x, "attention_mask": m, "token_type_ids": np.zeros_like(x)}


for name, file in [("fp32", path), ("int8", int8)]:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    s = ort.InferenceSession(file, so, providers=["CPUExecutionProvider"])
    for b, t, warmup, n in [(1, len(ids), 5, 50 * rounds), (64, 64, 2, 10 * rounds)]:
        f = feed(b, t)
        ms = median_ms(lambda: s.run(None, f), warmup, n)
        print(json.dumps({"peer": "onnxruntime", "case": f"ort {name} (hone's export) minilm-L6 B{b} S{t}",
                          "threads": threads, "ms": round(ms, 3)}), flush=True)
