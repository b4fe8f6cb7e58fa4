"""`cerebras-gpt sweep`: grid, random or TPE search (Optuna) over run settings, each trial a `train` run; resumable."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Annotated

import tyro

from cerebras_gpt.commands import run_command
from cerebras_gpt.experiments.sweep import SweepConfig

log = logging.getLogger(__name__)


@dataclasses.dataclass
class SweepArgs:
    """Grid, random or TPE search over training settings (on Optuna): every trial is a `cerebras-gpt train` run.

    Trials write to OUT/trials/<id>/; each finished trial adds a line to OUT/results.jsonl, and
    OUT/results.csv (best first) and OUT/best.json are rewritten. The study is OUT/study.db (or --storage
    URL). Run the same command again to resume: finished trials are skipped, a trial whose worker died is
    run again from its last checkpoint. The same command started twice (or on several machines sharing
    --storage) runs the trials once between the workers.

    Example (the μP proxy tuning: η_base on a small model, then reuse it at every width):
      cerebras-gpt sweep --base configs/mup/proxy.yaml \
          --grid lr=2.5e-3,5e-3,1e-2,2e-2,4e-2 model_overrides.n_embd=32,64,128
    """

    sweep: Annotated[SweepConfig, tyro.conf.OmitArgPrefixes] = dataclasses.field(default_factory=SweepConfig)
    plot_x: str | None = None
    """Also plot the sweep's metric against this swept key (log axis), e.g. lr, into OUT/sweep.png."""
    plot_series: str | None = None
    """With --plot-x: one line per value of this swept key, e.g. model_overrides.n_embd."""


def run(args: SweepArgs) -> int:
    from cerebras_gpt.experiments.sweep import best_index, curves, plot_curves, run_sweep

    cfg = args.sweep
    result = run_sweep(cfg)
    done = sum(r["status"] == "ok" for r in result.rows)
    print(
        f"sweep {cfg.out}: {len(result.ran)} trials run now, {len(result.skipped)} already recorded, "
        f"{len(result.pending)} left; {done} finished OK"
    )
    if result.best:
        print(
            f"best trial {result.best['trial']}: {cfg.metric} = {result.best['metrics'][cfg.metric]:.4f} "
            f"with {result.best['settings']}"
        )
    else:
        print(f"no trial has finished with a finite {cfg.metric} yet")
    if args.plot_x:
        if not args.plot_series:
            raise ValueError("--plot-x needs --plot-series (the swept key that tells the lines apart)")
        path = plot_curves(
            {Path(cfg.out).name: result.rows}, args.plot_x, args.plot_series, cfg.metric, Path(cfg.out) / "sweep.png"
        )
        for series, pts in curves(result.rows, args.plot_x, args.plot_series, cfg.metric).items():
            print(
                f"  {args.plot_series}={series}: best {args.plot_x} = {pts[best_index(pts)][0]:g} "
                f"(index {best_index(pts)} of {len(pts)})"
            )
        log.info("wrote %s", path)
    print(f"table: {Path(cfg.out) / 'results.csv'}")
    return 0


def main(argv: list[str]) -> int:
    return run_command(SweepArgs, argv, "cerebras-gpt sweep", run)
