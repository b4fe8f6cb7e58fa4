"""The one place where every numeric training and fine-tuning option is checked: finite and in range.

`check_numbers(cfg)` collects every problem and raises one ValueError naming each option, its value and
the allowed range, before anything is built or written. `TrainConfig` and `FinetuneArgs` both pass
through it (the loop calls it; `FinetuneArgs.check` too, for the fine-tuning options).
"""

from __future__ import annotations

import math
from typing import Any

INF = math.inf

# option -> (low, high, low_inclusive): None values are "from the recipe" and not checked here.
TRAIN_RANGES: dict[str, tuple[float, float, bool]] = {
    "seq_len": (1, INF, True),
    "tokens": (1, INF, True),
    "steps": (1, INF, True),
    "tokens_per_param": (0, INF, False),
    "batch_size": (1, INF, True),
    "micro_batch_size": (1, INF, True),
    "lr": (0, INF, True),  # 0 is a legitimate probe (e.g. early-stopping tests); inf and NaN are not
    "warmup_steps": (0, INF, True),
    "min_lr_ratio": (0, 1, True),
    "eps": (0, INF, False),
    "weight_decay": (0, INF, True),
    "grad_clip": (0, INF, True),
    "max_bad_steps": (1, INF, True),
    "eval_interval": (0, INF, True),
    "eval_batches": (1, INF, True),
    "log_interval": (1, INF, True),
    "checkpoint_interval": (0, INF, True),
    "keep_last": (0, INF, True),
    "stop_at_step": (1, INF, True),
    "time_limit_minutes": (0, INF, False),
    "seed": (0, 2**63 - 1, True),
}
FINETUNE_RANGES: dict[str, tuple[float, float, bool]] = {
    "val_fraction": (0, 1, True),
    "epochs": (0, INF, False),
    "early_stopping_patience": (0, INF, True),
    "max_new_tokens": (1, INF, True),
}
INTEGER_OPTIONS = {
    "seq_len",
    "tokens",
    "steps",
    "batch_size",
    "micro_batch_size",
    "warmup_steps",
    "max_bad_steps",
    "eval_interval",
    "eval_batches",
    "log_interval",
    "checkpoint_interval",
    "keep_last",
    "stop_at_step",
    "seed",
    "early_stopping_patience",
    "max_new_tokens",
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _range_text(low: float, high: float, low_inclusive: bool) -> str:
    lower = f">= {low:g}" if low_inclusive else f"> {low:g}"
    return lower if high == INF else f"{lower} and <= {high:g}"


def problems_in(values: dict[str, Any], ranges: dict[str, tuple[float, float, bool]]) -> list[str]:
    """One message per option of ``values`` that is not a finite number in its range."""
    problems = []
    for name, (low, high, low_inclusive) in ranges.items():
        value = values.get(name)
        if value is None:
            continue
        allowed = _range_text(low, high, low_inclusive)
        kind = "an integer" if name in INTEGER_OPTIONS else "a finite number"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            also = " or auto" if name == "micro_batch_size" else ""
            problems.append(f"{_flag(name)} {value!r} must be {kind} {allowed}{also}")
            continue
        if name in INTEGER_OPTIONS and not float(value).is_integer():
            problems.append(f"{_flag(name)} {value!r} must be an integer {allowed}")
            continue
        if not math.isfinite(value) or value < low or (value == low and not low_inclusive) or value > high:
            problems.append(f"{_flag(name)} {value!r} is out of range: it must be {kind} {allowed}")
    return problems


def train_problems(cfg: Any) -> list[str]:
    """The numeric problems of a `TrainConfig` (or anything with its fields), betas and sparsity included."""
    values = {name: getattr(cfg, name, None) for name in TRAIN_RANGES}
    if values.get("micro_batch_size") == "auto":
        values["micro_batch_size"] = None  # chosen at run time (train/micro_batch.py)
    problems = problems_in(values, TRAIN_RANGES)
    betas = getattr(cfg, "betas", None)
    if betas is not None:
        if len(betas) != 2 or not all(
            isinstance(b, (int, float)) and not isinstance(b, bool) and math.isfinite(b) and 0 <= b < 1 for b in betas
        ):
            problems.append(f"--betas {list(betas)!r} must be two finite numbers >= 0 and < 1")
    sparsity = getattr(cfg, "sparsity", None)
    level = getattr(sparsity, "sparsity", None)
    if isinstance(level, (int, float)) and not (math.isfinite(level) and 0 <= level < 1):
        problems.append(f"--sparsity.sparsity {level!r} is out of range: it must be a finite number >= 0 and < 1")
    return problems


def check_numbers(cfg: Any, extra_ranges: dict[str, tuple[float, float, bool]] | None = None) -> None:
    """Raise one ValueError listing every out-of-range numeric option of ``cfg`` (a TrainConfig or FinetuneArgs)."""
    problems = train_problems(cfg)
    if extra_ranges:
        problems += problems_in({name: getattr(cfg, name, None) for name in extra_ranges}, extra_ranges)
    if problems:
        raise ValueError("; ".join(problems))


__all__ = ["FINETUNE_RANGES", "TRAIN_RANGES", "check_numbers", "problems_in", "train_problems"]
