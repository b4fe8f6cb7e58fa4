"""`cerebras-gpt mup-check`: the μP coordinate check (activation size against width, μP vs SP)."""

from __future__ import annotations

import dataclasses
import logging
from typing import Annotated

import tyro

from cerebras_gpt.commands import run_command
from cerebras_gpt.experiments.coord_check import CoordCheckConfig

log = logging.getLogger(__name__)


@dataclasses.dataclass
class MupCheckArgs:
    """μP coordinate check: train models of growing width for a few steps, under μP and under standard
    parametrization, and record the mean |activation| of every layer and of the logits.

    Under μP the curves stay flat with width; under SP they grow. Prints a table and writes
    coord_check.png, coord_check.csv and coord_check.json to --out.
    """

    out: str = "runs/mup-check"
    """Directory for coord_check.png, coord_check.csv (every measurement) and coord_check.json (summary)."""
    rules: str | None = None
    """Print the μP rules (init stds, LR and forward multipliers) of this preset (e.g. Cerebras-GPT-111M-muP);
    then exit."""
    check: Annotated[CoordCheckConfig, tyro.conf.OmitArgPrefixes] = dataclasses.field(default_factory=CoordCheckConfig)


def format_rules(preset: str) -> str:
    from cerebras_gpt import mup
    from cerebras_gpt.config import GPTConfig

    config = GPTConfig.from_name(preset)
    if not config.use_mup:
        config = mup.to_mup(config)
    lines = [
        f"μP rules for {config.name} (width {config.n_embd}, base {config.mup_base_width}, "
        f"m = {mup.width_multiplier(config):.4g}, {config.n_layer} layers):",
        f"  {'group':<10} {'parameters':<34} {'init std':>10} {'LR x η_base':>12}",
    ]
    for row in mup.rules(config):
        if row["group"] == "forward":
            lines.append(f"  forward    {row['multiplier']:<34} {row['value']:>10.4g}")
        else:
            std = "ones/zeros" if row["init_std"] is None else f"{row['init_std']:.4g}"
            lines.append(f"  {row['group']:<10} {row['params']:<34} {std:>10} {row['lr_multiplier']:>12.4g}")
    return "\n".join(lines)


def run(args: MupCheckArgs) -> int:
    if args.rules is not None:
        print(format_rules(args.rules))
        return 0
    from cerebras_gpt.experiments.coord_check import format_table, run_coord_check, write_outputs

    result = run_coord_check(args.check)
    print(format_table(result))
    paths = write_outputs(result, args.out)
    log.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return 0


def main(argv: list[str]) -> int:
    return run_command(MupCheckArgs, argv, "cerebras-gpt mup-check", run)
