"""A real scaling ladder on this machine: five sizes trained compute-optimally, the fitted law, a held-out check.

What it does, in a scratch directory (``--work``):
1. the built-in byte-level tokenizer (``--tokenizer bytes``: 256 bytes + ``<|endoftext|>``, vocabulary 257), so that at widths 16-64
   the LM head does not dominate the FLOPs as GPT-2's 50,257-entry head would;
2. ``cerebras-gpt prepare`` of ../shared/data (tinyshakespeare + WikiText-2 valid, split into paragraphs,
   5% of paragraphs held out for validation);
3. ``cerebras-gpt scaling run --config configs/scaling/ladder-cpu.yaml``: each rung trained through
   `cerebras_gpt.train` on 20 tokens per parameter, then scored on the whole validation split;
4. the fit ``L(C) = (C/C0)^-α + L∞`` on every rung, and on all but the largest to predict it.

Results go to bench/results/scaling/ (runs.jsonl, fit.json, fit.png, fit-heldout.png) and to the
BENCHMARKS.md section ``results-scaling``. Run it alone: ``flock /tmp/bench.lock .venv/bin/python bench/scaling.py``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from scripts.update_section import update_section  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "scaling"
SHARED = ROOT.parent / "shared" / "data"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="/tmp/cerebras-gpt-bench-scaling", help="scratch directory (resumable)")
    parser.add_argument("--config", default=str(ROOT / "configs" / "scaling" / "ladder-cpu.yaml"))
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    parser.add_argument(
        "--fit-only",
        action="store_true",
        help="no training: fit the rungs already recorded in WORK/ladder again (after a fit change)",
    )
    args = parser.parse_args()
    if not (SHARED / "tinyshakespeare.txt").exists():
        raise SystemExit(f"{SHARED} is absent: this benchmark trains on ../shared/data")

    from cerebras_gpt.commands.scaling import main as scaling_main
    from cerebras_gpt.data.prepare import prepare
    from cerebras_gpt.experiments.scaling import read_runs

    work = Path(args.work)
    data = work / "data"
    prepare(
        [str(SHARED / "tinyshakespeare.txt"), str(SHARED / "wikitext-2-valid.txt")],
        data,
        tokenizer="bytes",
        paragraphs=True,
        val_fraction=0.05,
        workers=1,
        seq_len=128,
        progress=False,
    )
    out = work / "ladder"
    start = time.time()
    if args.fit_only:
        from cerebras_gpt.commands.scaling import fit_report

        rows = read_runs(out)
        report = fit_report(
            [(r["name"], r["flops"], r["loss"]) for r in rows],
            1e14,
            1,
            0.95,
            str(out / "fit.png"),
            title="Scaling ladder: byte-level tinyshakespeare + WikiText-2",
        )
        (out / "fit.json").write_text(json.dumps(report, indent=2) + "\n")
        wall = sum(r["seconds"] for r in rows)
    else:
        rc = scaling_main(["run", "--config", args.config, "--data", str(data), "--out", str(out), "--target", "1e14"])
        if rc:
            return rc
        wall = time.time() - start
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name in ("fit.json", "fit.png", "fit-heldout.png"):
        shutil.copyfile(out / name, RESULTS / name)
    rows = read_runs(out)
    (RESULTS / "runs.jsonl").write_text(
        "".join(json.dumps({k: r[k] for k in r if k != "architecture"}) + "\n" for r in rows)
    )
    fit = json.loads((out / "fit.json").read_text())
    if not args.no_write:
        update_section(ROOT / "BENCHMARKS.md", "results-scaling", render(rows, fit, wall, args.config))
    print(json.dumps({"law": fit["law"], "heldout": fit.get("heldout", {}).get("checks")}, indent=2))
    return 0


def render(rows: list[dict], fit: dict, wall: float, config: str) -> str:
    ci = fit["ci"]
    lines = [
        "## Results: a compute-optimal scaling ladder on this machine",
        "",
        f"{len(rows)} GPT shapes (2 layers, widths {', '.join(str(r['n_embd']) for r in rows)}, heads of 8, context 128) "
        "each trained on 20 tokens per parameter (the paper's rule) through `cerebras_gpt.train` (AdamW, "
        "linear warmup 5%, linear decay to 10%, LR 3e-3, batch 16 x 128), on byte-level ../shared/data "
        "(tinyshakespeare + WikiText-2 valid, 2.1M training bytes; 5% of paragraphs held out, 116K bytes). "
        "Loss is the final model's mean loss over the whole held-out split in nats per byte. FLOPs are "
        "`GPTConfig.flops_per_token(128)` x tokens (forward + backward, attention included).",
        "",
        "| rung | params | tokens | FLOPs | val loss (nats/byte) | fit | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    fitted = {p["label"]: p["fit"] for p in fit["points"]}
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['params']:,} | {r['tokens']:,} | {r['flops']:.3g} | {r['loss']:.4f} | "
            f"{fitted.get(r['name'], float('nan')):.4f} | {r['seconds']:.0f} |"
        )
    lines += [
        "",
        f"Fit on all {len(rows)}: **{fit['law']}** (95% CI: α {ci['alpha'][0]:.3f}..{ci['alpha'][1]:.3f}, "
        f"L∞ {ci['l_inf'][0]:.3f}..{ci['l_inf'][1]:.3f}; rmse {fit['rmse']:.4f}). "
        f"Predicted loss at 1e14 FLOPs: {fit['target']['loss']:.4f} "
        f"({fit['target']['ci'][0]:.4f}..{fit['target']['ci'][1]:.4f}).",
        "",
    ]
    for c in fit.get("heldout", {}).get("checks", []):
        h = fit["heldout"]["fit"]
        lines.append(
            f"Held-out check (the paper's 13B test, in small): fitted on the {len(rows) - 1} smaller rungs, "
            f"{h['law']}, predicts {c['predicted']:.4f} for {c['name']}; measured {c['loss']:.4f}: "
            f"**error {c['error_pct']:+.2f}%** (95% band {c['ci'][0]:.4f}..{c['ci'][1]:.4f})."
        )
    lines += [
        "",
        "Reading: loss falls with compute along a power law (exponent α ≈ 0.11) across two "
        "decades, but rungs this small are noisy around it (residuals up to 0.09 nats/byte, alternating in sign), "
        "so five points leave the three parameters loosely determined: the intervals are wide, L∞ sits at its "
        "bound 0, and the held-out error is several percent, not the paper's 0.5% from runs of 10^18-10^22 "
        "FLOPs. The paper's own points, fitted the same way, are below.",
        "",
        "![scaling fit](bench/results/scaling/fit.png)",
        "![held-out fit](bench/results/scaling/fit-heldout.png)",
        "",
        f"Whole ladder: {wall / 60:.1f} min of training on {platform.machine()} ({platform.processor() or 'CPU'}), "
        "a shared 2-core machine, one torch thread. Per-rung records: bench/results/scaling/runs.jsonl.",
        "",
        "```",
        "flock /tmp/bench.lock .venv/bin/python bench/scaling.py",
        f"# = prepare (byte tokenizer) + cerebras-gpt scaling run --config {Path(config).relative_to(ROOT)} "
        "--data DIR --out DIR --target 1e14",
        "```",
        "",
        "The paper's own seven points, for comparison: `cerebras-gpt scaling fit --paper --holdout 1` gives "
        "L(C) = (C / 6.471e+22)^-0.0733 + 0.5013 (published: 5.984e22, 0.0737, 0.5066; the two agree within "
        "0.2% over 111M-13B) and, fitted on 111M-6.7B, predicts 13B at 1.597 against 1.572 measured (+1.57%).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
