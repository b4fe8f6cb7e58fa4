"""What a training run says while it works: the plan at start, a line per evaluation and per checkpoint,
a summary at the end with the commands to go on, and where to resume from after Ctrl-C.

Lines go through the ``cerebras_gpt.train`` logger (rank 0 only logs; under the progress bar they are
printed above it). `metrics.jsonl` keeps the same figures for machines.
"""

from __future__ import annotations

import logging
import math
import shlex
from pathlib import Path
from typing import Any

log = logging.getLogger("cerebras_gpt.train")

# A validation split smaller than this many windows gives a noisy val loss: say so before training.
TINY_VAL_WINDOWS = 4


def shown_mfu(mfu: float) -> float:
    """MFU as shown: at most 100%. More means the peak was under-measured (a noisy machine), not a faster run."""
    return min(max(mfu, 0.0), 1.0)


def plan_header(plan_text: str, out_dir: str | Path, device: str, peak_flops: float, source: str) -> str:
    return (
        f"training plan\n{plan_text}\nrun directory  {out_dir}\n"
        f"device         {device}, peak {peak_flops / 1e12:.3f} TFLOP/s for MFU ({source})"
    )


def eval_line(step: int, total: int, val_loss: float, tokens_per_s: float, mfu: float) -> str:
    return (
        f"step {step:,}/{total:,}  val loss {val_loss:.4f}  perplexity {math.exp(min(val_loss, 700)):.2f}  "
        f"{tokens_per_s:,.0f} tokens/s  MFU {shown_mfu(mfu):.1%}"
    )


def checkpoint_line(path: str | Path, step: int) -> str:
    return f"step {step:,}: checkpoint saved to {path}"


def val_split_warning(data_dir: str | Path, windows: int, seq_len: int) -> str | None:
    """A warning when the validation split is empty or tiny (None when it is fine)."""
    if windows >= TINY_VAL_WINDOWS:
        return None
    what = "has no" if windows == 0 else f"has only {windows}"
    fix = (
        "prepare the text with --paragraphs (one document per paragraph) or with more documents, so that "
        "the hash-based split sends some to val"
    )
    return (
        f"warning: the val split of {data_dir} {what} {seq_len}-token window{'s' if windows != 1 else ''}: "
        + (
            "training runs without validation (val_loss stays empty); "
            if windows == 0
            else "its val loss will be noisy; "
        )
        + fix
    )


def summary(result: dict[str, Any], data_dir: str | None) -> str:
    """The end of a run in words, with the commands that use what it wrote."""
    if result.get("already_complete"):
        head = f"the run in {result.get('out_dir')} was already complete"
    else:
        head = f"trained {result.get('steps', 0):,} steps ({result.get('tokens', 0):,} tokens)"
    lines = [head]
    if result.get("final_loss") is not None and math.isfinite(result["final_loss"]):
        lines.append(f"  final train loss {result['final_loss']:.4f}")
    if result.get("val_loss") is not None:
        lines.append(f"  val loss {result['val_loss']:.4f}, perplexity {result['val_ppl']:.2f}")
    if result.get("tokens_per_s"):
        lines.append(f"  {result['tokens_per_s']:,.0f} tokens/s, MFU {shown_mfu(result.get('mfu') or 0.0):.1%}")
    model_dir, out_dir = result.get("model_dir"), result.get("out_dir")
    lines += [
        f"  model        {model_dir}  (a Hugging Face GPT-2 directory)",
        f"  checkpoint   {result.get('checkpoint')}",
    ]
    if model_dir:
        q = shlex.quote
        lines += ["next:", f"  cerebras-gpt generate --model {q(model_dir)} --prompt 'Hello'"]
        if data_dir:
            lines.append(f"  cerebras-gpt eval --model {q(model_dir)} --data-dir {q(str(data_dir))}")
        lines.append(f"  rerun the same command with --out {q(str(out_dir))} to continue a run stopped early")
    return "\n".join(lines)


def interrupted(out_dir: str | Path | None) -> str:
    """What to do after Ctrl-C: the checkpoint a rerun continues from."""
    from cerebras_gpt.train import checkpoint

    if out_dir is None or not Path(out_dir).exists():
        return "interrupted before the run directory was made: nothing to resume"
    latest = checkpoint.latest_checkpoint(out_dir)
    if latest is None:
        return f"interrupted before the first checkpoint in {out_dir}: a rerun starts from the beginning"
    return (
        f"interrupted: the latest checkpoint is {latest}; run the same command with "
        f"--out {shlex.quote(str(out_dir))} to resume from it"
    )
