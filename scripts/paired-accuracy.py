#!/usr/bin/env python3
"""Two classifiers on the same validation set, sentence by sentence: each one's accuracy, the
sentences only one of them gets right, and the exact two-sided McNemar p-value (how likely a
split at least this uneven is if neither model is better). Standard library only.

Usage: scripts/paired-accuracy.py VALIDATION.tsv PRED_A.jsonl PRED_B.jsonl [LABEL_COLUMN]
  PRED_*.jsonl: `hone predict MODEL --input VALIDATION.tsv --text-column ...` output, one
  line per row in the same order; LABEL_COLUMN defaults to `label`.
"""
import csv
import json
import sys
from math import comb


def main():
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__.strip().split("\n\n")[1])
    gold_path, a_path, b_path = sys.argv[1:4]
    column = sys.argv[4] if len(sys.argv) == 5 else "label"
    with open(gold_path, newline="") as f:
        gold = [row[column] for row in csv.DictReader(f, delimiter="\t")]
    preds = []
    for path in (a_path, b_path):
        with open(path) as f:
            p = [json.loads(line)["label"] for line in f]
        if len(p) != len(gold):
            sys.exit(f"{path}: {len(p)} predictions for {len(gold)} rows of {gold_path}")
        preds.append(p)
    a, b = preds
    n = len(gold)
    only_a = sum(x == g != y for x, y, g in zip(a, b, gold))
    only_b = sum(y == g != x for x, y, g in zip(a, b, gold))
    k, m = min(only_a, only_b), only_a + only_b
    p = min(1.0, 2 * sum(comb(m, i) for i in range(k + 1)) / 2**m) if m else 1.0
    for path, pred in ((a_path, a), (b_path, b)):
        print(f"{path}: accuracy {sum(x == g for x, g in zip(pred, gold)) / n:.4f} ({n} rows)")
    print(f"right only in A: {only_a}, right only in B: {only_b}, McNemar exact p = {p:.3f}")


if __name__ == "__main__":
    main()
