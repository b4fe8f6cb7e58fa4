"""The μP coordinate check: how big each layer's activations get, against width, in the first training steps.

Yang et al., "Tensor Programs V" (arXiv 2203.03466, §D.1 and Fig. 5): train models of growing width
for a few steps at one learning rate and record the mean absolute value of every activation coordinate
(the l1 norm divided by the element count) after each step. Under μP the curves stay flat with width:
every layer's update moves its output by O(1) per coordinate whatever the width. Under standard
parametrization (SP) with one global Adam learning rate, updates move pre-activations by O(width), so
attention, FFN and especially logit sizes grow with width within a handful of steps; that is why SP's
best learning rate drifts with width and μP's does not.

What is recorded, per (parametrization, width, seed, step): the embedding output (after μP's
multiplier), each block's attention output, FFN output and residual stream, and the logits (after the
output multiplier), on one fixed probe batch, at step 0 (init) and after each update. ``growth_4x`` of
a layer is 4 to the power of the least-squares slope of log(mean |x|) against log(width) at the last
step: the factor by which the layer grows per 4x of width (1.0 is flat).

The models are the real `GPT`; the optimizer is the trainer's AdamW (`train.optim.build_optimizer`) with
μP's per-parameter learning rates (`mup.lr_multiplier`, all 1 under SP) and no weight decay.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cerebras_gpt import mup
from cerebras_gpt.config import GPTConfig
from cerebras_gpt.extras import have_extra
from cerebras_gpt.model import GPT
from cerebras_gpt.train.optim import build_optimizer

PARAMETRIZATIONS = ("mup", "sp")


@dataclass
class CoordCheckConfig:
    """Settings of a coordinate check."""

    widths: list[int] = field(default_factory=lambda: [64, 128, 256, 512, 1024])
    """Model widths (d_model) to compare; each must be divisible by n_head."""
    parametrizations: list[str] = field(default_factory=lambda: list(PARAMETRIZATIONS))
    """Which of mup and sp to run."""
    n_layer: int = 2
    """Transformer blocks."""
    n_head: int = 4
    """Attention heads, fixed across widths so d_head grows with width and μP's 1/d_head attention matters."""
    steps: int = 5
    """Training steps (activations are recorded at init and after each step)."""
    lr: float = mup.BASE_LR
    """Learning rate: η_base under μP (scaled per group by mup.py), one global LR under SP."""
    batch_size: int = 8
    """Sequences per step."""
    seq_len: int = 64
    """Tokens per sequence."""
    seeds: int = 2
    """Independent runs per (parametrization, width), averaged to cut noise."""
    base_width: int = 256
    """μP base width (the proxy's d_model); width multiplier m = width / base_width."""
    data: str = "builtin:pydoc"
    """Text to train on: builtin:pydoc or a text file (as bytes, vocabulary 256), or a prepared data directory."""
    device: str = "cpu"
    """Torch device (cpu, cuda, cuda:N)."""

    def __post_init__(self) -> None:
        problems = []
        if not self.widths or any(not isinstance(w, int) or w <= 0 for w in self.widths):
            problems.append(f"widths={self.widths!r} must be a non-empty list of positive integers")
        elif any(w % self.n_head for w in self.widths):
            bad = [w for w in self.widths if w % self.n_head]
            problems.append(f"widths {bad} are not divisible by n_head={self.n_head}; choose multiples of it")
        unknown = sorted(set(self.parametrizations) - set(PARAMETRIZATIONS))
        if unknown or not self.parametrizations:
            problems.append(f"parametrizations={self.parametrizations!r} must be chosen from {list(PARAMETRIZATIONS)}")
        for key in ("n_layer", "n_head", "steps", "batch_size", "seq_len", "seeds", "base_width"):
            if getattr(self, key) < 1:
                problems.append(f"{key}={getattr(self, key)!r} must be at least 1")
        if not self.lr > 0:
            problems.append(f"lr={self.lr!r} must be > 0")
        if problems:
            raise ValueError("invalid coordinate check: " + "; ".join(problems))


# ----------------------------------------------------------------------------- data
def load_tokens(data: str, min_tokens: int) -> tuple[np.ndarray, int]:
    """(tokens, vocab_size) for ``data`` (see `CoordCheckConfig.data`); at least ``min_tokens`` of them."""
    if data == "builtin:pydoc":
        import pydoc_data.topics

        topics = pydoc_data.topics.topics
        raw = "\n\n".join(topics[k] for k in sorted(topics)).encode("utf-8")
        tokens, vocab = np.frombuffer(raw, dtype=np.uint8).astype(np.int64), 256
    else:
        path = Path(data)
        if path.is_dir():
            from cerebras_gpt.data.shards import TokenStream, read_meta

            meta = read_meta(path)
            stream = TokenStream(path, "train", meta)
            tokens = stream.read(0, min(len(stream), max(min_tokens, 1 << 20))).astype(np.int64)
            vocab = int(meta["tokenizer"]["vocab_size"])
        elif path.is_file():
            tokens, vocab = np.fromfile(path, dtype=np.uint8).astype(np.int64), 256
        else:
            raise ValueError(f"--data {data!r}: no such file or directory (or use builtin:pydoc)")
    if tokens.size < min_tokens:
        raise ValueError(
            f"--data {data!r} holds {tokens.size} tokens; the check needs at least {min_tokens} "
            "(lower --steps, --batch-size or --seq-len, or pass more text)"
        )
    return tokens, vocab


def _batch(tokens: np.ndarray, rng: np.random.Generator, batch_size: int, seq_len: int) -> torch.Tensor:
    """(B, T+1) random windows of the token stream."""
    starts = rng.integers(0, tokens.size - seq_len - 1, size=batch_size)
    return torch.from_numpy(np.stack([tokens[s : s + seq_len + 1] for s in starts]))


# ----------------------------------------------------------------------------- one run
def build_config(cfg: CoordCheckConfig, width: int, parametrization: str, vocab_size: int) -> GPTConfig:
    """The model of one width: SP with GPT-2's 0.02 init, or μP with the paper's base values."""
    config = GPTConfig(
        n_layer=cfg.n_layer,
        n_embd=width,
        n_head=cfg.n_head,
        block_size=cfg.seq_len,
        vocab_size=vocab_size,
        name=f"coord-check-{parametrization}-{width}",
    )
    return mup.to_mup(config, base_width=cfg.base_width) if parametrization == "mup" else config


def _probes(model: GPT) -> Iterator[tuple[str, torch.nn.Module]]:
    yield "embedding", model.transformer.drop  # after the μP embedding multiplier
    for i, block in enumerate(model.transformer.h):
        yield f"h.{i}.attn", block.attn
        yield f"h.{i}.mlp", block.mlp
        yield f"h.{i}", block


def layer_names(n_layer: int) -> list[str]:
    names = ["embedding"]
    for i in range(n_layer):
        names += [f"h.{i}.attn", f"h.{i}.mlp", f"h.{i}"]
    return names + ["logits"]


@torch.no_grad()
def _measure(model: GPT, probe: torch.Tensor) -> dict[str, float]:
    """Mean |x| of every probed activation and of the logits on ``probe`` (B, T)."""
    sizes: dict[str, float] = {}
    handles = [
        module.register_forward_hook(lambda _m, _i, out, name=name: sizes.__setitem__(name, out.abs().mean().item()))
        for name, module in _probes(model)
    ]
    try:
        sizes["logits"] = model(probe).abs().mean().item()
    finally:
        for h in handles:
            h.remove()
    return sizes


def run_one(
    cfg: CoordCheckConfig, tokens: np.ndarray, vocab_size: int, width: int, parametrization: str, seed: int
) -> list[dict[str, Any]]:
    """Train one model for ``cfg.steps`` steps; rows of (step, layer, value) with the run's keys."""
    torch.manual_seed(seed)
    config = build_config(cfg, width, parametrization, vocab_size)
    model = GPT(config).to(cfg.device).train()
    # The trainer's own AdamW groups (μP LR multipliers from mup.py) with the paper's β = (0.9, 0.95);
    # no weight decay, so only the update rule shows.
    optimizer = build_optimizer(model, config, cfg.lr, (0.9, 0.95), 1e-8, weight_decay=0.0)
    # Same data for every width and parametrization of a seed: only the model differs.
    rng = np.random.default_rng(seed)
    probe = _batch(tokens, rng, cfg.batch_size, cfg.seq_len)[:, :-1].to(cfg.device)
    rows = []
    for step in range(cfg.steps + 1):
        if step:
            batch = _batch(tokens, rng, cfg.batch_size, cfg.seq_len).to(cfg.device)
            logits = model(batch[:, :-1])
            loss = F.cross_entropy(logits.flatten(0, 1).float(), batch[:, 1:].flatten())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        for layer, value in _measure(model, probe).items():
            rows.append(
                dict(parametrization=parametrization, width=width, seed=seed, step=step, layer=layer, value=value)
            )
    return rows


# ----------------------------------------------------------------------------- the check
@dataclass
class CoordCheckResult:
    """Seed-averaged sizes and the per-layer growth per 4x width at the last step."""

    config: CoordCheckConfig
    rows: list[dict[str, Any]]
    """Raw rows: parametrization, width, seed, step, layer, value (mean |x|)."""
    mean: dict[tuple[str, str, int, int], float]
    """(parametrization, layer, width, step) -> value averaged over seeds."""
    growth_4x: dict[str, dict[str, float]]
    """parametrization -> layer -> growth factor per 4x width at the last step."""

    def max_growth(self, parametrization: str) -> float:
        """The largest per-layer growth factor per 4x width of one parametrization."""
        return max(self.growth_4x[parametrization].values())

    def summary(self) -> dict[str, Any]:
        return {
            "config": dataclasses.asdict(self.config),
            "growth_4x": self.growth_4x,
            "max_growth_4x": {p: self.max_growth(p) for p in self.growth_4x},
            "logits_growth_4x": {p: g["logits"] for p, g in self.growth_4x.items()},
        }


def growth_per_4x(widths: list[int], values: list[float]) -> float:
    """4 ** (least-squares slope of log value against log width)."""
    if len(widths) < 2:
        return 1.0
    x, y = np.log(np.asarray(widths, float)), np.log(np.maximum(np.asarray(values, float), 1e-30))
    slope = float(np.polyfit(x, y, 1)[0])
    return 4.0**slope


def run_coord_check(cfg: CoordCheckConfig, progress: bool = True) -> CoordCheckResult:
    """Run every (parametrization, width, seed) and summarize; see the module docstring."""
    from tqdm.auto import tqdm

    tokens, vocab = load_tokens(cfg.data, (cfg.steps + 2) * cfg.batch_size * (cfg.seq_len + 1))
    widths = sorted(set(cfg.widths))
    runs = [(p, w, s) for p in cfg.parametrizations for w in widths for s in range(cfg.seeds)]
    rows: list[dict[str, Any]] = []
    for p, w, s in tqdm(runs, desc="coord check", unit="run", disable=not progress):
        rows += run_one(cfg, tokens, vocab, w, p, s)
    sums: dict[tuple[str, str, int, int], list[float]] = {}
    for r in rows:
        sums.setdefault((r["parametrization"], r["layer"], r["width"], r["step"]), []).append(r["value"])
    mean = {k: float(np.mean(v)) for k, v in sums.items()}
    growth = {
        p: {
            layer: growth_per_4x(widths, [mean[(p, layer, w, cfg.steps)] for w in widths])
            for layer in layer_names(cfg.n_layer)
        }
        for p in cfg.parametrizations
    }
    return CoordCheckResult(cfg, rows, mean, growth)


# ----------------------------------------------------------------------------- reports
def format_table(result: CoordCheckResult) -> str:
    """Mean |activation| at the last step per layer and width, and the growth per 4x width."""
    cfg = result.config
    widths = sorted(set(cfg.widths))
    head = ["param", "layer"] + [f"d={w}" for w in widths] + ["growth/4x"]
    lines = []
    for p in cfg.parametrizations:
        for layer in layer_names(cfg.n_layer):
            values = [f"{result.mean[(p, layer, w, cfg.steps)]:.4g}" for w in widths]
            lines.append([p, layer] + values + [f"{result.growth_4x[p][layer]:.2f}"])
    table = [head] + lines
    widths_col = [max(len(row[i]) for row in table) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{n}}}" if i < 2 else f"{{:>{n}}}" for i, n in enumerate(widths_col))
    out = [f"mean |activation| after {cfg.steps} steps (lr {cfg.lr:g}, {cfg.seeds} seeds):", fmt.format(*head)]
    out += [fmt.format(*row) for row in lines]
    out.append("max growth per 4x width: " + ", ".join(f"{p} {result.max_growth(p):.2f}" for p in cfg.parametrizations))
    return "\n".join(out)


def plot(result: CoordCheckResult, path: str | Path) -> Path:
    """A PNG in the style of Tensor Programs V, Fig. 5: rows are parametrizations, columns steps,
    one line per layer, mean |x| against width on log-log axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = result.config
    widths = sorted(set(cfg.widths))
    steps = sorted({0, max(1, cfg.steps // 2), cfg.steps})
    layers = layer_names(cfg.n_layer)
    fig, axes = plt.subplots(
        len(cfg.parametrizations),
        len(steps),
        squeeze=False,
        sharey="row",
        figsize=(4 * len(steps), 3.4 * len(cfg.parametrizations)),
    )
    colors = plt.cm.viridis(np.linspace(0, 0.95, len(layers)))
    for i, p in enumerate(cfg.parametrizations):
        for j, step in enumerate(steps):
            ax = axes[i][j]
            for layer, color in zip(layers, colors):
                ax.plot(
                    widths,
                    [result.mean[(p, layer, w, step)] for w in widths],
                    marker="o",
                    ms=3,
                    color=color,
                    lw=2.2 if layer == "logits" else 1.2,
                    label=layer,
                )
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{'μP' if p == 'mup' else 'SP'}, step {step}")
            ax.set_xlabel("width (d_model)")
            if j == 0:
                ax.set_ylabel("mean |activation|")
            ax.grid(alpha=0.3, which="both")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=8)
    fig.suptitle(f"Coordinate check: {cfg.n_layer} layers, Adam lr {cfg.lr:g}, {cfg.seeds} seeds")
    fig.tight_layout(rect=(0, 0, 0.88, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_outputs(result: CoordCheckResult, out_dir: str | Path) -> dict[str, Path]:
    """``coord_check.csv`` (raw rows), ``coord_check.json`` (summary) and ``coord_check.png`` in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "coord_check.csv", "json": out / "coord_check.json", "png": out / "coord_check.png"}
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["parametrization", "width", "seed", "step", "layer", "value"])
        writer.writeheader()
        writer.writerows(result.rows)
    paths["json"].write_text(json.dumps(result.summary(), indent=2) + "\n")
    if have_extra("train", "matplotlib", skipped=f"the plot {paths['png']}"):
        plot(result, paths["png"])
    else:
        del paths["png"]
    return paths


__all__ = [
    "CoordCheckConfig",
    "CoordCheckResult",
    "run_coord_check",
    "format_table",
    "plot",
    "write_outputs",
    "growth_per_4x",
    "build_config",
    "load_tokens",
    "layer_names",
]
