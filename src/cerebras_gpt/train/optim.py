"""AdamW parameter groups (weight decay and μP LR multipliers) and the learning-rate schedule.

Weight decay goes on every matrix (parameters with 2 or more dimensions) and on nothing else: biases and
LayerNorm gains/shifts are excluded. The token embedding (tied with the LM head) and the learned position
table are matrices and *are* decayed: the Cerebras ModelZoo GPT-2/3 model (`gpt2_model.py`,
`_get_adamw_param_groups`-style grouping via `exclude_bias_and_norm_from_weight_decay`) excludes only
biases and norms, and the Cerebras-GPT configs do not exclude embeddings, so we follow them.

Each parameter's LR is the schedule's LR times `cerebras_gpt.mup.lr_multiplier(config, name)` (1 under
SP; 1/m for hidden matrices, d_ffn_base/d_ffn for mlp.c_proj under μP), so groups are keyed by
(multiplier, decayed).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cerebras_gpt import mup
from cerebras_gpt.runtime import canonical_name


def param_groups(model: nn.Module, config, weight_decay: float) -> list[dict]:
    """AdamW groups over ``model``'s trainable parameters (``requires_grad``), tied weights once.

    Each group has ``params``, ``weight_decay``, ``lr_mult`` and ``names``.
    """
    groups: dict[tuple[float, bool], dict] = {}
    for name, p in model.named_parameters():  # named_parameters yields a tied tensor once
        if not p.requires_grad:
            continue
        name = canonical_name(name)
        decay = p.dim() >= 2
        mult = mup.lr_multiplier(config, name) if config is not None else 1.0
        g = groups.setdefault(
            (mult, decay), {"params": [], "names": [], "lr_mult": mult, "weight_decay": weight_decay if decay else 0.0}
        )
        g["params"].append(p)
        g["names"].append(name)
    if not groups:
        raise ValueError("the model has no parameters with requires_grad=True: nothing to train")
    return [groups[k] for k in sorted(groups, key=lambda k: (-k[0], k[1]))]


def build_optimizer(
    model: nn.Module, config, lr: float, betas: tuple[float, float], eps: float, weight_decay: float
) -> torch.optim.AdamW:
    """AdamW (decoupled decay, bias correction) over `param_groups`; LR set per step by `set_lr`."""
    groups = param_groups(model, config, weight_decay)
    for g in groups:
        g["lr"] = lr * g["lr_mult"]
    # The fused kernel: one pass over each parameter's grad and moments instead of the multi-tensor
    # path's several (measured on the CPU: BENCHMARKS.md, "Figures from the code"), and one CUDA
    # launch instead of many on GPU. transformers' Trainer picks it too (torch >= 2.8).
    fusable = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for g in groups for p in g["params"])
    return torch.optim.AdamW(
        groups, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, fused=True if fusable else None
    )


def lr_at(step: int, *, peak: float, warmup: int, total: int, decay: str, min_ratio: float) -> float:
    """LR for optimizer step ``step`` (0-based): linear warmup to ``peak``, then decay to ``min_ratio*peak``.

    Warmup: ``peak * step / warmup`` for ``step < warmup``, the ModelZoo's ``LinearLR`` from 0 (so the first
    update runs at LR 0, as the Cerebras-GPT runs did). ``step`` may be a token count (with ``warmup`` and
    ``total`` in tokens too): `Plan.lr_at` schedules over tokens so a batch switch leaves the LR unchanged.
    Decay over steps ``warmup .. total``: linear or cosine from peak to the floor, reached at ``total``.
    """
    if step < warmup:
        return peak * step / warmup
    floor = peak * min_ratio
    span = max(1, total - warmup)
    frac = min(1.0, (step - warmup) / span)
    if decay == "linear":
        return peak - (peak - floor) * frac
    if decay == "cosine":
        return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * frac))
    if decay == "constant":
        return peak
    raise ValueError(f"decay={decay!r} must be linear, cosine or constant")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_mult", 1.0)
