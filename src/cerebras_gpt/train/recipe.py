"""The paper's recipe as run defaults, and the compute-optimal plan of a run (`resolve` -> `Plan`).

Defaults (facts file §2, ModelZoo `configs/Cerebras_GPT/*.yaml`): AdamW β=(0.9, 0.95), weight decay 0.1,
clipping 1.0, linear warmup, then linear (111M, 256M, 590M, 6.7B) or cosine (1.3B, 2.7B, 13B) decay to 10%
of peak, and 20 tokens per parameter.

Rule for sizes the paper did not train (debug presets, overridden shapes): the peak LR, decay shape, ε and
warmup come from the paper size nearest in log(parameter count) (so everything under ~180M takes the
111M recipe: 6e-4, linear, ε 1e-8); μP runs take η_base 6e-3 for every size, as all five μP runs did. The
warmup is the paper's *fraction* of the run (1525/9037 = 16.9% for 111M), which gives exactly the paper's
warmup steps at the paper's batch and budget and scales to shorter runs. The global batch is the paper's
for a paper preset and 32 sequences otherwise.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import yaml

from cerebras_gpt.config import RECIPES, GPTConfig, PaperRecipe, recipe_for
from cerebras_gpt.train.config import TrainConfig

DEFAULT_BATCH = 32


@dataclass
class Plan:
    """A run resolved to numbers: what `--dry-run` prints and what the loop follows."""

    model_config: GPTConfig
    params: int
    seq_len: int
    global_batch: int
    """Sequences per optimizer step, all ranks."""
    micro_batch: int
    """Sequences per rank per forward pass."""
    accum_steps: int
    world_size: int
    total_steps: int
    tokens: int
    """Tokens actually trained on: total_steps x global_batch x seq_len."""
    lr: float
    warmup_steps: int
    decay: str
    min_lr_ratio: float
    eps: float
    flops_per_token: int
    recipe_source: str
    """Which paper recipe (or rule) the defaults came from."""

    @property
    def tokens_per_step(self) -> int:
        return self.global_batch * self.seq_len

    @property
    def total_flops(self) -> float:
        return float(self.flops_per_token) * self.tokens

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["model_config"] = self.model_config.to_dict()
        d.update(tokens_per_step=self.tokens_per_step, total_flops=self.total_flops)
        return d


def _parse_override(value: Any) -> Any:
    return yaml.safe_load(value) if isinstance(value, str) else value


def build_model_config(cfg: TrainConfig) -> GPTConfig:
    """The GPTConfig of the run: the preset, the overrides, and use_mup when ``cfg.mup``."""
    from cerebras_gpt import mup

    overrides = {k: _parse_override(v) for k, v in cfg.model_overrides.items()}
    known = {f.name for f in dataclasses.fields(GPTConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"model_overrides {unknown} are not GPTConfig fields; valid fields are {sorted(known)}")
    config = GPTConfig.from_name(cfg.model, **overrides)
    if cfg.mup and not config.use_mup:
        config = mup.to_mup(config)
    return config


def nearest_recipe(config: GPTConfig) -> tuple[str, PaperRecipe]:
    """The paper recipe of ``config``'s preset, else of the SP paper size nearest in log(parameters)."""
    own = recipe_for(config)
    if own is not None:
        return config.name, own
    n = config.num_params()
    sp = {k: v for k, v in RECIPES.items() if not k.endswith("-muP")}
    name = min(sp, key=lambda k: abs(math.log(n) - math.log(GPTConfig.from_name(k).num_params())))
    return name, sp[name]


def resolve(cfg: TrainConfig, world_size: int = 1, model_config: GPTConfig | None = None) -> Plan:
    """Resolve ``cfg`` into a `Plan` for ``world_size`` data-parallel ranks.

    Raises:
        ValueError: a batch that does not divide over ranks and micro-batches, a sequence longer than the
            model's context, or a budget under one step.
    """
    from cerebras_gpt import mup

    config = model_config or build_model_config(cfg)
    source, recipe = nearest_recipe(config)
    seq_len = cfg.seq_len or min(config.block_size, 2048)
    if seq_len > config.block_size:
        raise ValueError(f"seq_len={seq_len} exceeds the model's context block_size={config.block_size}; "
                         "lower --seq-len or override block_size")
    if cfg.batch_size is not None:
        global_batch = cfg.batch_size
    else:
        global_batch = recipe.batch_size if recipe_for(config) is not None else DEFAULT_BATCH
    per_rank, rem = divmod(global_batch, world_size)
    if rem or per_rank == 0:
        raise ValueError(f"batch_size={global_batch} does not divide over {world_size} ranks; "
                         f"use a multiple of {world_size}")
    micro = cfg.micro_batch_size or per_rank
    if per_rank % micro:
        raise ValueError(f"micro_batch_size={micro} does not divide the per-rank batch {per_rank} "
                         f"(batch_size {global_batch} / {world_size} ranks)")
    tokens_per_step = global_batch * seq_len
    if cfg.steps is not None:
        steps = cfg.steps
    elif cfg.tokens is not None:
        steps = math.ceil(cfg.tokens / tokens_per_step)
    else:
        steps = math.ceil(cfg.tokens_per_param * config.num_params() / tokens_per_step)
    if steps < 1:
        raise ValueError(f"the budget gives {steps} steps; give --steps, --tokens or --tokens-per-param > 0")
    if cfg.lr is not None:
        lr = cfg.lr
    else:
        lr = mup.BASE_LR if config.use_mup else recipe.peak_lr
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else round(
        steps * recipe.warmup_steps / recipe.total_steps)
    if config.use_mup and cfg.lr is None:
        source += " (μP η_base 6e-3)"
    if recipe_for(config) is None:
        source = f"rule: nearest paper size {source}"
    return Plan(model_config=config, params=config.num_params(), seq_len=seq_len, global_batch=global_batch,
                micro_batch=micro, accum_steps=per_rank // micro, world_size=world_size, total_steps=steps,
                tokens=steps * tokens_per_step, lr=lr, warmup_steps=min(warmup, steps),
                decay=cfg.decay or recipe.decay, min_lr_ratio=cfg.min_lr_ratio,
                eps=cfg.eps if cfg.eps is not None else recipe.adam_eps,
                flops_per_token=config.flops_per_token(seq_len), recipe_source=source)


def format_plan(plan: Plan, cfg: TrainConfig, extra: dict[str, Any] | None = None) -> str:
    """The plan as the lines `--dry-run` prints."""
    c = plan.model_config
    rows = [
        ("model", f"{c.name or cfg.model}: {c.n_layer} layers, d={c.n_embd}, {c.n_head} heads"
                  + (" (μP)" if c.use_mup else "")),
        ("parameters", f"{plan.params:,}"),
        ("tokens", f"{plan.tokens:,} ({plan.tokens / plan.params:.1f} per parameter)"),
        ("steps", f"{plan.total_steps:,}"),
        ("global batch", f"{plan.global_batch} sequences x {plan.seq_len} = {plan.tokens_per_step:,} tokens"),
        ("micro-batch", f"{plan.micro_batch} per rank x {plan.world_size} ranks, {plan.accum_steps} accumulation"),
        ("FLOPs", f"{plan.total_flops:.3e} ({plan.flops_per_token:,} per token)"),
        ("schedule", f"peak LR {plan.lr:g}, {plan.warmup_steps} warmup steps, {plan.decay} decay to "
                     f"{plan.min_lr_ratio:g}x"),
        ("optimizer", f"AdamW betas={tuple(cfg.betas)} eps={plan.eps:g} weight decay {cfg.weight_decay:g} "
                      f"clip {cfg.grad_clip:g}"),
        ("defaults from", plan.recipe_source),
    ]
    for key, value in (extra or {}).items():
        rows.append((key, str(value)))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def probe_seconds_per_step(plan: Plan, device, dtype: str = "auto", repeats: int = 2) -> float:
    """Measured seconds of one optimizer step on this device (one rank): ``accum_steps`` forward/backward
    passes of a micro-batch of random tokens plus an AdamW update, best of ``repeats`` after a warm-up."""
    import time

    import torch
    import torch.nn.functional as F

    from cerebras_gpt.model import GPT
    from cerebras_gpt.train.loop import autocast_context
    from cerebras_gpt.train.optim import build_optimizer

    model = GPT(plan.model_config).to(device)
    opt = build_optimizer(model, plan.model_config, plan.lr, (0.9, 0.95), plan.eps, 0.1)
    x = torch.randint(0, plan.model_config.vocab_size, (plan.micro_batch, plan.seq_len + 1), device=device)
    best = float("inf")
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        with autocast_context(device, dtype):
            logits = model(x[:, :-1])
        F.cross_entropy(logits.float().flatten(0, 1), x[:, 1:].flatten()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:
            best = min(best, time.perf_counter() - t0)
    return best * plan.accum_steps


def dry_run(cfg: TrainConfig, world_size: int | None = None) -> str:
    """The plan of ``cfg`` with a time estimate from a short measured probe on this machine."""
    import os

    import torch

    from cerebras_gpt.train.distributed import resolve_device
    from cerebras_gpt.train.metrics import peak_flops

    world = world_size or int(os.environ.get("WORLD_SIZE", "1"))
    plan = resolve(cfg, world)
    device = resolve_device(cfg.device)
    peak, source = peak_flops(device, torch.bfloat16 if device.type == "cuda" else torch.float32)
    extra: dict[str, Any] = {"device peak": f"{peak / 1e12:.2f} TFLOP/s ({source}, {device.type})"}
    memory = plan.params * 16 + plan.micro_batch * plan.seq_len * plan.model_config.vocab_size * 12
    available = (torch.cuda.get_device_properties(device).total_memory if device.type == "cuda"
                 else os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    if memory < 0.5 * available:
        sec = probe_seconds_per_step(plan, device, cfg.dtype)
        tok_s = plan.tokens_per_step / sec  # each rank runs its share of the batch in parallel
        how = "measured probe"
    else:
        tok_s = 0.4 * peak * world / plan.flops_per_token
        how = "not probed (model too large for this device); assuming 40% MFU"
    extra["throughput"] = f"{tok_s:,.0f} tokens/s ({how}), MFU {plan.flops_per_token * tok_s / (peak * world):.1%}"
    hours = plan.tokens / tok_s / 3600
    extra["estimated time"] = f"{hours:.2f} h" if hours >= 1 else f"{hours * 60:.1f} min"
    return format_plan(plan, cfg, extra)
