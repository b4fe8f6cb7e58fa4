"""`cerebras-gpt finetune`: full or LoRA fine-tuning on prompt/completion, chat or text records."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Annotated

import tyro

from cerebras_gpt.commands import run_command
from cerebras_gpt.finetune.run import FinetuneArgs


@dataclasses.dataclass
class FinetuneCommandArgs(FinetuneArgs):
    __doc__ = FinetuneArgs.__doc__

    out_dir: Annotated[str | None, tyro.conf.arg(name="out")] = None
    """Run directory: model/, adapter/, checkpoints/, metrics.jsonl, finetune_results.json (default: a new
    runs/<model>-<YYYYmmdd-HHMMSS> per run; pass it again to resume). --out-dir is the old spelling."""


def run(args: FinetuneArgs) -> int:
    from cerebras_gpt.finetune.run import finetune
    from cerebras_gpt.train import distributed
    from cerebras_gpt.train.loop import TrainingDiverged

    try:
        result = finetune(args)
    except TrainingDiverged as e:
        raise ValueError(str(e)) from e
    finally:
        distributed.teardown()
    if int(os.environ.get("RANK", "0")) == 0:  # torchrun: rank 0 prints
        print(json.dumps(result, indent=2, default=str))
    return 0


def main(argv: list[str]) -> int:
    return run_command(FinetuneCommandArgs, argv, "cerebras-gpt finetune", run)
