"""PEFT's own training step time and peak memory, LoRA and full fine-tuning, on real SST-2 batches:
the peer that hone's LoRA is measured against in the same run. Run it through scripts/peft-peer.sh,
which makes the venv (torch CPU, transformers, peft, safetensors).

Usage:
  peft_peer.py MODEL_DIR TRAIN_TSV [--batch-size 32] [--max-length 128] [--steps 8] [--warmup 2]
              [--random-len N]
      one JSON line per case, each measured in its own subprocess (so peak RSS is its own):
      full  AutoModelForSequenceClassification (2 labels), every parameter, AdamW lr 5e-5
      lora  the same wrapped in LoraConfig(SEQ_CLS, r 8, alpha 16, dropout 0.1, query/value),
            classifier trained as modules_to_save, AdamW lr 5e-4 on the trainable parameters
      both: weight decay 0.01, clip 1.0, train mode (checkpoint's dropout), batch i = rows
      i*B..(i+1)*B of TRAIN_TSV padded to the longest, truncated at max-length; median of `steps`
      step times after `warmup` steps; peak_rss_mb = ru_maxrss of the child at the end
      (import_rss_mb: the same after importing torch/transformers/peft, before the model).
      --random-len N: instead of SST-2 rows, one batch of random ids 1000..30000 of length N
      (full attention mask, alternating labels), as `hone bench train --seq-len N` times it.
  peft_peer.py check-fixture [--expected JSON] [--adapter DIR] [--base DIR]
      loads the fixture adapter with PeftModel.from_pretrained and prints the max |p - p_fixture|
      unmerged and after merge_and_unload (defaults: ../shared/fixtures beside the repository;
      the base from the adapter config, relative to the current folder or the repository).
THREADS (default 2) is passed to torch.set_num_threads.
"""
import argparse, csv, json, os, resource, statistics, subprocess, sys, time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
THREADS = int(os.environ.get("THREADS", "2"))


def rss_mb():
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def versions():
    import peft, torch, transformers
    return dict(torch=torch.__version__, transformers=transformers.__version__, peft=peft.__version__)


def run_case(a):
    import torch
    import peft  # noqa: F401  (imported before the measure, as the timed code needs it)
    from transformers import AutoTokenizer
    import_rss = rss_mb()
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    n = a.batch_size * (a.warmup + a.steps)
    tok = AutoTokenizer.from_pretrained(a.model_dir)
    if a.random_len:
        ids = torch.randint(1000, 30000, (a.batch_size, a.random_len))
        batch = dict(input_ids=ids, attention_mask=torch.ones_like(ids),
                     labels=torch.arange(a.batch_size) % 2)
        batches = [batch] * (a.warmup + a.steps)
    else:
        batches = sst2_batches(a, tok, n)
    run_steps(a, batches, import_rss)


def sst2_batches(a, tok, n):
    import torch
    with open(a.train_tsv, encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[:n]
    if len(rows) < n:
        sys.exit(f"peft_peer.py: {a.train_tsv} has {len(rows)} rows, {n} needed")
    batches = []
    for i in range(0, n, a.batch_size):
        chunk = rows[i:i + a.batch_size]
        enc = tok([r["sentence"] for r in chunk], padding=True, truncation=True,
                  max_length=a.max_length, return_tensors="pt")
        batches.append(dict(enc, labels=torch.tensor([int(r["label"]) for r in chunk])))
    return batches


def run_steps(a, batches, import_rss):
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification
    model = AutoModelForSequenceClassification.from_pretrained(a.model_dir, num_labels=2, dtype=torch.float32)
    if a.case == "lora":
        cfg = LoraConfig(task_type=TaskType.SEQ_CLS, r=8, lora_alpha=16, lora_dropout=0.1,
                         target_modules=["query", "value"])
        model = get_peft_model(model, cfg)
        trainable, total = model.get_nb_trainable_parameters()  # what print_trainable_parameters prints
        lr = 5e-4
    else:
        trainable = total = sum(p.numel() for p in model.parameters())
        lr = 5e-5
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    model.train()
    times = []
    for batch in batches:
        t = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t)
    print(json.dumps(dict(peer="peft", case=a.case, threads=torch.get_num_threads(), batch_size=a.batch_size,
                          max_length=a.max_length, random_len=a.random_len, median_step_ms=round(1e3 * statistics.median(times[a.warmup:]), 1),
                          peak_rss_mb=rss_mb(), trainable_params=trainable, total_params=total,
                          trainable_pct=round(100 * trainable / total, 4), **versions(),
                          import_rss_mb=import_rss, final_loss=round(loss.item(), 4))), flush=True)


def check_fixture(a):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    torch.set_num_threads(THREADS)
    exp_path = a.expected or os.path.normpath(os.path.join(REPO, "..", "shared", "fixtures", "lora_minilm_expected.json"))
    exp = json.load(open(exp_path))
    adapter = a.adapter or os.path.join(os.path.dirname(exp_path), exp["adapter_dir"])
    base = a.base or json.load(open(os.path.join(adapter, "adapter_config.json")))["base_model_name_or_path"]
    if not os.path.isdir(base) and os.path.isdir(os.path.join(REPO, base)):
        base = os.path.join(REPO, base)
    tok = AutoTokenizer.from_pretrained(base)
    enc = tok(exp["texts"], padding=True, truncation=True, max_length=exp["max_length"], return_tensors="pt")
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=len(exp["probabilities_unmerged"][0]),
                                                               dtype=torch.float32)
    model = PeftModel.from_pretrained(model, adapter, is_trainable=True)  # trainable only to count as the fixture did
    trainable, total = model.get_nb_trainable_parameters()
    model.eval()

    def worst(key):
        with torch.no_grad():
            p = model(**enc).logits.softmax(-1)
        return (p - torch.tensor(exp[key])).abs().max().item()

    unmerged = worst("probabilities_unmerged")
    model = model.merge_and_unload()
    merged = worst("probabilities_merged")
    print(json.dumps(dict(check="lora-fixture", adapter=adapter, base=base, max_abs_diff_unmerged=unmerged,
                          max_abs_diff_merged=merged, trainable_params=trainable, total_params=total,
                          fixture_trainable_params=exp["trainable_params"], fixture_total_params=exp["total_params"],
                          **versions())), flush=True)
    sys.exit(0 if max(unmerged, merged) < 1e-5 else 1)


def main():
    if sys.argv[1:2] == ["check-fixture"]:
        p = argparse.ArgumentParser(prog="peft_peer.py check-fixture")
        p.add_argument("--expected"); p.add_argument("--adapter"); p.add_argument("--base")
        return check_fixture(p.parse_args(sys.argv[2:]))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir"); p.add_argument("train_tsv")
    p.add_argument("--batch-size", type=int, default=32); p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--steps", type=int, default=8); p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--random-len", type=int, default=0)
    p.add_argument("--case", choices=["full", "lora"], help=argparse.SUPPRESS)  # the child's own case
    a = p.parse_args()
    if a.case:
        return run_case(a)
    for case in ("full", "lora"):
        r = subprocess.run([sys.executable, os.path.abspath(__file__), *sys.argv[1:], "--case", case])
        if r.returncode:
            sys.exit(f"peft_peer.py: case {case} failed (exit {r.returncode})")


if __name__ == "__main__":
    main()
