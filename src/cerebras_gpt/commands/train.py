"""`cerebras-gpt train`: pretrain with the Cerebras-GPT recipe (also under torchrun, DDP or --fsdp)."""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from typing import Annotated

import tyro

from cerebras_gpt.commands import run_command
from cerebras_gpt.train.config import TrainConfig


@dataclasses.dataclass
class TrainArgs(TrainConfig):
    """Pretrain a Cerebras-GPT model on prepared data with the paper's recipe (20 tokens/parameter by default).

    Under `torchrun --nproc-per-node N -m cerebras_gpt train ...` it runs data-parallel (DDP, or FSDP2 with
    --fsdp). A run directory is resumed automatically from its latest checkpoint.
    """

    model: str | None = None  # type: ignore[assignment]  # the library's default is a debug preset; the CLI asks
    """Preset name (required; `cerebras-gpt info` lists them), e.g. Cerebras-GPT-111M, or debug-small for a
    quick CPU run."""
    out_dir: Annotated[str | None, tyro.conf.arg(name="out")] = None
    """Run directory: checkpoints/, metrics.jsonl, model/ (default: a new runs/<model>-<YYYYmmdd-HHMMSS>; pass
    it again to resume). --out-dir is the old spelling."""
    dry_run: bool = False
    """Print the plan (size, tokens, steps, batch, FLOPs, measured time estimate) and exit."""


def run(args: TrainArgs) -> int:
    if os.environ.get("RANK", "0") != "0":  # rank 0 alone logs
        logging.getLogger().setLevel(logging.WARNING)
    if args.model is None:
        from cerebras_gpt.config import PRESETS

        raise ValueError(
            "no model given: pass --model NAME (or `model:` in --config), one of "
            f"{', '.join(PRESETS)}; e.g. --model debug-small for a quick CPU run"
        )
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in dataclasses.asdict(args).items() if k in fields})
    cfg.sparsity = args.sparsity
    if args.dry_run:
        from cerebras_gpt.train.recipe import dry_run

        print(dry_run(cfg))
        return 0
    from cerebras_gpt.train import distributed, report, rundir
    from cerebras_gpt.train.loop import TrainingDiverged, train

    if not cfg.out_dir and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        cfg = rundir.with_out_dir(cfg)  # named here so that Ctrl-C can say where to resume (torchrun: rank 0 names it)
    try:
        result = train(cfg)
    except TrainingDiverged as e:
        raise ValueError(str(e)) from e
    except KeyboardInterrupt:
        print(f"cerebras-gpt train: {report.interrupted(cfg.out_dir)}", file=sys.stderr)
        return 130
    finally:
        distributed.teardown()
    if result.get("steps") is not None and os.environ.get("RANK", "0") == "0":
        print(report.summary(result, cfg.data_dir))  # the same figures are in results.json, for machines
    return 0


def main(argv: list[str]) -> int:
    return run_command(TrainArgs, argv, "cerebras-gpt train", run)
