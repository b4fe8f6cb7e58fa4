"""Sparse-training results on ../shared/data: dense vs static / SET / RigL at 50% and 75%, and SPDF.

Every run trains debug-small (4 layers, width 128, context 256) for the same number of AdamW steps
with the same data order, learning-rate schedule and seed; only the sparsity section differs. The
study then repeats the SPDF recipe (arXiv 2303.10464): 75% static-sparse pre-training on one corpus
(tinyshakespeare), dense fine-tuning on the other (WikiText-2), against dense pre-training with the
same fine-tuning.

To keep the blocks (the matrices sparsity acts on) the bulk of the compute on a 2-core CPU, the
text is read as UTF-8 bytes (vocabulary 256, `vocab_size` overridden) rather than GPT-2 BPE, whose
50,257-row LM head would dwarf the 0.8M block weights. The loop is the training loop's order of
calls (`Sparsifier.update` after clipping, `apply` after the step), written out here so the study
depends on nothing but the model and `sparsity.py`.

    flock /tmp/bench.lock .venv/bin/python bench/sparsity_results.py      # BENCHMARKS `results-sparsity`
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from cerebras_gpt import GPT, GPTConfig  # noqa: E402
from cerebras_gpt.sparsity import Sparsifier, SparsityConfig, measure_sparsity  # noqa: E402
from scripts.update_section import update_section  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "bench" / "results" / "sparsity"


def load_bytes(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, val) byte streams of a corpus: the last 10% is validation."""
    data = torch.frombuffer(bytearray((DATA / name).read_bytes()), dtype=torch.uint8).long()
    cut = int(0.9 * data.numel())
    return data[:cut], data[cut:]


def batch(stream: torch.Tensor, gen: torch.Generator, batch_size: int, seq: int) -> torch.Tensor:
    starts = torch.randint(0, stream.numel() - seq - 1, (batch_size,), generator=gen)
    return torch.stack([stream[s : s + seq + 1] for s in starts.tolist()])  # (B, T+1)


@torch.no_grad()
def val_loss(model: GPT, stream: torch.Tensor, seq: int, batches: int = 16, batch_size: int = 8) -> float:
    model.eval()
    gen = torch.Generator().manual_seed(1234)  # the same validation windows for every run
    losses = []
    for _ in range(batches):
        x = batch(stream, gen, batch_size, seq)
        losses.append(F.cross_entropy(model(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten()).item())
    model.train()
    return sum(losses) / len(losses)


def lr_at(step: int, steps: int, peak: float) -> float:
    """Linear warmup over 10% of steps, cosine decay to 10% of peak (the paper's shape)."""
    warm = max(1, steps // 10)
    if step <= warm:
        return peak * step / warm
    progress = (step - warm) / max(1, steps - warm)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(
    model: GPT, sparsity: SparsityConfig, train_data: torch.Tensor, val_data: torch.Tensor, steps: int, args, seed: int
) -> dict:
    opt = torch.optim.AdamW(
        [
            {"params": [p for p in model.parameters() if p.dim() >= 2], "weight_decay": 0.1},
            {"params": [p for p in model.parameters() if p.dim() < 2], "weight_decay": 0.0},
        ],
        lr=args.lr,
        betas=(0.9, 0.95),
        eps=1e-8,
    )
    sp = Sparsifier(sparsity, model, steps)
    sp.apply(model)
    gen = torch.Generator().manual_seed(seed)
    curve, start = [], time.perf_counter()
    for step in range(1, steps + 1):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, args.lr)
        x = batch(train_data, gen, args.batch, args.seq)
        loss = F.cross_entropy(model(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        sp.update(step, model, opt)
        opt.step()
        sp.apply(model, opt)
        if step % args.eval_every == 0 or step == steps:
            curve.append((step, val_loss(model, val_data, args.seq)))
    rep = sp.report(seq_len=args.seq)
    zeros = measure_sparsity(model)
    return {
        "val_loss": curve[-1][1],
        "curve": curve,
        "seconds": time.perf_counter() - start,
        "sparsity": sum(zeros.values()) / len(zeros),
        "flops_saved_fraction": rep.get("flops_saved_fraction", 0.0),
    }


def new_model(seed: int) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig.from_name("debug-small", vocab_size=256)).train()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--finetune-steps", type=int, default=100)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--update-freq", type=int, default=25)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--from-json", help="rewrite the plot and section from a results.json instead of training")
    args = ap.parse_args()
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        args = argparse.Namespace(**{**saved["args"], "no_write": args.no_write})
        plot(saved["runs"], saved["spdf"])
        text = section(saved["runs"], saved["spdf"], args)
        print(text)
        if not args.no_write:
            update_section(ROOT / "BENCHMARKS.md", "results-sparsity", text)
        return
    torch.set_num_threads(args.threads)
    OUT.mkdir(parents=True, exist_ok=True)
    shakespeare, wiki = load_bytes("tinyshakespeare.txt"), load_bytes("wikitext-2-valid.txt")

    runs: dict[str, dict] = {}
    dynamic = dict(update_freq=args.update_freq, drop_fraction=0.3, drop_fraction_schedule="cosine")
    plan = [("dense", SparsityConfig())]
    for s in (0.5, 0.75):
        plan += [
            (f"static {s:.0%}", SparsityConfig(sparsity=s)),
            (f"SET {s:.0%}", SparsityConfig(sparsity=s, algorithm="set", **dynamic)),
            (f"RigL {s:.0%}", SparsityConfig(sparsity=s, algorithm="rigl", **dynamic)),
        ]
    models = {}
    for name, cfg in plan:
        model = new_model(0)
        runs[name] = train(model, cfg, *shakespeare, args.steps, args, seed=1)
        models[name] = model
        print(f"{name}: val {runs[name]['val_loss']:.4f} ({runs[name]['seconds']:.0f} s)", flush=True)

    # SPDF: phase 1 above (dense and static 75% on tinyshakespeare); phase 2 dense on WikiText-2.
    spdf = {}
    for name in ("dense", "static 75%"):
        model = models[name]
        before = val_loss(model, wiki[1], args.seq)
        ft = train(model, SparsityConfig(sparsity=0.75, densify=True), *wiki, args.finetune_steps, args, seed=2)
        spdf[name] = {"wiki_val_before": before, **ft}
        print(f"SPDF {name} -> dense fine-tune: wiki val {ft['val_loss']:.4f}", flush=True)
    (OUT / "results.json").write_text(json.dumps({"args": vars(args), "runs": runs, "spdf": spdf}, indent=2))
    plot(runs, spdf)
    text = section(runs, spdf, args)
    print(text)
    if not args.no_write:
        update_section(ROOT / "BENCHMARKS.md", "results-sparsity", text)


def plot(runs: dict, spdf: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, r in runs.items():
        steps, losses = zip(*r["curve"])
        axes[0].plot(
            steps, losses, label=name, marker=".", linestyle="-" if name == "dense" else "--" if "50" in name else ":"
        )
    axes[0].set(title="debug-small on tinyshakespeare (bytes)", xlabel="step", ylabel="validation loss")
    axes[0].legend(fontsize=8)
    for name, r in spdf.items():
        steps, losses = zip(*r["curve"])
        axes[1].plot(steps, losses, marker=".", label=f"{name} pre-training -> dense fine-tune")
    axes[1].set(title="SPDF: fine-tuning on WikiText-2", xlabel="fine-tuning step", ylabel="validation loss")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT / "sparsity.png", dpi=110)


def section(runs: dict, spdf: dict, args) -> str:
    cmd = (
        f"flock /tmp/bench.lock .venv/bin/python bench/sparsity_results.py --steps {args.steps} "
        f"--finetune-steps {args.finetune_steps} --eval-every {args.eval_every}"
    )
    dense = runs["dense"]["val_loss"]
    lines = [
        "## Sparse training (`bench/sparsity_results.py`)",
        "",
        f"debug-small (4 layers, width 128) on `../shared/data` read as bytes (vocab 256), {args.steps} AdamW steps "
        f"of {args.batch} x {args.seq} tokens, peak LR {args.lr}, warmup 10% + cosine to 10%, clip 1.0, same seed "
        f"and data order for every run. Sparsity on the QKV, out-proj and FFN matrices (random initial mask); "
        f"SET/RigL update every {args.update_freq} steps, drop fraction 0.3 with cosine decay, stopping at 75% "
        f"of the run. Validation: the last 10% of each corpus, 16 x 8 fixed windows. CPU, {args.threads} thread.",
        "",
        f"Command: `{cmd}` (about {sum(r['seconds'] for r in runs.values()) / 60 + sum(r['seconds'] for r in spdf.values()) / 60:.0f} min).",
        "",
        "| run | weight sparsity | training FLOPs saved | final val loss | vs dense |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in runs.items():
        lines.append(
            f"| {name} | {r['sparsity']:.1%} | {r['flops_saved_fraction']:.1%} | {r['val_loss']:.4f} | "
            f"{r['val_loss'] - dense:+.4f} |"
        )
    lines += [
        "",
        "SPDF (sparse pre-training, dense fine-tuning): phase 1 is the tinyshakespeare run above; phase 2 trains "
        f"all weights densely (`densify: true`) for {args.finetune_steps} steps on WikiText-2 "
        "(validation on its held-out 10%).",
        "",
        "| pre-training | WikiText-2 val before fine-tuning | after dense fine-tuning | weights nonzero after |",
        "|---|---:|---:|---:|",
    ]
    for name, r in spdf.items():
        lines.append(f"| {name} | {r['wiki_val_before']:.4f} | {r['val_loss']:.4f} | {1 - r['sparsity']:.1%} |")
    gap50 = max(r["val_loss"] - dense for n, r in runs.items() if "50%" in n)
    gap75 = max(r["val_loss"] - dense for n, r in runs.items() if "75%" in n)
    best75 = min((r["val_loss"], n) for n, r in runs.items() if "75%" in n)[1]
    pre_gap = spdf["static 75%"]["wiki_val_before"] - spdf["dense"]["wiki_val_before"]
    post_gap = spdf["static 75%"]["val_loss"] - spdf["dense"]["val_loss"]
    lines += [
        "",
        f"Reading: at equal steps, 50% sparsity costs at most {gap50:.3f} nats of validation loss and 75% at most "
        f"{gap75:.3f} (best at 75%: {best75}), for {runs['static 50%']['flops_saved_fraction']:.0%} and "
        f"{runs['static 75%']['flops_saved_fraction']:.0%} fewer training FLOPs as Cerebras counts them. "
        f"SPDF: the 75%-sparse model starts fine-tuning {pre_gap:+.3f} nats from the dense one on the new corpus "
        f"and ends {post_gap:+.3f} after dense fine-tuning. Single seed, small model, short runs: run-to-run "
        "spread was not measured, so read differences of a hundredth or two as ties.",
        "",
        "![validation curves](bench/results/sparsity/sparsity.png)",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
