"""`cerebras-gpt info`: the presets in a table."""

from __future__ import annotations

import dataclasses
import json

from cerebras_gpt.commands import run_command
from cerebras_gpt.config import PRESETS, recipe_for
from cerebras_gpt.flops import paper_flops_per_token


@dataclasses.dataclass
class InfoArgs:
    """List the Cerebras-GPT presets: shapes, exact parameters, training FLOPs per token,
    compute-optimal tokens at 20 per parameter, and the paper's peak LR and batch."""

    json: bool = False
    """Print JSON instead of a table."""
    tokens_per_param: float = 20.0
    """Tokens per parameter for the compute-optimal column (the paper's 20)."""


def _rows(args: InfoArgs) -> list[dict]:
    rows = []
    for name, c in PRESETS.items():
        r = recipe_for(name)
        rows.append(
            {
                "name": name,
                "n_layer": c.n_layer,
                "n_embd": c.n_embd,
                "n_head": c.n_head,
                "head_dim": c.head_dim,
                "ffn_dim": c.ffn_dim,
                "block_size": c.block_size,
                "mup": c.use_mup,
                "params": c.num_params(),
                "flops_per_token": c.flops_per_token(),
                "paper_flops_per_token": paper_flops_per_token(c, 2048),
                "paper_training_flops": r.training_flops if r else None,
                "optimal_tokens": c.compute_optimal_tokens(args.tokens_per_param),
                "paper_peak_lr": r.peak_lr if r else None,
                "paper_batch": r.batch_size if r else None,
                "paper_batch_schedule": r.batch_schedule if r else None,
                "paper_decay": r.decay if r else None,
                "paper_pile_loss": r.pile_test_loss if r else None,
            }
        )
    return rows


def _fmt(n: float) -> str:
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


def info(args: InfoArgs) -> int:
    rows = _rows(args)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = [
        "preset",
        "L",
        "d",
        "heads",
        "d_head",
        "params",
        "FLOPs/tok",
        "tokens@20",
        "paper FLOPs",
        "peak LR",
        "batch",
        "decay",
    ]
    table = [header] + [
        [
            r["name"],
            str(r["n_layer"]),
            str(r["n_embd"]),
            str(r["n_head"]),
            str(r["head_dim"]),
            f"{r['params']:,}",
            f"{r['flops_per_token']:.3g}",
            _fmt(r["optimal_tokens"]),
            f"{r['paper_training_flops']:.2g}" if r["paper_training_flops"] else "-",
            f"{r['paper_peak_lr']:.1e}" if r["paper_peak_lr"] else "-",
            (r["paper_batch_schedule"] or str(r["paper_batch"] or "-")),
            r["paper_decay"] or "-",
        ]
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for i, row in enumerate(table):
        print("  ".join(cell.ljust(w) if j == 0 else cell.rjust(w) for j, (cell, w) in enumerate(zip(row, widths))))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print("\nFLOPs/tok: training FLOPs per token at sequence 2048 (3 x forward, attention included).")
    print(
        "paper FLOPs: the published training FLOPs of the run (paper Table 2 / model cards), which count more "
        "than FLOPs/tok x tokens; see cerebras_gpt/flops.py."
    )
    return 0


def main(argv: list[str]) -> int:
    return run_command(InfoArgs, argv, "cerebras-gpt info", info)
