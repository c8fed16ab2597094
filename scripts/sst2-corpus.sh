#!/usr/bin/env bash
# The unlabelled text of the SST-2 training file as a pretraining corpus (for
# examples/bert-mlm-sst2.toml): the sentence column only, labels dropped, the header
# skipped. SST-2's rows are the phrases of a parse tree bank, shuffled: most rows are
# word spans of a longer row. A row that is no span of a longer one starts a document,
# and every shorter row that is a span of it joins that document (longest first), so a
# document is one review sentence with its phrases, and documents are separated by blank
# lines in the order their rows first appear. Next-sentence pairs then have a signal to
# learn: a segment from the same sentence shares its words, one from another does not.
#
#   scripts/sst2-corpus.sh [TRAIN_TSV] [OUT]   (defaults below)
set -euo pipefail
cd "$(dirname "$0")/.."
src=${1:-../shared/data/sst2/train.tsv}
out=${2:-runs/corpora/sst2-train.txt}
mkdir -p "$(dirname "$out")"
tail -n +2 "$src" | cut -f1 |
    # word count, row number, words joined by single spaces; longest rows first
    awk 'NF > 0 { $1 = $1; print NF "\t" NR "\t" $0 }' |
    sort -t "$(printf '\t')" -k1,1nr -k2,2n |
    awk -F '\t' '
        {
            if ($3 in span) { doc = span[$3] }
            else {
                # a new document: remember every word span of its sentence
                doc = $2; n = split($3, w, " ")
                for (a = 1; a <= n; a++) {
                    s = w[a]
                    if (!(s in span)) span[s] = doc
                    for (b = a + 1; b <= n; b++) {
                        s = s " " w[b]
                        if (!(s in span)) span[s] = doc
                    }
                }
            }
            # (mawk creates text[doc] before a right-hand side that tests it, so no ?:)
            if (doc in text) { text[doc] = text[doc] "\001" $3 } else { text[doc] = $3; first[doc] = $2 }
            if ($2 + 0 < first[doc] + 0) first[doc] = $2
        }
        END { for (d in text) print first[d] "\t" text[d] }' |
    sort -t "$(printf '\t')" -k1,1n | cut -f2- |
    awk 'NR > 1 { print "" } { gsub("\001", "\n"); print }' > "$out.tmp"
mv "$out.tmp" "$out"
echo "$out: $(grep -c . "$out") sentences in $(($(grep -c '^$' "$out") + 1)) documents"
