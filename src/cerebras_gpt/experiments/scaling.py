"""Compute-optimal scaling: plans at 20 tokens per parameter, model-size ladders, and power-law fits.

Cerebras-GPT's headline result is a compute-optimal frontier (arXiv 2304.03208; facts file §4): Pile test
loss against training FLOPs follows ``L(f) = (f / 5.984e22)^-0.0737 + 0.5066``, and a fit on the 111M-6.7B
runs predicted the 13B loss within 0.5%. This module gives users the same three steps for their data:

- plan: the parameter and token counts a budget buys at 20 tokens per parameter (and a concrete shape),
  or the plan of a list of presets;
- run: a ladder of model sizes, each trained compute-optimally through `cerebras_gpt.train` and recorded
  in ``runs.jsonl`` (a finished rung is never redone; an interrupted one resumes from its checkpoint);
- fit: ``L(C) = (C / C0)^-α + L∞`` by nonlinear least squares (scipy), confidence intervals from the
  parameter covariance (Student t), a log-log plot with the points, the fit and its extrapolation, and
  the predicted loss at a target budget.

The paper's seven (FLOPs, loss) points are built in (`PAPER_POINTS`: model-card FLOPs after the "flops
typo fix", ModelZoo/paper Pile test losses), so the fit can be checked against the published law.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cerebras_gpt import jsonl
from cerebras_gpt.config import RECIPES, GPTConfig
from cerebras_gpt.extras import require_extra

log = logging.getLogger(__name__)

TOKENS_PER_PARAM = 20.0
"""Cerebras-GPT (and Chinchilla) compute-optimal budget: 20 tokens per parameter (facts file §2)."""

_SP_NAMES = ("111M", "256M", "590M", "1.3B", "2.7B", "6.7B", "13B")
PAPER_POINTS: list[tuple[str, float, float]] = [
    (f"Cerebras-GPT-{s}", RECIPES[f"Cerebras-GPT-{s}"].training_flops, RECIPES[f"Cerebras-GPT-{s}"].pile_test_loss)
    for s in _SP_NAMES
]
"""(preset, training FLOPs from the model card, Pile test loss) of the seven SP models (facts file §2)."""


@dataclass(frozen=True)
class PowerLaw:
    """``L(C) = (C / c0)^-alpha + l_inf``: loss against training compute C (FLOPs)."""

    alpha: float
    c0: float
    l_inf: float

    def __call__(self, flops: float | np.ndarray) -> float | np.ndarray:
        return (np.asarray(flops, dtype=float) / self.c0) ** -self.alpha + self.l_inf

    def __str__(self) -> str:
        return f"L(C) = (C / {self.c0:.4g})^-{self.alpha:.4f} + {self.l_inf:.4f}"


PAPER_LAW = PowerLaw(alpha=0.0737, c0=5.984e22, l_inf=0.5066)
"""The paper's SP compute-optimal frontier (arXiv 2304.03208; facts file §4)."""


# ----------------------------------------------------------------------------- fit
def _model(log_c: np.ndarray, alpha: float, log_c0: float, l_inf: float) -> np.ndarray:
    # Fitted in log C: the FLOPs span many decades, and C0 enters through log C0 (well conditioned).
    return np.exp(-alpha * (log_c - log_c0)) + l_inf


def _jacobian(log_c: np.ndarray, alpha: float, log_c0: float) -> np.ndarray:
    """d model / d (alpha, log_c0, l_inf) at each point: (n, 3)."""
    power = np.exp(-alpha * (log_c - log_c0))
    return np.stack([-(log_c - log_c0) * power, alpha * power, np.ones_like(log_c)], axis=-1)


@dataclass
class ScalingFit:
    """A least-squares fit of `PowerLaw` to (FLOPs, loss) points, with its uncertainty."""

    law: PowerLaw
    flops: np.ndarray
    """The points' training FLOPs, (n,)."""
    loss: np.ndarray
    """The points' losses, (n,)."""
    covariance: np.ndarray
    """Covariance of (alpha, log C0, L∞), (3, 3); infinite with fewer than 4 points."""
    level: float = 0.95
    """Confidence level of the intervals."""
    labels: list[str] = field(default_factory=list)

    @property
    def dof(self) -> int:
        return len(self.flops) - 3

    @property
    def _t(self) -> float:
        require_extra("eval", "scipy", feature="confidence intervals of the scaling fit")
        from scipy import stats

        return float(stats.t.ppf(0.5 + self.level / 2, self.dof)) if self.dof > 0 else math.inf

    @property
    def residuals(self) -> np.ndarray:
        return self.loss - self.law(self.flops)

    @property
    def rmse(self) -> float:
        return float(np.sqrt(np.mean(self.residuals**2)))

    def intervals(self) -> dict[str, tuple[float, float]]:
        """Confidence intervals of alpha, c0 and l_inf (c0's from the interval of log C0)."""
        err = np.sqrt(np.clip(np.diag(self.covariance), 0, None)) * self._t
        a, lc0, linf = self.law.alpha, math.log(self.law.c0), self.law.l_inf
        with np.errstate(over="ignore"):
            c0 = (math.exp(min(lc0 - err[1], 700)), math.exp(min(lc0 + err[1], 700)))
        return {"alpha": (a - err[0], a + err[0]), "c0": c0, "l_inf": (max(0.0, linf - err[2]), linf + err[2])}

    def predict(self, flops: float | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(loss, low, high) at ``flops``: the fit and its confidence band (delta method)."""
        log_c = np.log(np.atleast_1d(np.asarray(flops, dtype=float)))
        lc0 = math.log(self.law.c0)
        mean = _model(log_c, self.law.alpha, lc0, self.law.l_inf)
        J = _jacobian(log_c, self.law.alpha, lc0)
        var = np.einsum("ni,ij,nj->n", J, self.covariance, J)
        half = self._t * np.sqrt(np.clip(var, 0, None)) if np.isfinite(self._t) else np.full_like(mean, np.inf)
        return mean, mean - half, mean + half

    def to_dict(self, target_flops: float | None = None) -> dict[str, Any]:
        ci = self.intervals()
        out: dict[str, Any] = {
            "law": str(self.law),
            "alpha": self.law.alpha,
            "c0": self.law.c0,
            "l_inf": self.law.l_inf,
            "confidence_level": self.level,
            "ci": {k: list(v) for k, v in ci.items()},
            "points": [
                {"label": lab, "flops": float(c), "loss": float(y), "fit": float(self.law(c))}
                for lab, c, y in zip(self.labels or [""] * len(self.flops), self.flops, self.loss)
            ],
            "rmse": self.rmse,
        }
        if target_flops is not None:
            mean, lo, hi = self.predict(target_flops)
            out["target"] = {"flops": target_flops, "loss": float(mean[0]), "ci": [float(lo[0]), float(hi[0])]}
        return out


def fit_power_law(
    flops: Sequence[float], loss: Sequence[float], labels: Sequence[str] | None = None, level: float = 0.95
) -> ScalingFit:
    """Fit ``L(C) = (C / C0)^-α + L∞`` to points by nonlinear least squares in loss.

    The start comes from a scan over L∞ below the smallest loss, where ``log(L - L∞)`` is linear in
    ``log C``; `scipy.optimize.curve_fit` then refines all three parameters within ``α > 0`` and
    ``0 <= L∞ <= min(loss)`` and gives their covariance.

    Args:
        flops: training FLOPs of each run, (n,), n >= 3.
        loss: final (validation or test) loss of each run in nats per token, (n,).
        labels: names of the points (for the table and the plot).
        level: confidence level of the intervals.
    """
    require_extra("eval", "scipy", feature="the scaling-law fit")
    from scipy.optimize import curve_fit

    C, L = np.asarray(flops, dtype=float), np.asarray(loss, dtype=float)
    if C.shape != L.shape or C.ndim != 1:
        raise ValueError(f"flops and loss must be 1-D of the same length (got {C.shape} and {L.shape})")
    if len(C) < 3:
        raise ValueError(f"a 3-parameter power law needs at least 3 points (got {len(C)}); 4+ give intervals")
    if not (np.all(np.isfinite(C)) and np.all(C > 0) and np.all(np.isfinite(L))):
        raise ValueError("every FLOPs value must be positive and every loss finite")
    if len(np.unique(C)) < 3:
        raise ValueError("the points need at least 3 distinct FLOPs values")
    x = np.log(C)
    best = None
    span = max(float(L.max() - L.min()), 1e-3)
    for l_inf in np.linspace(0.0, float(L.min()) - 1e-3 * span, 200):
        slope, intercept = np.polyfit(x, np.log(L - l_inf), 1)
        if slope >= 0:
            continue
        alpha = -slope
        sse = float(np.sum((_model(x, alpha, intercept / alpha, l_inf) - L) ** 2))
        if best is None or sse < best[0]:
            best = (sse, alpha, intercept / alpha, l_inf)
    if best is None:
        raise ValueError("loss does not decrease with compute: no power law with alpha > 0 fits these points")
    p0 = best[1:]
    # A loss floor below zero is meaningless (cross-entropy >= 0), and alpha must stay positive: noisy
    # small-model points would otherwise pull L∞ far negative and alpha towards zero.
    bounds = ([1e-6, -np.inf, 0.0], [10.0, np.inf, float(L.min())])
    try:
        params, cov = curve_fit(
            _model, x, L, p0=p0, bounds=bounds, jac=lambda xx, a, lc0, li: _jacobian(xx, a, lc0), max_nfev=20000
        )
    except RuntimeError:  # no convergence: keep the scan's start, which is already a least-squares fit in L∞
        params, cov = np.asarray(p0), np.full((3, 3), np.inf)
    if not np.all(np.isfinite(cov)):
        cov = np.full((3, 3), np.inf)
    law = PowerLaw(alpha=float(params[0]), c0=float(math.exp(params[1])), l_inf=float(params[2]))
    return ScalingFit(law=law, flops=C, loss=L, covariance=cov, level=level, labels=list(labels or []))


def plot_fit(
    fit: ScalingFit,
    path: str | Path,
    target_flops: float | None = None,
    heldout: Sequence[tuple[str, float, float]] = (),
    reference: PowerLaw | None = None,
    title: str = "Compute-optimal scaling",
) -> Path:
    """Log-log PNG: the points, the fit with its band, its extrapolation, held-out points, the target."""
    require_extra("eval", "matplotlib", feature="the scaling plot")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [*fit.flops, *(c for _, c, _ in heldout)] + ([target_flops] if target_flops else [])
    lo_c, hi_c = min(xs) / 2, max(xs) * 2
    grid = np.geomspace(lo_c, hi_c, 200)
    mean, lo, hi = fit.predict(grid)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    inside = grid <= fit.flops.max()
    ax.plot(grid[inside], mean[inside], color="C0", label=f"fit: {fit.law}")
    ax.plot(grid[~inside], mean[~inside], color="C0", linestyle="--", label="extrapolation")
    if np.all(np.isfinite(lo)):
        ax.fill_between(grid, lo, hi, color="C0", alpha=0.15, label=f"{fit.level:.0%} confidence band")
    ax.scatter(fit.flops, fit.loss, color="C0", zorder=3, label="fitted points")
    for label, c, y in zip(fit.labels, fit.flops, fit.loss):
        if label:
            ax.annotate(label, (c, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    for label, c, y in heldout:
        ax.scatter([c], [y], color="C3", marker="s", zorder=4, label=f"held out: {label}")
    if reference is not None:
        ax.plot(grid, reference(grid), color="gray", linestyle=":", label=f"reference: {reference}")
    if target_flops:
        m, tl, th = fit.predict(target_flops)
        ax.errorbar(
            [target_flops],
            m,
            yerr=[[m[0] - tl[0]], [th[0] - m[0]]] if np.isfinite(tl[0]) else None,
            color="C2",
            marker="*",
            markersize=10,
            zorder=5,
            label=f"target {target_flops:.3g}: {m[0]:.4f}",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    # Frame the points and the fit; a wide confidence band (few, noisy points) must not squash them.
    ys = [*fit.loss, *mean, *(y for _, _, y in heldout)]
    ax.set_ylim(0.85 * min(ys), 1.15 * max(ys))
    ax.set_xlabel("training compute C (FLOPs)")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- plan
def non_embedding_params(config: GPTConfig) -> int:
    """Parameters outside the token and position embeddings (Kaplan et al. 2020's N)."""
    return config.num_params(include_embeddings=False)


def count_params(config: GPTConfig, count: str = "total") -> int:
    """Parameters the tokens-per-parameter rule counts: ``"total"`` (the paper) or ``"non_embedding"``."""
    if count == "total":
        return config.num_params()
    if count == "non_embedding":
        return non_embedding_params(config)
    raise ValueError(f"count={count!r} must be 'total' or 'non_embedding'")


@dataclass
class PlanRow:
    """A model trained compute-optimally: its shape, parameters, tokens and FLOPs."""

    name: str
    n_layer: int
    n_embd: int
    n_head: int
    params: int
    """Parameters the budget rule counts (see ``count``)."""
    total_params: int
    tokens: int
    flops: float
    """Training FLOPs: ``config.flops_per_token(seq_len) * tokens``."""
    card_flops: float | None = None
    """The model card's FLOPs, for presets the paper trained."""
    paper_flops: float | None = None
    """Training FLOPs in the paper's convention (cerebras_gpt/flops.py): the card's for a paper preset at its
    budget, else the estimate; what the published law is a function of."""
    paper_loss: float | None = None
    """The paper's Pile test loss, for presets it trained."""
    predicted_loss: float | None = None
    """Loss the law (the paper's, or a given fit) predicts at ``paper_flops``."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def plan_config(
    config: GPTConfig,
    tokens_per_param: float = TOKENS_PER_PARAM,
    seq_len: int | None = None,
    count: str = "total",
    law: PowerLaw | None = PAPER_LAW,
    name: str | None = None,
) -> PlanRow:
    """The compute-optimal plan of one model: ``tokens = tokens_per_param * params``."""
    params = count_params(config, count)
    tokens = int(round(tokens_per_param * params))
    flops = float(config.flops_per_token(seq_len)) * tokens
    recipe = RECIPES.get(config.name) if config.name else None
    card = recipe.training_flops if recipe else None
    from cerebras_gpt.flops import paper_training_flops

    paper_flops = paper_training_flops(config, tokens, seq_len)
    return PlanRow(
        name=name or config.name or f"L{config.n_layer}-d{config.n_embd}",
        n_layer=config.n_layer,
        n_embd=config.n_embd,
        n_head=config.n_head,
        params=params,
        total_params=config.num_params(),
        tokens=tokens,
        flops=flops,
        card_flops=card,
        paper_flops=paper_flops,
        paper_loss=recipe.pile_test_loss if recipe else None,
        # The paper's law is a function of the paper's FLOPs (which count more than flops_per_token).
        predicted_loss=float(law(paper_flops)) if law is not None else None,
    )


def plan_presets(
    names: Sequence[str],
    tokens_per_param: float = TOKENS_PER_PARAM,
    seq_len: int | None = None,
    count: str = "total",
    law: PowerLaw | None = PAPER_LAW,
) -> list[PlanRow]:
    """Compute-optimal plans of presets (by case-insensitive name)."""
    return [plan_config(GPTConfig.from_name(n), tokens_per_param, seq_len, count, law) for n in names]


def family_shape(
    n_embd: int, head_dim: int = 64, aspect: float = 80.0, vocab_size: int = 50257, block_size: int = 2048
) -> GPTConfig:
    """A Cerebras-GPT-like shape of width ``n_embd``: depth ``n_embd / aspect`` (the 111M-2.7B models have
    d_model/L of 77-85), heads of ``head_dim``, FFN 4x."""
    n_layer = max(1, round(n_embd / aspect))
    return GPTConfig(
        n_layer=n_layer, n_embd=n_embd, n_head=max(1, n_embd // head_dim), vocab_size=vocab_size, block_size=block_size
    )


def plan_budget(
    budget_flops: float,
    tokens_per_param: float = TOKENS_PER_PARAM,
    seq_len: int = 2048,
    count: str = "total",
    law: PowerLaw | None = PAPER_LAW,
    vocab_size: int = 50257,
) -> dict[str, Any]:
    """What a compute budget buys when trained compute-optimally.

    Returns the analytic optimum under ``C = 6 N D`` with ``D = r N`` (``N = sqrt(C / 6r)``), and a
    concrete shape: the Cerebras-GPT-like width (multiple of 64, `family_shape`) whose compute-optimal
    run costs closest to the budget in log FLOPs, with its tokens set so it spends exactly the budget.
    """
    if not budget_flops > 0:
        raise ValueError(f"budget={budget_flops!r} FLOPs must be positive (e.g. 1e20)")
    if not tokens_per_param > 0:
        raise ValueError(f"tokens_per_param={tokens_per_param!r} must be positive (the paper used 20)")
    n_opt = math.sqrt(budget_flops / (6 * tokens_per_param))
    best = None
    for width in range(64, 16384 + 1, 64):
        cfg = family_shape(width, vocab_size=vocab_size, block_size=seq_len)
        row = plan_config(cfg, tokens_per_param, seq_len, count, law=None)
        gap = abs(math.log(row.flops / budget_flops))
        if best is None or gap < best[0]:
            best = (gap, cfg)
    cfg = best[1]
    row = plan_config(cfg, tokens_per_param, seq_len, count, law)
    tokens = int(budget_flops / cfg.flops_per_token(seq_len))
    nearest = min(
        _SP_NAMES,
        key=lambda s: abs(
            math.log(plan_presets([f"Cerebras-GPT-{s}"], tokens_per_param, seq_len, count)[0].flops / budget_flops)
        ),
    )
    return {
        "budget_flops": budget_flops,
        "tokens_per_param": tokens_per_param,
        "seq_len": seq_len,
        "analytic": {"params": int(n_opt), "tokens": int(tokens_per_param * n_opt), "rule": "C = 6 N D, D = r N"},
        "shape": {
            **row.to_dict(),
            "tokens_at_budget": tokens,
            "tokens_per_param_at_budget": tokens / row.params,
            "predicted_loss": float(law(budget_flops)) if law is not None else None,
        },
        "nearest_preset": f"Cerebras-GPT-{nearest}",
    }


# ----------------------------------------------------------------------------- ladder
@dataclass
class Rung:
    """One size of a ladder: a shape and its compute-optimal budget."""

    name: str
    config: GPTConfig
    plan: PlanRow


def build_ladder(
    widths: Sequence[int],
    n_layer: int | None = None,
    head_dim: int = 32,
    block_size: int = 128,
    vocab_size: int = 50257,
    tokens_per_param: float = TOKENS_PER_PARAM,
    count: str = "total",
    aspect: float = 32.0,
) -> list[Rung]:
    """Small custom shapes for a ladder, each with its compute-optimal tokens and FLOPs.

    Args:
        widths: model widths, e.g. ``[32, 48, 64, 96, 128]``.
        n_layer: depth of every rung; None scales depth with width (``max(1, round(width / aspect))``).
        head_dim: width of an attention head (heads = width / head_dim, at least 1).
        block_size: the context the rungs train at (FLOPs per token count attention over it).
        vocab_size: the tokenizer's vocabulary (the LM head's size).
        tokens_per_param: the budget rule (20 in the paper).
        count: which parameters the rule counts: ``"total"`` or ``"non_embedding"``.
        aspect: width per layer when ``n_layer`` is None.
    """
    if not widths:
        raise ValueError("a ladder needs at least one width (e.g. --widths 32 48 64 96 128)")
    rungs = []
    for width in sorted(set(int(w) for w in widths)):
        if width < 1 or width % max(1, min(head_dim, width)):
            raise ValueError(f"width {width} must be a positive multiple of head_dim={head_dim} (or smaller than it)")
        layers = n_layer if n_layer is not None else max(1, round(width / aspect))
        cfg = GPTConfig(
            n_layer=layers,
            n_embd=width,
            n_head=max(1, width // head_dim),
            block_size=block_size,
            vocab_size=vocab_size,
            name=f"ladder-L{layers}-d{width}",
        )
        rungs.append(Rung(cfg.name, cfg, plan_config(cfg, tokens_per_param, block_size, count, law=None)))
    return rungs


RUNS = "runs.jsonl"


def read_runs(out: str | Path) -> list[dict[str, Any]]:
    """The recorded rungs of a ladder directory (one JSON object per finished run)."""
    path = Path(out) / RUNS
    if not path.exists():
        return []
    try:
        return jsonl.read(path)
    except jsonl.JSONLError as e:
        raise ValueError(f"{e.where}: {e.reason}; remove that line to rerun its rung") from None


TrainFn = Callable[[Rung, Path], dict[str, Any]]


def run_ladder(rungs: Sequence[Rung], out: str | Path, train_fn: TrainFn, metric: str = "val_loss") -> list[dict]:
    """Train each rung (smallest first) with ``train_fn(rung, run_dir)``; record it in ``out/runs.jsonl``.

    A rung already in ``runs.jsonl`` is skipped, so running the ladder again continues where it stopped
    (``train_fn`` resumes a rung cut off mid-run from the checkpoints in its ``run_dir``).

    Returns:
        every recorded row (earlier invocations included), smallest FLOPs first.
    """
    import time

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    done = {row["name"] for row in read_runs(out)}
    for rung in sorted(rungs, key=lambda r: r.plan.flops):
        if rung.name in done:
            log.info("ladder: %s already recorded, skipped", rung.name)
            continue
        log.info(
            "ladder: %s (%d params, %d tokens, %.3g FLOPs)",
            rung.name,
            rung.plan.params,
            rung.plan.tokens,
            rung.plan.flops,
        )
        start = time.time()
        metrics = train_fn(rung, out / "runs" / rung.name)
        if metric not in metrics or not math.isfinite(float(metrics[metric])):
            raise ValueError(f"rung {rung.name}: training returned no finite {metric!r} (got {metrics})")
        row = {
            "name": rung.name,
            **rung.plan.to_dict(),
            "loss": float(metrics[metric]),
            "metric": metric,
            "seconds": round(time.time() - start, 2),
            "architecture": rung.config.to_dict(),
            "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))},
        }
        jsonl.append(out / RUNS, row)
    return sorted(read_runs(out), key=lambda r: r["flops"])


def heldout_check(rows: Sequence[dict[str, Any]], holdout: int = 1, level: float = 0.95) -> dict[str, Any]:
    """Fit on all but the ``holdout`` largest runs and predict them: the paper's 13B check, in small."""
    rows = sorted(rows, key=lambda r: r["flops"])
    if len(rows) - holdout < 3:
        raise ValueError(f"{len(rows)} runs: a held-out check needs at least {holdout + 3}")
    train, test = rows[:-holdout], rows[-holdout:]
    fit = fit_power_law([r["flops"] for r in train], [r["loss"] for r in train], [r["name"] for r in train], level)
    checks = []
    for r in test:
        mean, lo, hi = fit.predict(r["flops"])
        checks.append(
            {
                "name": r["name"],
                "flops": r["flops"],
                "loss": r["loss"],
                "predicted": float(mean[0]),
                "ci": [float(lo[0]), float(hi[0])],
                "error_pct": 100.0 * (float(mean[0]) - r["loss"]) / r["loss"],
            }
        )
    return {"fit": fit, "checks": checks}


__all__ = [
    "PAPER_LAW",
    "PAPER_POINTS",
    "PowerLaw",
    "ScalingFit",
    "fit_power_law",
    "plot_fit",
    "PlanRow",
    "plan_config",
    "plan_presets",
    "plan_budget",
    "family_shape",
    "Rung",
    "build_ladder",
    "run_ladder",
    "read_runs",
    "heldout_check",
    "TOKENS_PER_PARAM",
    "count_params",
    "non_embedding_params",
]
