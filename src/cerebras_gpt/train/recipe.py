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

Steps: a paper preset on its own recipe (paper batch schedule, sequence 2048, 20 tokens per parameter, no
steps/tokens given) runs the ModelZoo's ``max_steps`` from the recipe table (111M 9,037 ... 6.7B 62,522; 13B
57,000 at 720 + 78,223 at 1080 = 135,223), not ``ceil(20·N / tokens_per_step)`` (which gives one more).

Batch schedule (train/batch_schedule.py): the global batch may change at given steps or tokens; the
micro-batch stays fixed (by default the largest that divides every phase's per-rank batch) and the number
of accumulation steps follows the phase, so the data order and the loader position are the same as at a
constant batch. The LR schedule is a function of tokens seen (warmup over the tokens of the warmup steps,
decay to the run's last token), so a batch switch leaves it unchanged.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import yaml

from cerebras_gpt.config import RECIPES, GPTConfig, PaperRecipe, recipe_for
from cerebras_gpt.train import batch_schedule
from cerebras_gpt.train.batch_schedule import BatchPhase
from cerebras_gpt.train.config import TrainConfig
from cerebras_gpt.train.optim import lr_at

DEFAULT_BATCH = 32


@dataclass
class Plan:
    """A run resolved to numbers: what `--dry-run` prints and what the loop follows."""

    model_config: GPTConfig
    params: int
    seq_len: int
    global_batch: int
    """Sequences per optimizer step, all ranks (of the first phase when the batch changes)."""
    micro_batch: int
    """Sequences per rank per forward pass."""
    accum_steps: int
    """Micro-batches per rank per step (of the first phase; `accum_steps_at` for any step)."""
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
    batch_phases: list[BatchPhase] = dataclasses.field(default_factory=list)
    """(start step, global batch) of each batch phase; empty: ``global_batch`` throughout."""
    paper_flops: float = 0.0
    """Training FLOPs in the paper's convention (cerebras_gpt/flops.py)."""

    def __post_init__(self) -> None:
        if not self.batch_phases:
            self.batch_phases = [BatchPhase(0, self.global_batch)]
        self.batch_phases = [p if isinstance(p, BatchPhase) else BatchPhase(**p) for p in self.batch_phases]

    @property
    def tokens_per_step(self) -> int:
        """Tokens of one step of the first phase."""
        return self.global_batch * self.seq_len

    @property
    def total_flops(self) -> float:
        return float(self.flops_per_token) * self.tokens

    def global_batch_at(self, step: int) -> int:
        """Sequences of 0-based step ``step``, all ranks."""
        return batch_schedule.batch_at(self.batch_phases, step)

    def accum_steps_at(self, step: int) -> int:
        """Micro-batches per rank at step ``step``."""
        return self.global_batch_at(step) // (self.micro_batch * self.world_size)

    def tokens_before(self, step: int) -> int:
        """Tokens trained on by steps ``0 .. step - 1``."""
        return batch_schedule.sequences_before(self.batch_phases, step) * self.seq_len

    def lr_at(self, step: int) -> float:
        """Peak LR of step ``step``: the schedule over tokens (warmup over the warmup steps' tokens, decay to
        the last token), so a batch switch leaves it unchanged; at a constant batch it is `optim.lr_at`."""
        return lr_at(
            self.tokens_before(step),
            peak=self.lr,
            warmup=self.tokens_before(self.warmup_steps),
            total=self.tokens,
            decay=self.decay,
            min_ratio=self.min_lr_ratio,
        )

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
        raise ValueError(
            f"seq_len={seq_len} exceeds the model's context block_size={config.block_size}; "
            "lower --seq-len or override block_size"
        )
    own = recipe_for(config)
    if cfg.batch_size is not None and cfg.batch_schedule is not None:
        raise ValueError(
            f"batch_size={cfg.batch_size} and batch_schedule={cfg.batch_schedule!r} both set the "
            "global batch; give one (the schedule's first entry is the starting batch)"
        )
    if cfg.batch_schedule is not None:
        phases = batch_schedule.parse(cfg.batch_schedule, seq_len)
    elif cfg.batch_size is not None:
        phases = [BatchPhase(0, cfg.batch_size)]
    elif own is not None and own.batch_schedule is not None:
        phases = batch_schedule.parse(own.batch_schedule, seq_len)
    else:
        phases = [BatchPhase(0, own.batch_size if own is not None else DEFAULT_BATCH)]
    global_batch = phases[0].global_batch
    per_rank_batches = []
    for phase in phases:
        per_rank, rem = divmod(phase.global_batch, world_size)
        if rem or per_rank == 0:
            raise ValueError(
                f"batch_size={phase.global_batch} does not divide over {world_size} ranks; "
                f"use a multiple of {world_size}"
            )
        per_rank_batches.append(per_rank)
    # "auto" starts from the whole batch too; train/micro_batch.py fits it to the device when the run starts.
    micro = cfg.micro_batch_size if isinstance(cfg.micro_batch_size, int) else math.gcd(*per_rank_batches)
    for phase, per_rank in zip(phases, per_rank_batches):
        if per_rank % micro:
            raise ValueError(
                f"micro_batch_size={micro} does not divide the per-rank batch {per_rank} "
                f"(batch_size {phase.global_batch} / {world_size} ranks)"
            )
    if own is not None:
        paper_phases = (
            batch_schedule.parse(own.batch_schedule, own.seq_len)
            if own.batch_schedule
            else [BatchPhase(0, own.batch_size)]
        )
    on_paper_recipe = (
        own is not None and phases == paper_phases and seq_len == own.seq_len and cfg.tokens_per_param == 20.0
    )
    if cfg.steps is not None:
        steps = cfg.steps
    elif cfg.tokens is not None:
        steps = batch_schedule.steps_for_tokens(phases, cfg.tokens, seq_len)
    elif on_paper_recipe:
        steps = own.total_steps  # the ModelZoo's max_steps (the rule would give one step more)
    else:
        steps = batch_schedule.steps_for_tokens(phases, cfg.tokens_per_param * config.num_params(), seq_len)
    if steps < 1:
        raise ValueError(f"the budget gives {steps} steps; give --steps, --tokens or --tokens-per-param > 0")
    if cfg.lr is not None:
        lr = cfg.lr
    else:
        lr = mup.BASE_LR if config.use_mup else recipe.peak_lr
    warmup = (
        cfg.warmup_steps if cfg.warmup_steps is not None else round(steps * recipe.warmup_steps / recipe.total_steps)
    )
    if config.use_mup and cfg.lr is None:
        source += " (μP η_base 6e-3)"
    if recipe_for(config) is None:
        source = f"rule: nearest paper size {source}"
    elif on_paper_recipe and cfg.steps is None and cfg.tokens is None:
        source += " (the ModelZoo's max_steps)"
    from cerebras_gpt.flops import paper_training_flops

    tokens = batch_schedule.sequences_before(phases, steps) * seq_len
    return Plan(
        model_config=config,
        params=config.num_params(),
        seq_len=seq_len,
        global_batch=global_batch,
        micro_batch=micro,
        accum_steps=per_rank_batches[0] // micro,
        world_size=world_size,
        total_steps=steps,
        tokens=tokens,
        lr=lr,
        warmup_steps=min(warmup, steps),
        decay=cfg.decay or recipe.decay,
        min_lr_ratio=cfg.min_lr_ratio,
        eps=cfg.eps if cfg.eps is not None else recipe.adam_eps,
        flops_per_token=config.flops_per_token(seq_len),
        recipe_source=source,
        batch_phases=[p for p in phases if p.start_step < steps],
        paper_flops=paper_training_flops(config, tokens, seq_len),
    )


def format_plan(plan: Plan, cfg: TrainConfig, extra: dict[str, Any] | None = None) -> str:
    """The plan as the lines `--dry-run` prints."""
    c = plan.model_config
    rows = [
        (
            "model",
            f"{c.name or cfg.model}: {c.n_layer} layers, d={c.n_embd}, {c.n_head} heads"
            + (" (μP)" if c.use_mup else ""),
        ),
        ("parameters", f"{plan.params:,}"),
        ("tokens", f"{plan.tokens:,} ({plan.tokens / plan.params:.1f} per parameter)"),
        ("steps", f"{plan.total_steps:,}"),
        (
            "global batch",
            f"{plan.global_batch} sequences x {plan.seq_len} = {plan.tokens_per_step:,} tokens"
            if len(plan.batch_phases) == 1
            else batch_schedule.describe(plan.batch_phases, plan.total_steps, plan.seq_len),
        ),
        (
            "micro-batch",
            f"{plan.micro_batch} per rank x {plan.world_size} ranks, "
            + " then ".join(str(plan.accum_steps_at(p.start_step)) for p in plan.batch_phases)
            + " accumulation",
        ),
        ("FLOPs", f"{plan.total_flops:.3e} ({plan.flops_per_token:,} per token)"),
        ("FLOPs (paper)", f"{plan.paper_flops:.3e} (the paper's convention, cerebras_gpt/flops.py)"),
        (
            "schedule",
            f"peak LR {plan.lr:g}, {plan.warmup_steps} warmup steps, {plan.decay} decay to {plan.min_lr_ratio:g}x",
        ),
        (
            "optimizer",
            f"AdamW betas={tuple(cfg.betas)} eps={plan.eps:g} weight decay {cfg.weight_decay:g} clip {cfg.grad_clip:g}",
        ),
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

    from cerebras_gpt.model import GPT
    from cerebras_gpt.runtime import autocast_context
    from cerebras_gpt.train.loss import loss_from_output, output_for_loss
    from cerebras_gpt.train.optim import build_optimizer

    model = GPT(plan.model_config).to(device)
    opt = build_optimizer(model, plan.model_config, plan.lr, (0.9, 0.95), plan.eps, 0.1)
    x = torch.randint(0, plan.model_config.vocab_size, (plan.micro_batch, plan.seq_len + 1), device=device)
    best = float("inf")
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        with autocast_context(device, dtype):  # the loop's step: its loss, clipping and optimizer
            output = output_for_loss(model, x[:, :-1])
        (loss_from_output(output, x[:, 1:]) / x[:, 1:].numel()).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
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
    from cerebras_gpt.train.metrics import model_flops_utilization, peak_flops

    world = world_size or int(os.environ.get("WORLD_SIZE", "1"))
    plan = resolve(cfg, world)
    device = resolve_device(cfg.device)
    peak, source = peak_flops(device, torch.bfloat16 if device.type == "cuda" else torch.float32)
    extra: dict[str, Any] = {"device peak": f"{peak / 1e12:.3f} TFLOP/s ({source})"}
    from cerebras_gpt.train import micro_batch

    plan, how = micro_batch.fit_plan(plan, cfg.micro_batch_size, device, cfg.dtype)
    if how is not None:
        extra["micro-batch choice"] = how
    memory = micro_batch.step_memory_bytes(plan.model_config, plan.micro_batch, plan.seq_len)
    available = (
        torch.cuda.get_device_properties(device).total_memory
        if device.type == "cuda"
        else os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    )
    if memory < 0.5 * available:
        sec = probe_seconds_per_step(plan, device, cfg.dtype)
        tok_s = plan.tokens_per_step / sec  # each rank runs its share of the batch in parallel
        how = "measured probe"
    else:
        tok_s = 0.4 * peak * world / plan.flops_per_token
        how = "not probed (model too large for this device); assuming 40% MFU"
    mfu = model_flops_utilization(plan.flops_per_token, tok_s, peak, world)
    extra["throughput"] = f"{tok_s:,.0f} tokens/s ({how}), MFU {mfu:.1%}"
    hours = plan.tokens / tok_s / 3600
    extra["estimated time"] = f"{hours:.2f} h" if hours >= 1 else f"{hours * 60:.1f} min"
    return format_plan(plan, cfg, extra)
