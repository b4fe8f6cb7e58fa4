"""`TrainConfig`: every setting of a training run (model, data, budget, optimizer, schedule, I/O, devices).

Fields left as None are resolved by `cerebras_gpt.train.recipe.resolve` from the paper's recipe for the
preset (`cerebras_gpt.config.recipe_for`) or, for sizes the paper did not train, by the rule documented
there. The resolved config is what a checkpoint records.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from cerebras_gpt.sparsity import SparsityConfig


@dataclass
class TrainConfig:
    """Settings of one pretraining run; None means "from the paper's recipe" (see train/recipe.py)."""

    # ----- model -----
    model: str = "debug-tiny"
    """Preset name (see `cerebras-gpt info`), e.g. Cerebras-GPT-111M or debug-small."""
    model_overrides: dict[str, str] = field(default_factory=dict)
    """GPTConfig fields to override, e.g. {n_layer: 4, dropout: 0.1} (values parsed as YAML scalars)."""
    init_from: str | None = None
    """Start from this model directory or training checkpoint instead of a random init (weights only)."""
    mup: bool = False
    """Train with μP (use_mup on the GPTConfig): width-scaled init and per-group learning rates."""

    # ----- data -----
    data_dir: str | None = None
    """A prepared data directory (`cerebras-gpt prepare`) with train and val splits."""
    seq_len: int | None = None
    """Tokens per sequence (None: the model's context, at most 2048)."""

    # ----- budget (the first given of tokens, steps, tokens_per_param) -----
    tokens: int | None = None
    """Training tokens."""
    steps: int | None = None
    """Optimizer steps."""
    tokens_per_param: float = 20.0
    """Tokens per parameter when neither tokens nor steps is given (20 = compute-optimal, the paper's)."""

    # ----- batch -----
    batch_size: int | None = None
    """Global batch in sequences (None: the paper's for the preset, else 32)."""
    batch_schedule: str | None = None
    """Global batch changing during the run: 'B0,B1@STEP,...' (B1 from STEP on; 'B1@Ntok': from N tokens on),
    e.g. the 13B run's '720,1080@57000' or a GPT-3-style ramp '32,64@2e6tok,128@4e6tok'. The LR schedule is
    over tokens, so a switch leaves it unchanged (None: the paper's for the preset, else batch_size)."""
    micro_batch_size: int | Literal["auto"] | None = None
    """Sequences per rank per forward pass; the rest is gradient accumulation. auto: the largest that fits the
    device's memory (estimated, then probed with one step). None: the whole per-rank batch (the largest size
    that divides every phase of a batch schedule) when it fits, else as auto."""

    # ----- optimizer and schedule -----
    lr: float | None = None
    """Peak learning rate (None: the paper's; μP: η_base 6e-3, scaled per group)."""
    warmup_steps: int | None = None
    """Linear warmup steps (None: the paper's warmup fraction of the run)."""
    decay: Literal["linear", "cosine", "constant"] | None = None
    """Decay after warmup to min_lr_ratio x peak (None: the paper's for the size)."""
    min_lr_ratio: float = 0.1
    """Final LR as a fraction of peak (the paper decays to 10%)."""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW β1, β2."""
    eps: float | None = None
    """AdamW ε (None: the paper's, 1e-8; 1e-9 from 6.7B)."""
    weight_decay: float = 0.1
    """AdamW decoupled weight decay, on matrices only (see train/optim.py)."""
    grad_clip: float = 1.0
    """Global gradient-norm clipping threshold (0 disables)."""
    max_bad_steps: int = 5
    """Stop after this many NaN/inf losses in a row (each one skips its update)."""

    # ----- evaluation, logging, checkpoints -----
    eval_interval: int = 0
    """Validation every N steps (0: only at the end)."""
    eval_batches: int = 20
    """Validation batches per evaluation (per rank)."""
    log_interval: int = 1
    """Steps between metric records."""
    checkpoint_interval: int = 0
    """Checkpoint every N steps (0: only at the end)."""
    keep_last: int = 2
    """Training checkpoints kept (older ones are deleted)."""
    out_dir: str | None = None
    """Run directory: checkpoints/, final model/, metrics.jsonl, tensorboard/, loss.png, run.json, results.json
    (default: a new runs/<model>-<YYYYmmdd-HHMMSS> per run; pass it again to resume)."""
    stop_at_step: int | None = None
    """End this invocation after this step (with a checkpoint), keeping the planned schedule; rerun to go on."""
    time_limit_minutes: float | None = None
    """End this invocation (with a checkpoint) once this much wall time has passed; rerun to go on."""
    resume: Literal["auto", "never"] | str = "auto"
    """auto: continue from the latest checkpoint in out_dir if any; never; or a checkpoint directory."""
    overwrite: bool = False
    """With --resume never: remove an earlier run's outputs from out_dir and start over there."""
    tensorboard: bool = True
    """Write TensorBoard event files under out_dir/tensorboard (with 'tensorboard' in --logger)."""
    logger: list[Literal["tensorboard", "csv", "wandb"]] = field(default_factory=lambda: ["tensorboard"])
    """Where metrics go besides metrics.jsonl: tensorboard (out_dir/tensorboard), csv (out_dir/metrics.csv),
    wandb (Weights & Biases; WANDB_MODE=offline keeps it on disk). E.g. --logger csv wandb."""
    progress: bool = True
    """Show a progress bar."""

    # ----- execution -----
    seed: int = 0
    """Seed for init and data order."""
    device: str = "auto"
    """cpu, cuda, or auto (cuda:LOCAL_RANK when available)."""
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """Compute dtype: float32, or bfloat16 autocast (auto: bfloat16 on CUDA, float32 on CPU)."""
    compile: bool = False
    """torch.compile each transformer block (eager fallback if compilation fails)."""
    activation_checkpointing: bool = False
    """Recompute each block's activations in the backward pass to save memory."""
    fsdp: bool = False
    """Shard parameters, gradients and optimizer state with FSDP2 (under torchrun); else DDP."""
    sparsity: SparsityConfig = field(default_factory=SparsityConfig)
    """Weight-sparse training (off at sparsity 0)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}; valid fields are {sorted(known)}")
        if isinstance(data.get("sparsity"), dict):
            data["sparsity"] = SparsityConfig(**data["sparsity"])
        if "betas" in data:
            data["betas"] = tuple(data["betas"])
        return cls(**data)
