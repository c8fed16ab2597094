"""Peer calibration for hone's masked-LM pretraining: Hugging Face BertForMaskedLM with the
settings of the context check in BENCHMARKS.md (2 layers, 64 wide, 4 heads, FFN 128, blocks of
64 tokens, 15% masking 80/10/10, AdamW lr 1e-3 with decay excluding bias/LayerNorm, 5% warm-up
then linear decay, clip 1.0, batch 32), on the same tokenizer and corpus as hone's run.

    python scripts/hf-mlm-calibration.py TOKENIZER_JSON CORPUS DROPOUT [STEPS]

Needs torch, transformers and tokenizers (not part of hone's setup). Prints the validation
MLM loss every 200 steps.
"""
import math, random, sys, torch
from tokenizers import Tokenizer
from transformers import BertConfig, BertForMaskedLM, get_linear_schedule_with_warmup
torch.manual_seed(42); random.seed(42); torch.set_num_threads(1)
tok = Tokenizer.from_file(sys.argv[1])
V = tok.get_vocab_size(); cls, sep, msk = (tok.token_to_id(t) for t in ["[CLS]","[SEP]","[MASK]"])
docs = [d for d in open(sys.argv[2]).read().split("\n\n") if d.strip()]
random.shuffle(docs); nv = math.ceil(len(docs)*0.05)
def blocks(ds):
    ids = [i for d in ds for l in d.splitlines() for i in tok.encode(l, add_special_tokens=False).ids]
    return [[cls]+ids[i:i+62]+[sep] for i in range(0, len(ids)-62, 62)]
tr, va = blocks(docs[nv:]), blocks(docs[:nv])
def mask(b, g):
    x = torch.tensor(b); y = x.clone()
    special = (x == cls) | (x == sep)
    sel = (torch.rand(x.shape, generator=g) < 0.15) & ~special
    y[~sel] = -100
    r = torch.rand(x.shape, generator=g)
    x[sel & (r < 0.8)] = msk
    rnd = sel & (r >= 0.8) & (r < 0.9)
    x[rnd] = torch.randint(V, x.shape, generator=g)[rnd]
    return x, y
cfg = BertConfig(vocab_size=V, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                 max_position_embeddings=128, hidden_dropout_prob=float(sys.argv[3]), attention_probs_dropout_prob=float(sys.argv[3]))
m = BertForMaskedLM(cfg)
steps = int(sys.argv[4]) if len(sys.argv) > 4 else 800
nd = ["bias", "LayerNorm.weight"]
opt = torch.optim.AdamW([{"params":[p for n,p in m.named_parameters() if not any(k in n for k in nd)],"weight_decay":0.01},
                         {"params":[p for n,p in m.named_parameters() if any(k in n for k in nd)],"weight_decay":0.0}], lr=1e-3)
sch = get_linear_schedule_with_warmup(opt, int(0.05*steps), steps)
g = torch.Generator().manual_seed(0)
def evaluate():
    m.eval(); ge = torch.Generator().manual_seed(1); tot = n = 0
    with torch.no_grad():
        for i in range(0, len(va), 64):
            x, y = mask(va[i:i+64], ge); out = m(input_ids=x, labels=y); k = (y != -100).sum().item()
            tot += out.loss.item()*k; n += k
    m.train(); return tot/n
print("train blocks", len(tr), "valid blocks", len(va), "vocab", V)
order = []
for s in range(1, steps+1):
    if not order: order = list(range(len(tr))); random.shuffle(order)
    b = [tr[order.pop()] for _ in range(min(32, len(order)))]
    x, y = mask(b, g); loss = m(input_ids=x, labels=y).loss
    loss.backward(); torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0); opt.step(); sch.step(); opt.zero_grad()
    if s % 200 == 0: print("step", s, "eval_loss", round(evaluate(), 4), flush=True)
