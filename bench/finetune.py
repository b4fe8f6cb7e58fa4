"""Fine-tuning result: a model pretrained by `cerebras-gpt train` on ../shared/data, fine-tuned on a
constructed sentiment task, full vs LoRA; held-out label-likelihood accuracy before and after.

    flock /tmp/bench.lock .venv/bin/python bench/finetune.py     # records BENCHMARKS.md results-finetune

Steps (each a command line, recorded with the results): prepare wikitext-2-valid + tinyshakespeare,
pretrain debug-small (skipped when the model exists), then `cerebras-gpt finetune` full and LoRA on
`cerebras_gpt.finetune.synthetic.sentiment_records` (400 train records, 100 held-out from another seed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from scripts.update_section import update_section  # noqa: E402

PY = str(ROOT / ".venv" / "bin" / "python")


def sh(cmd: list[str]) -> float:
    print("$", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--work", default="/tmp/ft_bench")
    p.add_argument("--pretrain-steps", type=int, default=400)
    p.add_argument("--no-record", action="store_true")
    a = p.parse_args()
    work = Path(a.work)
    data, pre = work / "data", work / "pretrain"
    shared = ROOT.parent / "shared" / "data"
    commands = []
    prep = [PY, "-m", "cerebras_gpt", "prepare", str(shared / "wikitext-2-valid.txt"), str(shared / "tinyshakespeare.txt"),
            "--paragraphs", "--out", str(data)]
    pretrain = [PY, "-m", "cerebras_gpt", "train", "--model", "debug-small", "--data-dir", str(data), "--seq-len", "128",
                "--batch-size", "16", "--steps", str(a.pretrain_steps), "--lr", "2e-3", "--eval-interval", "100",
                "--out-dir", str(pre), "--no-progress", "--log-interval", "50"]
    commands += [prep, pretrain]
    if not (data / "meta.json").exists():
        sh(prep)
    if not (pre / "model" / "config.json").exists():
        sh(pretrain)
    metrics = [json.loads(line) for line in (pre / "metrics.jsonl").read_text().splitlines()]
    pre_val = [m["val_loss"] for m in metrics if "val_loss" in m][-1]

    from cerebras_gpt.finetune.synthetic import sentiment_records, write_jsonl

    train_file = write_jsonl(sentiment_records(400, seed=1), work / "sentiment_train.jsonl")
    test_file = write_jsonl(sentiment_records(100, seed=2), work / "sentiment_test.jsonl")
    results = {}
    for name, extra in [("full", ["--lora.rank", "0", "--lr", "3e-3"]),
                        ("LoRA r=8", ["--lora.rank", "8", "--lora.alpha", "16", "--lr", "1e-2", "--save-adapter"])]:
        out = work / ("ft_" + name.split()[0].lower())
        shutil.rmtree(out, ignore_errors=True)  # a fresh run each time
        cmd = [PY, "-m", "cerebras_gpt", "finetune", "--model", str(pre / "model"), "--data", str(train_file),
               "--eval-data", str(test_file), "--task", "classification", "--labels", " positive", " negative",
               "--epochs", "5", "--batch-size", "16", "--early-stopping-patience", "2", "--out-dir", str(out),
               "--resume", "never", "--no-progress", *extra]
        commands.append(cmd)
        seconds = sh(cmd)
        r = json.loads((out / "finetune_results.json").read_text())
        results[name] = dict(before=r["before"]["accuracy"], after=r["after"]["accuracy"], val_loss=r["val_loss"],
                             steps=r["steps"], seconds=seconds)
    print(json.dumps(results, indent=2))
    if a.no_record:
        return
    rows = "\n".join(f"| {n} | {r['before']:.2f} | {r['after']:.2f} | {r['val_loss']:.4f} | {r['steps']} | {r['seconds']:.0f} s |"
                     for n, r in results.items())

    def show(cmd: list[str]) -> str:
        return " ".join(f"'{c}'" if " " in c else c for c in cmd).replace(PY + " -m cerebras_gpt", "cerebras-gpt")

    body = f"""## Fine-tuning: sentiment, full vs LoRA

A `debug-small` model (4 layers, d=128, 7.3M parameters) pretrained by `cerebras-gpt train` for
{a.pretrain_steps} steps x 16 x 128 tokens on wikitext-2-valid + tinyshakespeare (val loss {pre_val:.3f}), then
fine-tuned on a constructed sentiment task (`cerebras_gpt.finetune.synthetic.sentiment_records`: short reviews
whose one verdict word is positive or negative; 400 records, 10% held for validation and early stopping) and
scored on 100 held-out records from another seed by comparing the log-likelihoods of " positive" and
" negative" after the prompt. Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores shared
with other jobs (times are wall clock, indicative only).

| run | held-out accuracy before | after | val loss (best) | steps | wall time |
|---|---|---|---|---|---|
{rows}

Commands:

```
{chr(10).join(show(c) for c in commands)}
```

Reproduce everything: `flock /tmp/bench.lock .venv/bin/python bench/finetune.py`.
"""
    update_section(ROOT / "BENCHMARKS.md", "results-finetune", body)


if __name__ == "__main__":
    main()
