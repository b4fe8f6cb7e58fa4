"""Weight sparsity: masks, static / GMP / SET / RigL, SPDF densify, sparse storage and kernels.

Options follow the Cerebras ModelZoo's `trainer.init.sparsity` section (facts file §5).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

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
    """No mask updates after this step (None: 75% of training, as the ModelZoo's configs)."""
    drop_fraction: float = 0.3
    """SET/RigL: fraction of active weights dropped and regrown at an update (the schedule's start)."""
    drop_fraction_schedule: Literal["constant", "cosine"] = "cosine"
    """SET/RigL: constant, or cosine decay of the drop fraction to 0 at stop_step."""
    densify: bool = False
    """SPDF phase 2: load a sparse checkpoint and train all weights densely (masks dropped)."""
    seed: int = 0
    """Seed for random masks and regrowth (identical on every rank)."""

    @property
    def enabled(self) -> bool:
        return self.sparsity > 0 and not self.densify
