"""The micro-batch that fits: ``--micro-batch-size auto`` (and the default when the whole batch does not fit).

The paper's batches (120 x 2048 tokens for 111M, up to 1080 x 2048 for 13B) are global batches for a wafer;
on a GPU or CPU each rank runs them as micro-batches with gradient accumulation, which gives the same step
(tests/train/test_train_core.py checks accumulation equivalence). The choice is the largest divisor of the per-rank
batch (of every phase of a batch schedule) whose estimated training memory fits the budget, then checked by
one real forward and backward at that size: an out-of-memory error moves on to the next smaller divisor.

The estimate, in bytes, for fp32 weights and AdamW: 16 per parameter (weight, gradient, two moments) plus,
per sequence of T tokens, the activations of L layers, 34·T·d bytes each at 16-bit (Korthikanti et al. 2022,
"Reducing Activation Recomputation"; twice that in fp32; their 5·h·T² attention-score term is left out
because SDPA's fused kernels do not keep the scores), and the logits with their softmax and gradient,
3·T·V fp32 values. The probe settles what the estimate cannot know (allocator slack, kernels' workspaces).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Callable

from cerebras_gpt.config import GPTConfig

log = logging.getLogger("cerebras_gpt.train")

# Of the memory free now, what a run may plan to use (the rest: allocator slack, other processes).
BUDGET_FRACTION = 0.85


def step_memory_bytes(config: GPTConfig, micro_batch: int, seq_len: int, activation_bytes: int = 4) -> int:
    """Estimated peak memory of one training step at ``micro_batch`` sequences of ``seq_len`` tokens."""
    d, layers, vocab = config.n_embd, config.n_layer, config.vocab_size
    states = 16 * config.num_params()
    per_layer = 34 * seq_len * d * activation_bytes // 2
    logits = 3 * seq_len * vocab * 4
    return int(states + micro_batch * (layers * per_layer + logits))


def memory_budget(device) -> int:
    """Bytes a run may plan to use on ``device``: a share of what is free now (GPU) or available (CPU).
    ``CEREBRAS_GPT_MEMORY_BUDGET_GB`` overrides it (e.g. to leave room for other jobs)."""
    override = os.environ.get("CEREBRAS_GPT_MEMORY_BUDGET_GB")
    if override:
        try:
            gb = float(override)
        except ValueError:
            raise ValueError(f"CEREBRAS_GPT_MEMORY_BUDGET_GB={override!r} must be a number of GB, e.g. 20") from None
        if not gb > 0:
            raise ValueError(f"CEREBRAS_GPT_MEMORY_BUDGET_GB={override!r} must be positive")
        return int(gb * 1e9)
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free * BUDGET_FRACTION)
    return int(_available_ram() * BUDGET_FRACTION)


def _available_ram() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def divisors_descending(per_rank_batches: list[int]) -> list[int]:
    """Micro-batch sizes that divide every phase's per-rank batch, largest first."""
    g = math.gcd(*per_rank_batches)
    return sorted((m for m in range(1, g + 1) if g % m == 0), reverse=True)


def is_out_of_memory(error: BaseException) -> bool:
    import torch

    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text or "not enough memory" in text
    )


def probe_step(config: GPTConfig, micro_batch: int, seq_len: int, device, dtype: str) -> None:
    """One forward and backward of a fresh model at this size on ``device`` (raises on out-of-memory)."""
    import torch
    import torch.nn.functional as F

    from cerebras_gpt.model import GPT
    from cerebras_gpt.runtime import autocast_context

    model = GPT(config, init_weights=False).to(device)
    try:
        x = torch.randint(0, config.vocab_size, (micro_batch, seq_len + 1), device=device)
        with autocast_context(device, dtype):
            logits = model(x[:, :-1])
        F.cross_entropy(logits.float().flatten(0, 1), x[:, 1:].flatten()).backward()
    finally:
        del model
        if getattr(device, "type", str(device)) == "cuda":
            torch.cuda.empty_cache()


def choose_micro_batch(
    config: GPTConfig,
    per_rank_batches: list[int],
    seq_len: int,
    device,
    dtype: str,
    budget: int | None = None,
    probe: Callable[[int], None] | None = None,
) -> tuple[int, str]:
    """The largest micro-batch that fits, and a line saying how it was chosen.

    ``probe(m)`` runs one step at micro-batch ``m`` (default: `probe_step` on ``device``); an out-of-memory
    error from it rules ``m`` out.
    """
    budget = memory_budget(device) if budget is None else budget
    half = getattr(device, "type", str(device)) == "cuda" and dtype != "float32"
    act_bytes = 2 if half else 4
    probe = probe or (lambda m: probe_step(config, m, seq_len, device, dtype))
    fitting = [
        m for m in divisors_descending(per_rank_batches) if step_memory_bytes(config, m, seq_len, act_bytes) <= budget
    ]
    if not fitting:
        need = step_memory_bytes(config, 1, seq_len, act_bytes)
        raise ValueError(
            f"even a micro-batch of 1 sequence of {seq_len} tokens needs about {need / 1e9:.1f} GB, "
            f"more than the {budget / 1e9:.1f} GB this device has free: use a shorter --seq-len, "
            "--activation-checkpointing, --fsdp over more GPUs, or a smaller model"
        )
    for m in fitting:
        try:
            probe(m)
        except Exception as e:  # noqa: BLE001  (out-of-memory comes as several exception types)
            if not is_out_of_memory(e):
                raise
            log.info("micro-batch %d ran out of memory in the probe; trying a smaller one", m)
            continue
        estimate = step_memory_bytes(config, m, seq_len, act_bytes)
        return m, (f"auto: the largest that fits {budget / 1e9:.1f} GB (estimated {estimate / 1e9:.2f} GB, probed)")
    raise ValueError(
        f"every micro-batch down to 1 ran out of memory on {device}: use a shorter --seq-len, "
        "--activation-checkpointing, --fsdp over more GPUs, or a smaller model"
    )


def whole_batch_fits(config: GPTConfig, per_rank_batch: int, seq_len: int, device, dtype: str) -> bool:
    half = getattr(device, "type", str(device)) == "cuda" and dtype != "float32"
    return step_memory_bytes(config, per_rank_batch, seq_len, 2 if half else 4) <= memory_budget(device)


def fit_plan(plan, micro_batch_size, device, dtype: str):
    """(``plan`` with a micro-batch the device holds, how it was chosen or None when left as planned):
    ``auto`` always chooses; None keeps the whole per-rank batch when its estimate fits, else chooses;
    an explicit size is kept."""
    if isinstance(micro_batch_size, int) or (
        micro_batch_size is None and whole_batch_fits(plan.model_config, plan.micro_batch, plan.seq_len, device, dtype)
    ):
        return plan, None
    per_rank = [p.global_batch // plan.world_size for p in plan.batch_phases]
    chosen, how = choose_micro_batch(plan.model_config, per_rank, plan.seq_len, device, dtype)
    return with_micro_batch(plan, chosen), how


def with_micro_batch(plan, micro_batch: int):
    """``plan`` running ``micro_batch`` sequences per forward pass (the rest accumulated)."""
    per_rank = plan.global_batch // plan.world_size
    return dataclasses.replace(plan, micro_batch=micro_batch, accum_steps=per_rank // micro_batch)
