"""Weight sparsity: masks, static / GMP / SET / RigL, SPDF densify.

Options follow the Cerebras ModelZoo's `trainer.init.sparsity` section (facts file §5): a target
sparsity, `param_filter` globs (attention QKV and output projections and both FFN matrices by
default; never embeddings, LayerNorms or biases), an initial mask, and the algorithm with its
update frequency, stop step and drop-fraction schedule.

A `Sparsifier` owns one boolean keep-mask per selected matrix. The packed attention ``c_attn`` weight holds
three logical matrices (Q, K and V, stacked by rows); as in the ModelZoo, where they are separate
``proj_{q,k,v}_dense_layer`` weights, each of the three gets the target sparsity on its own and SET/RigL
drop and regrow within each, so density never moves between Q, K and V. The training loop calls

    sp = Sparsifier(cfg.sparsity, model, total_steps)
    sp.apply(model)                        # after init and after loading a checkpoint
    ...backward, clip...
    sp.update(step, model, optimizer)      # mask updates on their schedule; masks the gradients
    optimizer.step()
    sp.apply(model, optimizer)             # masked weights and their optimizer state exactly zero

Masks are the same on every rank: random masks come from a seeded generator, magnitude and
gradient decisions are taken on full tensors (`DTensor.full_tensor()` under FSDP2) and rank 0's
result is broadcast. Under FSDP2 each rank applies its local shard of the full mask.

Sparse storage (`save_sparse` / `load_sparse`: nonzero values plus a bitmask) lives in
`cerebras_gpt.export.sparse` and is still importable from here; sparse inference kernels are in
`sparse_kernels.py`.
"""

from __future__ import annotations

import fnmatch
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn as nn

from cerebras_gpt.runtime import canonical_name, full_tensor, is_dtensor, local_tensor, unwrap_model

if TYPE_CHECKING:  # the storage names re-exported below, for type checkers and IDEs
    from cerebras_gpt.export.sparse import SPARSE_FORMAT, SPARSE_WEIGHTS, load_sparse, save_sparse  # noqa: F401

log = logging.getLogger(__name__)

# Attention QKV and output projections and both FFN matrices; never embeddings, LayerNorms or biases.
DEFAULT_PARAM_FILTER = ["*attn.c_attn.weight", "*attn.c_proj.weight", "*mlp.c_fc.weight", "*mlp.c_proj.weight"]


@dataclass
class SparsityConfig:
    """Weight-sparse training (the ModelZoo's `sparsity` section). Off while ``sparsity`` is 0."""

    sparsity: float = 0.0
    """Target fraction of zero weights in the selected matrices (0 = dense, off)."""
    algorithm: Literal["static", "gmp", "set", "rigl"] = "static"
    """static: fixed mask; gmp: gradual magnitude pruning; set: drop smallest, regrow at random;
    rigl: drop smallest, regrow where the dense gradient is largest."""
    param_filter: list[str] = field(default_factory=lambda: list(DEFAULT_PARAM_FILTER))
    """Glob patterns of parameter names to sparsify."""
    param_sparsity: dict[str, float] = field(default_factory=dict)
    """Per-parameter targets: glob -> sparsity, overriding `sparsity` for the matrices it matches."""
    init_method: Literal["random", "magnitude"] = "random"
    """How the initial mask is chosen."""
    scope: Literal["per_param", "global"] = "per_param"
    """Reach the target in each matrix, or over all selected matrices together."""
    init_sparsity: float = 0.0
    """GMP: sparsity at begin_step."""
    begin_step: int = 0
    """GMP: first pruning step."""
    end_step: int | None = None
    """GMP: step at which the final sparsity is reached (None: 75% of training)."""
    update_freq: int = 100
    """Steps between mask updates (GMP, SET, RigL)."""
    stop_step: int | None = None
    """No SET/RigL mask updates after this step (None: ceil(0.75 x steps), the ModelZoo's 3,584 for its
    4,778-step sparse configs)."""
    drop_fraction: float = 0.3
    """SET/RigL: fraction of active weights dropped and regrown at an update (the schedule's start)."""
    drop_fraction_schedule: Literal["constant", "cosine"] = "cosine"
    """SET/RigL: constant, or cosine decay of the drop fraction to 0 at drop_fraction_half_period."""
    drop_fraction_half_period: int | None = None
    """SET/RigL cosine drop fraction: steps until it reaches 0 (the ModelZoo's `drop_fraction.half_period`;
    None: the stop step)."""
    densify: bool = False
    """SPDF phase 2: load a sparse checkpoint and train all weights densely (masks dropped)."""
    seed: int = 0
    """Seed for random masks and regrowth (identical on every rank)."""

    def __post_init__(self) -> None:
        problems = []
        if not 0.0 <= self.sparsity < 1.0:
            problems.append(f"sparsity={self.sparsity!r} must be in [0, 1)")
        for glob, value in self.param_sparsity.items():
            if not 0.0 <= value < 1.0:
                problems.append(f"param_sparsity[{glob!r}]={value!r} must be in [0, 1)")
        if self.algorithm not in ("static", "gmp", "set", "rigl"):
            problems.append(f"algorithm={self.algorithm!r} must be one of static, gmp, set, rigl")
        if self.init_method not in ("random", "magnitude"):
            problems.append(f"init_method={self.init_method!r} must be random or magnitude")
        if self.scope not in ("per_param", "global"):
            problems.append(f"scope={self.scope!r} must be per_param or global")
        if self.scope == "global" and self.param_sparsity:
            problems.append("param_sparsity sets per-parameter targets: use scope=per_param with it")
        if not self.param_filter:
            problems.append(
                "param_filter is empty: give at least one glob (default: the QKV, out-proj and FFN weights)"
            )
        if not 0.0 <= self.init_sparsity < 1.0:
            problems.append(f"init_sparsity={self.init_sparsity!r} must be in [0, 1)")
        if self.algorithm == "gmp" and self.init_sparsity > self.sparsity:
            problems.append(
                f"init_sparsity={self.init_sparsity} exceeds the final sparsity={self.sparsity}: GMP only prunes"
            )
        if self.update_freq < 1:
            problems.append(f"update_freq={self.update_freq!r} must be >= 1")
        if not 0.0 <= self.drop_fraction <= 1.0:
            problems.append(f"drop_fraction={self.drop_fraction!r} must be in [0, 1]")
        if self.drop_fraction_schedule not in ("constant", "cosine"):
            problems.append(f"drop_fraction_schedule={self.drop_fraction_schedule!r} must be constant or cosine")
        if self.begin_step < 0:
            problems.append(f"begin_step={self.begin_step!r} must be >= 0")
        if self.drop_fraction_half_period is not None and self.drop_fraction_half_period < 1:
            problems.append(
                f"drop_fraction_half_period={self.drop_fraction_half_period!r} must be >= 1 (or None: the stop step)"
            )
        if self.end_step is not None and self.end_step <= self.begin_step:
            problems.append(f"end_step={self.end_step!r} must be after begin_step={self.begin_step}")
        if problems:
            raise ValueError("invalid sparsity config: " + "; ".join(problems))

    @property
    def enabled(self) -> bool:
        return (self.sparsity > 0 or any(v > 0 for v in self.param_sparsity.values())) and not self.densify


# ----------------------------------------------------------------------------- helpers
def _world() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _broadcast_masks(masks: list[torch.Tensor]) -> None:
    """Make every rank hold rank 0's masks (guards against ties broken differently per device)."""
    if _world() == 1:
        return
    import torch.distributed as dist

    for mask in masks:
        # gloo has no bool broadcast; uint8 works on every backend.
        buf = mask.to(torch.uint8)
        dist.broadcast(buf, src=0)
        mask.copy_(buf.bool())


def _keep_top(scores: torch.Tensor, n_keep: int) -> torch.Tensor:
    """Boolean mask of the ``n_keep`` largest entries of ``scores`` (any shape)."""
    flat = scores.flatten()
    mask = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    if n_keep > 0:
        mask[torch.topk(flat, n_keep, sorted=False).indices] = True
    return mask.view(scores.shape)


def gmp_sparsity(step: int, init: float, final: float, begin: int, end: int) -> float:
    """Cubic GMP schedule of Zhu & Gupta (arXiv 1710.01878, eq. 1): s_f + (s_i - s_f)(1 - t')^3."""
    progress = min(max((step - begin) / (end - begin), 0.0), 1.0)
    return final + (init - final) * (1.0 - progress) ** 3


def drop_fraction_at(step: int, init: float, stop: int, schedule: str) -> float:
    """RigL's drop fraction (Evci et al., arXiv 1911.11134): init/2 (1 + cos(pi t / T_end)), or constant.

    ``stop`` is T_end, the cosine's half period (the ModelZoo's ``drop_fraction.half_period``).
    """
    if schedule == "constant":
        return init
    return init * 0.5 * (1.0 + math.cos(math.pi * min(step, stop) / stop))


def logical_blocks(name: str, shape: tuple[int, ...]) -> int:
    """How many logical matrices parameter ``name`` stacks by rows: 3 for the packed QKV ``c_attn``, else 1."""
    return 3 if name.endswith("attn.c_attn.weight") and shape[0] % 3 == 0 else 1


def _keep_top_per_block(scores: torch.Tensor, target: float, blocks: int) -> torch.Tensor:
    """`_keep_top` at sparsity ``target`` within each of ``blocks`` row blocks of ``scores`` separately."""
    return torch.cat([_keep_top(b, b.numel() - round(target * b.numel())) for b in scores.chunk(blocks, 0)], 0)


# ----------------------------------------------------------------------------- sparsifier
class Sparsifier:
    """Masks, schedules and state of weight-sparse training for one model.

    With ``cfg.enabled`` false (sparsity 0, or ``densify`` for SPDF phase 2) every method is a
    no-op, so a training loop can call it unconditionally.

    Args:
        cfg: the sparsity section of the run config.
        model: the model (plain, DDP-, torch.compile- or FSDP2-wrapped).
        total_steps: planned optimizer steps; defaults of end_step / stop_step are 75% of it.
    """

    def __init__(self, cfg: SparsityConfig, model: nn.Module, total_steps: int) -> None:
        self.cfg = cfg
        self.total_steps = int(total_steps)
        self.enabled = cfg.enabled
        self.masks: dict[str, torch.Tensor] = {}  # canonical name -> full keep-mask, bool
        self.targets: dict[str, float] = {}  # canonical name -> final sparsity
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.last_update_step = -1
        self._local_pruned: dict[str, torch.Tensor] = {}  # cache: this rank's ~mask on the param's device
        self._config = getattr(unwrap_model(model), "config", None)
        if not self.enabled:
            return
        default_end = max(1, int(0.75 * self.total_steps))  # ModelZoo configs stop at 75% of steps
        self.end_step = cfg.end_step if cfg.end_step is not None else max(default_end, cfg.begin_step + 1)
        # The ModelZoo's SET/RigL configs stop at 3,584 of 4,778 steps: 75% rounded up (int() gives 3,583).
        self.stop_step = cfg.stop_step if cfg.stop_step is not None else max(1, math.ceil(0.75 * self.total_steps))
        self.half_period = cfg.drop_fraction_half_period or self.stop_step
        params = self._select(model)
        for name, p in params:
            self.shapes[name] = tuple(p.shape)
            self.targets[name] = self._target_of(name)
        self._init_masks(params)

    # ----- selection ---------------------------------------------------------------------
    def _target_of(self, name: str) -> float:
        target = self.cfg.sparsity
        for glob, value in self.cfg.param_sparsity.items():
            if fnmatch.fnmatchcase(name, glob):
                target = value
        return target

    def _select(self, model: nn.Module) -> list[tuple[str, torch.Tensor]]:
        chosen, rejected = [], []
        seen: set[int] = set()
        for raw, p in model.named_parameters():
            name = canonical_name(raw)
            if not any(fnmatch.fnmatchcase(name, g) for g in self.cfg.param_filter) or id(p) in seen:
                continue
            seen.add(id(p))
            (chosen if p.dim() == 2 else rejected).append((name, p))
        if rejected:
            raise ValueError(
                f"param_filter {self.cfg.param_filter} matches non-matrix parameters "
                f"{[n for n, _ in rejected]}; sparsity applies to 2-D weights only (not biases or LayerNorms)"
            )
        if not chosen:
            names = [canonical_name(n) for n, _ in model.named_parameters()][:8]
            raise ValueError(f"param_filter {self.cfg.param_filter} matches no parameter; names look like {names}")
        return chosen

    def _params(self, model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
        found = 0
        for raw, p in model.named_parameters():
            name = canonical_name(raw)
            if name in self.masks:
                found += 1
                yield name, p
        if found != len(self.masks):
            raise ValueError(f"the model lacks {len(self.masks) - found} of the sparsified parameters")

    # ----- masks -------------------------------------------------------------------------
    def _scores_init(self, params: list[tuple[str, torch.Tensor]]) -> list[torch.Tensor]:
        scores = []
        for index, (_name, p) in enumerate(params):
            if self.cfg.init_method == "random":
                gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + index)
                scores.append(torch.rand(p.shape, generator=gen).to(local_tensor(p).device))
            else:
                scores.append(full_tensor(p.detach()).abs().float())
        return scores

    def _init_masks(self, params: list[tuple[str, torch.Tensor]]) -> None:
        initial = self.cfg.init_sparsity if self.cfg.algorithm == "gmp" else None
        targets = [initial if initial is not None else self.targets[n] for n, _ in params]
        masks = self._masks_from_scores(self._scores_init(params), targets, [n for n, _ in params])
        _broadcast_masks(masks)
        self.masks = {name: m for (name, _), m in zip(params, masks)}
        self._local_pruned.clear()

    def _masks_from_scores(
        self, scores: list[torch.Tensor], targets: list[float], names: list[str]
    ) -> list[torch.Tensor]:
        """Keep the top-scoring entries: per logical matrix (Q, K, V apart), or over all matrices together
        (global scope)."""
        if self.cfg.scope == "per_param":
            return [
                _keep_top_per_block(s, t, logical_blocks(n, tuple(s.shape))) for s, t, n in zip(scores, targets, names)
            ]
        flat = torch.cat([s.flatten().to(scores[0].device) for s in scores])
        keep = _keep_top(flat, flat.numel() - round(targets[0] * flat.numel()))
        return [m.view(s.shape).to(s.device) for m, s in zip(keep.split([s.numel() for s in scores]), scores)]

    def _pruned(self, name: str, p: torch.Tensor) -> torch.Tensor:
        """This rank's ~mask for parameter ``p`` (a shard of the full mask under FSDP2), cached."""
        local = local_tensor(p)
        cached = self._local_pruned.get(name)
        if cached is None or cached.device != local.device or cached.shape != local.shape:
            pruned = ~self.masks[name].to(local.device)
            if is_dtensor(p):
                from torch.distributed.tensor import distribute_tensor

                # Every rank holds the same full mask, so each takes its own shard without communication.
                pruned = distribute_tensor(pruned, p.device_mesh, p.placements, src_data_rank=None).to_local()
            self._local_pruned[name] = cached = pruned
        return cached

    # ----- the training-loop interface ---------------------------------------------------
    @torch.no_grad()
    def apply(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Zero the masked weights (and, given the optimizer, their state: AdamW's moments)."""
        if not self.enabled:
            return
        for name, p in self._params(model):
            pruned = self._pruned(name, p)
            local_tensor(p).masked_fill_(pruned, 0.0)  # masked_fill writes +0.0 (mul by 0 would keep -0.0)
            if optimizer is not None:
                for value in optimizer.state.get(p, {}).values():
                    if torch.is_tensor(value) and value.shape == p.shape:
                        local_tensor(value).masked_fill_(pruned, 0.0)

    @torch.no_grad()
    def update(self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> bool:
        """Update masks where the schedule says so, then mask the gradients; call before optimizer.step().

        Step ``step`` is the 1-based count of the optimizer step about to be taken. Regrown
        weights start at zero (they were masked, hence zero, with zero optimizer state); dropped
        ones are zeroed with their state at once. The gradients of masked weights are zeroed so
        the optimizer's moments never see them. RigL reads the dense gradient before that.

        Returns:
            Whether the masks changed at this step.
        """
        if not self.enabled:
            return False
        changed = False
        algo = self.cfg.algorithm
        if algo == "gmp" and self._gmp_due(step):
            self._update_gmp(step, model)
            changed = True
        elif algo in ("set", "rigl") and step % self.cfg.update_freq == 0 and 0 < step <= self.stop_step:
            changed = self._update_drop_grow(step, model)
        if changed:
            self.last_update_step = step
            self._local_pruned.clear()
            self.apply(model, optimizer)
            if log.isEnabledFor(logging.INFO) and _rank() == 0:
                log.info("sparsity step %d: %s masks updated, sparsity %.4f", step, algo, self.report()["sparsity"])
        for name, p in self._params(model):
            if p.grad is not None:
                local_tensor(p.grad).masked_fill_(self._pruned(name, p), 0.0)
        return changed

    def _gmp_due(self, step: int) -> bool:
        begin, end = self.cfg.begin_step, self.end_step
        if step < begin or step > end:
            return False
        return (step - begin) % self.cfg.update_freq == 0 or step == end

    def sparsity_at(self, step: int, name: str) -> float:
        """The target sparsity of matrix ``name`` after the mask update at ``step`` (GMP: the schedule)."""
        final = self.targets[name]
        if self.cfg.algorithm != "gmp":
            return final
        return gmp_sparsity(step, self.cfg.init_sparsity, final, self.cfg.begin_step, self.end_step)

    def _update_gmp(self, step: int, model: nn.Module) -> None:
        params = list(self._params(model))
        scores = []
        for name, p in params:
            score = full_tensor(p.detach()).abs().float()
            # Pruned weights never come back: below every live weight.
            scores.append(score.masked_fill_(~self.masks[name].to(score.device), -1.0))
        targets = [self.sparsity_at(step, n) for n, _ in params]
        masks = self._masks_from_scores(scores, targets, [n for n, _ in params])
        _broadcast_masks(masks)
        for (name, _), m in zip(params, masks):
            self.masks[name] = m & self.masks[name].to(m.device)

    def _update_drop_grow(self, step: int, model: nn.Module) -> bool:
        fraction = drop_fraction_at(step, self.cfg.drop_fraction, self.half_period, self.cfg.drop_fraction_schedule)
        changed = False
        for index, (name, p) in enumerate(self._params(model)):
            old = self.masks[name]
            weight = full_tensor(p.detach()).float()
            old = old.to(weight.device)
            if self.cfg.algorithm == "rigl":
                if p.grad is None:
                    raise ValueError(
                        f"RigL needs the dense gradient of {name} at step {step}; call update() after backward()"
                    )
                grow_score = full_tensor(p.grad.detach()).abs().float()
            else:
                gen = torch.Generator().manual_seed((self.cfg.seed * 1_000_003 + step) * 7919 + index)
                grow_score = torch.rand(weight.shape, generator=gen).to(weight.device)
            parts = []
            blocks = logical_blocks(name, tuple(weight.shape))
            for o, w, g in zip(old.chunk(blocks, 0), weight.chunk(blocks, 0), grow_score.chunk(blocks, 0)):
                n_active = int(o.sum())
                k = round(fraction * n_active)
                if k == 0:
                    parts.append(o)
                    continue
                # Drop: the k smallest magnitudes among the active weights of this logical matrix.
                kept = _keep_top(w.abs().masked_fill(~o, -1.0), n_active - k)
                # Grow k among the rest (the just-dropped included, as in RigL's reference code).
                parts.append(kept | _keep_top(g.masked_fill(kept, -1.0), k))
            new = torch.cat(parts, 0)
            _broadcast_masks([new])
            changed |= bool((new != old).any())
            self.masks[name] = new
        return changed

    # ----- checkpoints -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Masks (bit-packed) and schedule state; `load_state_dict` restores them exactly."""
        if not self.enabled:
            return {"enabled": False}
        masks = {}
        for name, m in self.masks.items():
            bits = np.packbits(m.cpu().numpy().reshape(-1), bitorder="little")
            masks[name] = {"shape": list(m.shape), "bits": torch.from_numpy(bits)}
        return {
            "enabled": True,
            "algorithm": self.cfg.algorithm,
            "last_update_step": self.last_update_step,
            "masks": masks,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore masks saved by `state_dict` (ignored when sparsity is off or densifying)."""
        if not self.enabled or not state.get("enabled", False):
            return
        missing, unexpected = (
            sorted(set(self.masks) - set(state["masks"])),
            sorted(set(state["masks"]) - set(self.masks)),
        )
        if missing or unexpected:
            raise ValueError(
                f"sparsity state does not match the model: missing {missing or 'none'}; "
                f"unexpected {unexpected or 'none'} (was param_filter changed?)"
            )
        for name, entry in state["masks"].items():
            shape = tuple(entry["shape"])
            if shape != self.shapes[name]:
                raise ValueError(f"sparsity mask {name!r} has shape {shape}, the model's weight is {self.shapes[name]}")
            n = math.prod(shape)
            bits = np.unpackbits(entry["bits"].numpy(), count=n, bitorder="little").astype(bool)
            self.masks[name] = torch.from_numpy(bits).view(shape).to(self.masks[name].device)
        self.last_update_step = int(state["last_update_step"])
        self._local_pruned.clear()

    # ----- reporting ---------------------------------------------------------------------
    def report(self, seq_len: int | None = None) -> dict[str, Any]:
        """Per-layer sparsity and the training FLOPs per token that sparsity saves, as Cerebras counts them.

        Cerebras hardware skips the zero weights in all three matmuls of a sparse layer (forward,
        input gradient, weight gradient), so a matrix of density δ costs δ of its dense FLOPs
        (SPDF, arXiv 2303.10464: 75% sparsity on GPT-3 XL is 2.5x fewer pre-training FLOPs).
        """
        if not self.enabled:
            return {"enabled": False, "sparsity": 0.0, "layers": {}}
        layers, total, zeros = {}, 0, 0
        for name, m in self.masks.items():
            n, nnz = m.numel(), int(m.sum())
            layers[name] = {"sparsity": (n - nnz) / n, "params": n, "nonzero": nnz}
            total, zeros = total + n, zeros + n - nnz
        out: dict[str, Any] = {
            "enabled": True,
            "algorithm": self.cfg.algorithm,
            "sparsity": zeros / total,
            "sparse_params": total,
            "zero_params": zeros,
            "layers": layers,
        }
        if self._config is not None:
            dense = self._config.flops_per_token(seq_len)
            saved = 3 * 2 * zeros  # 2 FLOPs per multiply-add, forward + two backward matmuls
            out.update(
                dense_flops_per_token=dense,
                sparse_flops_per_token=dense - saved,
                flops_saved_per_token=saved,
                flops_saved_fraction=saved / dense,
            )
        return out


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def measure_sparsity(model: nn.Module, param_filter: list[str] | None = None) -> dict[str, float]:
    """Fraction of exact zeros in each matrix the filter selects (default: QKV, out-proj, FFN)."""
    globs = param_filter or DEFAULT_PARAM_FILTER
    out = {}
    for raw, p in model.named_parameters():
        name = canonical_name(raw)
        if p.dim() == 2 and any(fnmatch.fnmatchcase(name, g) for g in globs):
            full = full_tensor(p.detach())
            out[name] = float((full == 0).sum()) / full.numel()
    return out


# Sparse storage moved to `cerebras_gpt.export.sparse`; its names stay importable from here, loaded on first
# use (PEP 562) so that training, which needs only the masks, never imports the storage code.
_MOVED_TO_EXPORT = ("SPARSE_FORMAT", "SPARSE_WEIGHTS", "load_sparse", "save_sparse")


def __getattr__(name: str) -> Any:
    if name in _MOVED_TO_EXPORT:
        from cerebras_gpt.export import sparse

        return getattr(sparse, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_PARAM_FILTER",
    "SparsityConfig",
    "Sparsifier",
    "canonical_name",
    "drop_fraction_at",
    "gmp_sparsity",
    "logical_blocks",
    "measure_sparsity",
    "load_sparse",
    "save_sparse",  # from cerebras_gpt.export.sparse
]
