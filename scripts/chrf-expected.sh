#!/usr/bin/env bash
# Regenerates crates/hone-metrics/tests/data/chrf_expected.json: sacrebleu's chrF and chrF++ on
# the BLEU fixture's sentences plus cases the fixture lacks (German text, several references,
# an empty hypothesis), under each setting hone supports. hone's tests read the JSON; they
# never run Python. Makes (once) a venv at ${SACREBLEU_VENV:-/tmp/sacrebleu-venv}.
#   scripts/chrf-expected.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${SACREBLEU_VENV:-/tmp/sacrebleu-venv}"
if ! "$venv/bin/python" -c "import sacrebleu" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q sacrebleu
fi
shared="${HONE_SHARED:-$here/../../shared}"
"$venv/bin/python" - "$shared/fixtures/bleu_expected.json" \
  > "$here/../crates/hone-metrics/tests/data/chrf_expected.json" <<'PY'
import json, sys
import sacrebleu
from sacrebleu.metrics import CHRF

bleu = json.load(open(sys.argv[1]))
corpora = {
    "bleu_fixture": (bleu["hypotheses"], [bleu["references"]]),
    "german_two_refs": (
        ["Ein Mann schläft auf einem grünen Sofa.", "Zwei Hunde rennen im Schnee", "",
         "Größere Straße, (alte) Häuser!"],
        [["Ein Mann schläft in einem grünen Raum auf einem Sofa.", "Zwei Hunde laufen durch den Schnee.",
          "Ein leerer Satz.", "Eine große Straße mit alten Häusern."],
         ["Ein Mann liegt auf einem Sofa.", "Zwei Hunde rennen im Schnee.", "Nichts.",
          "Große Straße, alte Häuser!"]],
    ),
}
settings = [
    {},
    {"word_order": 2},
    {"lowercase": True},
    {"whitespace": True},
    {"eps_smoothing": True},
    {"char_order": 4, "beta": 1},
]
cases = []
for name, (hyps, refs) in corpora.items():
    for kw in settings:
        m = CHRF(**kw)
        s = m.corpus_score(hyps, refs)
        sent = [m.sentence_score(h, [r[i] for r in refs]).score for i, h in enumerate(hyps)]
        cases.append({"corpus": name, "settings": kw, "score": s.score, "name": s.name,
                      "signature": str(m.get_signature()), "sentence_scores": sent})
json.dump({"sacrebleu_version": sacrebleu.__version__,
           "corpora": {k: {"hypotheses": h, "references": r} for k, (h, r) in corpora.items()},
           "cases": cases}, sys.stdout, indent=1, ensure_ascii=False)
print()
PY
echo "wrote crates/hone-metrics/tests/data/chrf_expected.json" >&2
