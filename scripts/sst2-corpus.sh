#!/usr/bin/env bash
# The unlabelled text of the SST-2 training file as a pretraining corpus (for
# examples/bert-mlm-sst2.toml): the sentence column only, labels dropped, the header
# skipped. SST-2's rows are shuffled phrases, not documents, so every 16 rows form a
# pseudo-document (a blank line between them) for the NSP pairs.
#
#   scripts/sst2-corpus.sh [TRAIN_TSV] [OUT]   (defaults below)
set -euo pipefail
cd "$(dirname "$0")/.."
src=${1:-../shared/data/sst2/train.tsv}
out=${2:-runs/corpora/sst2-train.txt}
mkdir -p "$(dirname "$out")"
tail -n +2 "$src" | cut -f1 | sed 's/[[:space:]]*$//' |
    awk 'NR > 1 && (NR - 1) % 16 == 0 { print "" } { print }' > "$out.tmp"
mv "$out.tmp" "$out"
echo "$out: $(grep -c . "$out") sentences"
