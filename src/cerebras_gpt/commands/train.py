"""`cerebras-gpt train`: pretrain with the Cerebras-GPT recipe (also under torchrun, DDP or --fsdp)."""

from __future__ import annotations

import dataclasses
import json
import logging

from cerebras_gpt.commands import run_command
from cerebras_gpt.train.config import TrainConfig


@dataclasses.dataclass
class TrainArgs(TrainConfig):
    """Pretrain a Cerebras-GPT model on prepared data with the paper's recipe (20 tokens/parameter by default).

    Under `torchrun --nproc-per-node N -m cerebras_gpt train ...` it runs data-parallel (DDP, or FSDP2 with
    --fsdp). A run directory is resumed automatically from its latest checkpoint.
    """

    dry_run: bool = False
    """Print the plan (size, tokens, steps, batch, FLOPs, measured time estimate) and exit."""


def run(args: TrainArgs) -> int:
    import os

    if os.environ.get("RANK", "0") != "0":  # rank 0 alone logs
        logging.getLogger().setLevel(logging.WARNING)
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in dataclasses.asdict(args).items() if k in fields})
    cfg.sparsity = args.sparsity
    if args.dry_run:
        from cerebras_gpt.train.recipe import dry_run

        print(dry_run(cfg))
        return 0
    from cerebras_gpt.train import distributed
    from cerebras_gpt.train.loop import TrainingDiverged, train

    try:
        result = train(cfg)
    except TrainingDiverged as e:
        raise ValueError(str(e)) from e
    finally:
        distributed.teardown()
    if result.get("steps") is not None:
        summary = {k: v for k, v in result.items() if k != "plan"}
        logging.getLogger("cerebras_gpt.train").info(json.dumps(summary, default=str))
    return 0


def main(argv: list[str]) -> int:
    return run_command(TrainArgs, argv, "cerebras-gpt train", run)
