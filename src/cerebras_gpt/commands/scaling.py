"""`cerebras-gpt scaling plan|run|fit`: compute-optimal plans, model-size ladders, scaling-law fits."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Literal

from cerebras_gpt.commands import run_command

log = logging.getLogger(__name__)

USAGE = """usage: cerebras-gpt scaling {plan,run,fit} [options]   (cerebras-gpt scaling <step> --help)

  plan   compute-optimal parameters and tokens (20 per parameter) for FLOPs budgets or presets
  run    train a ladder of model sizes compute-optimally on prepared data (resumable), then fit it
  fit    fit L(C) = (C/C0)^-alpha + L_inf to (FLOPs, loss) points; intervals, plot, prediction
"""


@dataclasses.dataclass
class PlanArgs:
    """Compute-optimal plans: what a FLOPs budget buys, or what presets cost, at 20 tokens per parameter."""

    budget: list[float] = dataclasses.field(default_factory=list)
    """Training budgets in FLOPs (e.g. 1e20 3e21)."""
    presets: list[str] = dataclasses.field(default_factory=list)
    """Presets to plan (e.g. Cerebras-GPT-111M Cerebras-GPT-1.3B); 'all' for the paper's seven."""
    tokens_per_param: float = 20.0
    """Tokens per parameter (the paper's compute-optimal 20)."""
    seq_len: int = 2048
    """Sequence length (attention FLOPs grow with it)."""
    count: Literal["total", "non_embedding"] = "total"
    """Which parameters the rule counts: all (the paper) or those outside the embeddings (Kaplan et al.)."""
    json: bool = False
    """Print JSON instead of a table."""


@dataclasses.dataclass
class FitArgs:
    """Fit L(C) = (C/C0)^-alpha + L_inf to (FLOPs, loss) points by least squares."""

    points: list[str] = dataclasses.field(default_factory=list)
    """runs.jsonl files or ladder directories (from `scaling run`), or CSV files with flops,loss[,name] columns."""
    paper: bool = False
    """Fit the paper's seven (FLOPs, Pile loss) points (built in) instead of / besides --points; a ladder's
    points are then counted in the paper's FLOPs convention (its recorded paper_flops), as the law is."""
    target: float | None = None
    """Predict the loss at this training budget in FLOPs (e.g. 1e23)."""
    holdout: int = 0
    """Also fit without the N largest points and report how well that fit predicts them."""
    level: float = 0.95
    """Confidence level of the intervals."""
    plot: str | None = None
    """Write the log-log plot (points, fit, band, extrapolation, target) to this PNG."""
    output: str | None = None
    """Write the fit as JSON to this file (it is always printed)."""


@dataclasses.dataclass
class RunArgs:
    """Train a ladder of small models, each compute-optimally, then fit the scaling law to their losses."""

    data: str
    """A prepared data directory (`cerebras-gpt prepare`); its tokenizer sets the vocabulary."""
    out: str = "runs/scaling"
    """Ladder directory: runs/<rung>/ (each training run), runs.jsonl (one line per finished rung), fit."""
    widths: list[int] = dataclasses.field(default_factory=lambda: [16, 24, 32, 48, 64])
    """Model widths of the ladder."""
    n_layer: int | None = 2
    """Depth of every rung; omit (None) to scale depth with width (width / aspect)."""
    aspect: float = 32.0
    """Width per layer when --n-layer is None."""
    head_dim: int = 8
    """Attention head width."""
    block_size: int = 128
    """Context (sequence length) of every rung."""
    tokens_per_param: float = 20.0
    """Tokens per parameter (the paper's 20)."""
    count: Literal["total", "non_embedding"] = "total"
    """Which parameters the rule counts."""
    batch_size: int = 16
    """Sequences per optimizer step."""
    lr: float = 3e-3
    """Peak learning rate of every rung (warmup, then linear decay to 10%, as the paper)."""
    warmup_fraction: float = 0.05
    """Warmup as a fraction of each rung's steps."""
    seed: int = 0
    """Seed of the initialization and data order."""
    holdout: int = 1
    """After the ladder: fit without the N largest rungs and report how well that predicts them."""
    target: float | None = None
    """Predict the loss at this budget in FLOPs."""
    device: str = "auto"
    """cpu, cuda, or auto."""
    threads: int | None = None
    """torch intra-op threads for training (1 is often fastest for tiny models on a busy CPU)."""


# ----------------------------------------------------------------------------- plan
def _plan(args: PlanArgs) -> int:
    from cerebras_gpt.experiments.scaling import PAPER_POINTS, plan_budget, plan_presets

    if not args.budget and not args.presets:
        raise ValueError("nothing to plan: pass --budget FLOPS... and/or --presets NAME... (or --presets all)")
    names = [n for n, _, _ in PAPER_POINTS] if [p.lower() for p in args.presets] == ["all"] else args.presets
    rows = plan_presets(names, args.tokens_per_param, args.seq_len, args.count) if names else []
    budgets = [plan_budget(b, args.tokens_per_param, args.seq_len, args.count) for b in args.budget]
    if args.json:
        print(json.dumps({"presets": [r.to_dict() for r in rows], "budgets": budgets}, indent=2))
        return 0
    if rows:
        print(
            f"{'model':<24}{'params':>16}{'tokens':>18}{'FLOPs':>11}{'card FLOPs':>12}{'paper loss':>12}"
            f"{'law loss':>10}"
        )
        for r in rows:
            card = f"{r.card_flops:.2g}" if r.card_flops else "-"
            paper = f"{r.paper_loss:.3f}" if r.paper_loss else "-"
            print(
                f"{r.name:<24}{r.params:>16,}{r.tokens:>18,}{r.flops:>11.3g}{card:>12}{paper:>12}"
                f"{r.predicted_loss:>10.3f}"
            )
    for b in budgets:
        s = b["shape"]
        print(
            f"\nbudget {b['budget_flops']:.3g} FLOPs at {b['tokens_per_param']:g} tokens/param:\n"
            f"  analytic (C = 6ND): {b['analytic']['params']:,} params, {b['analytic']['tokens']:,} tokens\n"
            f"  shape: n_layer {s['n_layer']}, n_embd {s['n_embd']}, n_head {s['n_head']}: {s['params']:,} params,"
            f" {s['tokens_at_budget']:,} tokens ({s['tokens_per_param_at_budget']:.1f}/param)\n"
            f"  nearest preset: {b['nearest_preset']}; the paper's law predicts Pile loss {s['predicted_loss']:.3f}"
        )
    return 0


# ----------------------------------------------------------------------------- fit
def _read_points(sources: list[str], paper_convention: bool = False) -> list[tuple[str, float, float]]:
    """(name, FLOPs, loss) of recorded runs; with ``paper_convention`` a ladder's FLOPs are the paper's
    (``paper_flops``, what the published law is a function of) where the run recorded them."""
    import csv

    from cerebras_gpt.experiments.scaling import RUNS, read_runs

    points = []
    for src in sources:
        path = Path(src)
        if path.is_dir() or path.name == RUNS:
            rows = read_runs(path if path.is_dir() else path.parent)
            if not rows:
                raise ValueError(f"--points {src!r}: no finished runs recorded ({RUNS} missing or empty)")
            key = "paper_flops" if paper_convention else "flops"
            points += [(r["name"], float(r.get(key) or r["flops"]), float(r["loss"])) for r in rows]
        elif path.suffix == ".csv" and path.is_file():
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                if not reader.fieldnames or not {"flops", "loss"} <= set(reader.fieldnames):
                    raise ValueError(
                        f"--points {src!r}: a CSV needs 'flops' and 'loss' columns (and optionally 'name')"
                    )
                for n, row in enumerate(reader, 2):
                    try:
                        points.append((row.get("name", ""), float(row["flops"]), float(row["loss"])))
                    except ValueError as e:
                        raise ValueError(f"{src}:{n}: {e}") from e
        else:
            raise ValueError(f"--points {src!r} is neither a ladder directory, a runs.jsonl nor a .csv file")
    return points


def fit_report(
    points: list[tuple[str, float, float]],
    target: float | None,
    holdout: int,
    level: float,
    plot: str | None,
    reference=None,
    title: str = "Compute-optimal scaling",
) -> dict:
    """Fit, held-out check and plot of (name, FLOPs, loss) points; the JSON-ready report."""
    from cerebras_gpt.experiments.scaling import fit_power_law, heldout_check, plot_fit

    names, flops, loss = zip(*points)
    fit = fit_power_law(flops, loss, names, level)
    report = fit.to_dict(target)
    heldout = []
    if holdout:
        rows = [{"name": n, "flops": c, "loss": y} for n, c, y in points]
        check = heldout_check(rows, holdout, level)
        report["heldout"] = {"fit": check["fit"].to_dict(), "checks": check["checks"]}
        heldout = [(c["name"], c["flops"], c["loss"]) for c in check["checks"]]
        if plot:
            stem = Path(plot)
            plot_fit(
                check["fit"],
                stem.with_name(stem.stem + "-heldout" + stem.suffix),
                target,
                heldout,
                reference,
                title + f" (fit without the {holdout} largest)",
            )
    if plot:
        report["plot"] = str(plot_fit(fit, plot, target, (), reference, title))
    return report


def _fit(args: FitArgs) -> int:
    from cerebras_gpt.experiments.scaling import PAPER_LAW, PAPER_POINTS

    points = _read_points(args.points, paper_convention=args.paper)  # compared with the law: its convention
    if args.paper:
        points += [(n.removeprefix("Cerebras-GPT-"), c, y) for n, c, y in PAPER_POINTS]
    if not points:
        raise ValueError("no points: pass --points runs.jsonl|DIR|FILE.csv and/or --paper")
    report = fit_report(points, args.target, args.holdout, args.level, args.plot, PAPER_LAW if args.paper else None)
    _print_fit(report)
    text = json.dumps(report, indent=2)
    if args.output:
        Path(args.output).write_text(text + "\n")
    sys.stdout.write(text + "\n")
    return 0


def _print_fit(report: dict) -> None:
    ci = report["ci"]
    log.info(
        "%s  (%.0f%% CI: alpha %.4f..%.4f, C0 %.3g..%.3g, L_inf %.4f..%.4f; rmse %.4f)",
        report["law"],
        100 * report["confidence_level"],
        *ci["alpha"],
        *ci["c0"],
        *ci["l_inf"],
        report["rmse"],
    )
    if "target" in report:
        t = report["target"]
        log.info("predicted loss at %.3g FLOPs: %.4f (%.4f..%.4f)", t["flops"], t["loss"], *t["ci"])
    for c in report.get("heldout", {}).get("checks", []):
        log.info(
            "held out %s: measured %.4f, predicted %.4f (%+.2f%%)", c["name"], c["loss"], c["predicted"], c["error_pct"]
        )


# ----------------------------------------------------------------------------- run
def _run(args: RunArgs) -> int:
    from cerebras_gpt.data.shards import read_meta
    from cerebras_gpt.experiments.scaling import build_ladder, run_ladder

    meta = read_meta(args.data)
    vocab = int(meta.get("tokenizer", {}).get("vocab_size") or 50257)
    rungs = build_ladder(
        args.widths, args.n_layer, args.head_dim, args.block_size, vocab, args.tokens_per_param, args.count, args.aspect
    )
    for r in rungs:
        log.info("rung %-22s %9d params %11d tokens %.3g FLOPs", r.name, r.plan.params, r.plan.tokens, r.plan.flops)
    rows = run_ladder(rungs, args.out, ladder_train_fn(args))
    if len(rows) >= 3:
        report = fit_report(
            [(r["name"], r["flops"], r["loss"]) for r in rows],
            args.target,
            args.holdout if len(rows) - args.holdout >= 3 else 0,
            0.95,
            str(Path(args.out) / "fit.png"),
            title=f"Scaling ladder on {Path(args.data).name}",
        )
        (Path(args.out) / "fit.json").write_text(json.dumps(report, indent=2) + "\n")
        _print_fit(report)
    return 0


def ladder_train_fn(args: RunArgs):
    """A rung's run: `cerebras_gpt.train` on the rung's shape for its compute-optimal tokens, then the loss
    of the final model on the whole validation split (the same windows for every rung)."""
    from cerebras_gpt.experiments.scaling import Rung

    def train_rung(rung: Rung, run_dir: Path) -> dict:
        import torch

        from cerebras_gpt.evaluate.perplexity import evaluate_prepared
        from cerebras_gpt.hf import load_pretrained
        from cerebras_gpt.train.config import TrainConfig
        from cerebras_gpt.train.loop import train

        if args.threads:
            torch.set_num_threads(args.threads)
        c = rung.config
        steps = max(1, round(rung.plan.tokens / (args.batch_size * args.block_size)))
        cfg = TrainConfig(
            model="debug-tiny",
            data_dir=args.data,
            out_dir=str(run_dir),
            seq_len=args.block_size,
            model_overrides={
                k: str(getattr(c, k)) for k in ("n_layer", "n_embd", "n_head", "block_size", "vocab_size")
            },
            tokens=rung.plan.tokens,
            batch_size=args.batch_size,
            lr=args.lr,
            decay="linear",
            warmup_steps=max(1, round(args.warmup_fraction * steps)),
            seed=args.seed,
            device=args.device,
            tensorboard=False,
            progress=True,
            log_interval=10,
            checkpoint_interval=max(50, steps // 4),
        )
        metrics = train(cfg)
        model = load_pretrained(
            run_dir / "model", device="cuda" if torch.cuda.is_available() and args.device != "cpu" else "cpu"
        )
        val = evaluate_prepared(model, None, args.data, "val", context=args.block_size, batch_size=64).metrics()
        train_metrics = metrics if isinstance(metrics, dict) else {}
        return {
            **{f"train_{k}": v for k, v in train_metrics.items()},
            "val_loss": val["loss"],
            "val_tokens": val["tokens"],
            "steps": steps,
        }

    return train_rung


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    step, rest = argv[0], argv[1:]
    table = {"plan": (PlanArgs, _plan), "fit": (FitArgs, _fit), "run": (RunArgs, _run)}
    if step not in table:
        print(f"cerebras-gpt scaling: unknown step {step!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    cls, body = table[step]
    return run_command(cls, rest, f"cerebras-gpt scaling {step}", body)
