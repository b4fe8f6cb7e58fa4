"""Maximal update parametrization (μP): the only home of μP arithmetic.

Rules from the Cerebras ModelZoo (`tools/convert_config_to_mup.py`, `gpt2_model.py`; facts file §3),
with width multiplier m = n_embd / mup_base_width:

- embeddings (wte, wpe): init std σ_base, LR unscaled, embedding output multiplied by m_emb (10);
- hidden matrices (attn.c_attn, attn.c_proj, mlp.c_fc): init std σ_base/√m, LR η_base/m;
- residual output projections (attn.c_proj, mlp.c_proj): init std σ_base/√(2·m·L);
- FFN output (mlp.c_proj): LR η_base/(d_ffn/d_ffn_base), d_ffn_base = 4·base_width (1024);
- output logits multiplied by α/m; attention logits QKᵀ/d_head instead of /√d_head;
- LayerNorms and biases: unchanged (LR η_base, init ones/zeros).

Worked example, Cerebras-GPT-111M-muP (m = 3): hidden std 0.04619, out-projection std 0.01033,
output-logit scale 0.3333 and LR adjust 0.3333, as in ModelZoo release 2.0.2.

Functions take any object with GPTConfig's fields, so this module imports nothing of ours.
"""

from __future__ import annotations

import math
from typing import Any

# Parameter-name suffixes (GPT-2 names) of each μP group.
EMBEDDING_SUFFIXES = ("wte.weight", "wpe.weight")
RESIDUAL_PROJ_SUFFIXES = ("attn.c_proj.weight", "mlp.c_proj.weight")
FFN_OUTPUT_SUFFIX = "mlp.c_proj.weight"


def width_multiplier(config: Any) -> float:
    """m = n_embd / base_width."""
    return config.n_embd / config.mup_base_width


def embeddings_scale(config: Any) -> float:
    return float(config.mup_embeddings_scale)


def output_logits_scale(config: Any) -> float:
    """α / m = α · base_width / n_embd."""
    return config.mup_output_alpha / width_multiplier(config)


def attn_scale(config: Any) -> float:
    """μP scales QKᵀ by 1/d_head so attention logits stay O(1) as heads widen."""
    return 1.0 / (config.n_embd // config.n_head)


def _is_matrix(name: str) -> bool:
    return name.endswith(".weight") and not name.endswith(EMBEDDING_SUFFIXES) and (
        ".ln_" not in name and not name.startswith("ln_") and "ln_f" not in name
    )


def init_std(config: Any, name: str) -> float | None:
    """μP init std for a parameter by its GPT-2 name, or None for LayerNorms and biases (ones/zeros)."""
    sigma, m = config.mup_init_std, width_multiplier(config)
    if name.endswith(EMBEDDING_SUFFIXES):
        return sigma
    if name.endswith(RESIDUAL_PROJ_SUFFIXES):
        return sigma / math.sqrt(2 * m * config.n_layer)
    if _is_matrix(name) and not name.startswith("lm_head"):
        return sigma / math.sqrt(m)
    return None


def lr_multiplier(config: Any, name: str) -> float:
    """Factor on η_base for a parameter: 1/m for hidden matrices, base_ffn/d_ffn for mlp.c_proj, else 1."""
    if not config.use_mup:
        return 1.0
    if name.endswith(FFN_OUTPUT_SUFFIX):
        ffn_dim = config.n_inner if config.n_inner is not None else 4 * config.n_embd
        return (4 * config.mup_base_width) / ffn_dim
    if _is_matrix(name) and not name.startswith("lm_head"):
        return 1.0 / width_multiplier(config)
    return 1.0
