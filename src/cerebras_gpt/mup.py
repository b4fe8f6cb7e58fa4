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

An untied LM head (tie_word_embeddings=False) is treated as the embedding it replaces: init σ_base and
an unscaled LR, its width dependence carried by the α/m output multiplier (Tensor Programs V, Table 3).

Functions take any object with GPTConfig's fields, so this module imports nothing of ours.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

# η_base, the peak LR tuned on the 40M proxy (ModelZoo `tools/convert_config_to_mup.py`; facts §3); every
# μP run used it, decaying to 6e-4. The other base values (σ_base 0.08, m_emb 10, α 1, base width 256)
# are GPTConfig's defaults, since they shape the network.
BASE_LR = 6e-3

# Parameter-name suffixes (GPT-2 names) of each μP group.
EMBEDDING_SUFFIXES = ("wte.weight", "wpe.weight")
LM_HEAD = "lm_head.weight"
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


def query_fold_scale(config: Any) -> float:
    """What the query rows of ``c_attn`` are multiplied by to fold μP's 1/d_head attention scale into plain
    GPT-2's 1/sqrt(d_head): sqrt(d_head)/d_head = 1/sqrt(d_head) under μP, 1 under SP (nothing to fold)."""
    return config.attn_scale * math.sqrt(config.head_dim)


def fold_query_rows(tensor: Any, config: Any, *, unfold: bool = False) -> Any:
    """``tensor`` with its query rows (the first n_embd) multiplied by `query_fold_scale` (divided: ``unfold``).

    The one place the μP attention scale moves in or out of weights: c_attn's weight (3C, C) and bias (3C,)
    on HF export (`cerebras_gpt.hf`), and a LoRA B (3C, r) on c_attn when its adapter is saved or loaded
    (`cerebras_gpt.finetune.lora`), so the adapter follows the folded base. Returns ``tensor`` itself under
    SP (nothing to fold), else a new tensor; the input is never modified.
    """
    scale = query_fold_scale(config)
    if scale == 1.0:
        return tensor
    out = tensor.clone()
    if unfold:
        out[: config.n_embd] /= scale
    else:
        out[: config.n_embd] *= scale
    return out


def _is_matrix(name: str) -> bool:
    return (
        name.endswith(".weight")
        and not name.endswith(EMBEDDING_SUFFIXES)
        and (".ln_" not in name and not name.startswith("ln_") and "ln_f" not in name)
    )


def init_std(config: Any, name: str) -> float | None:
    """μP init std for a parameter by its GPT-2 name, or None for LayerNorms and biases (ones/zeros)."""
    sigma, m = config.mup_init_std, width_multiplier(config)
    if name.endswith(EMBEDDING_SUFFIXES) or name.endswith(LM_HEAD):
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


def group(name: str) -> str:
    """The μP group of a parameter by its GPT-2 name.

    ``embedding`` (wte, wpe, an untied lm_head), ``hidden`` (attn.c_attn, mlp.c_fc), ``attn_out``
    (attn.c_proj: hidden LR, residual init), ``ffn_out`` (mlp.c_proj: the FFN-output LR rule, residual
    init), or ``vector`` (LayerNorms and biases: untouched).
    """
    if name.endswith(EMBEDDING_SUFFIXES) or name.endswith(LM_HEAD):
        return "embedding"
    if name.endswith(FFN_OUTPUT_SUFFIX):
        return "ffn_out"
    if name.endswith(RESIDUAL_PROJ_SUFFIXES):
        return "attn_out"
    if _is_matrix(name):
        return "hidden"
    return "vector"


def to_mup(
    config: Any,
    *,
    base_width: int | None = None,
    init_std: float | None = None,
    embeddings_scale: float | None = None,
    output_alpha: float | None = None,
) -> Any:
    """A copy of ``config`` with μP switched on; unset base values keep the config's (the paper's by default).

    As ModelZoo's `convert_config_to_mup.py` does for an SP config: the SP residual-projection std is
    dropped, since μP derives its own from σ_base.
    """
    changes: dict[str, Any] = {"use_mup": True}
    if hasattr(config, "output_init_std"):
        changes["output_init_std"] = None
    for field, value in (
        ("mup_base_width", base_width),
        ("mup_init_std", init_std),
        ("mup_embeddings_scale", embeddings_scale),
        ("mup_output_alpha", output_alpha),
    ):
        if value is not None:
            changes[field] = value
    return dataclasses.replace(config, **changes)


def rules(config: Any) -> list[dict[str, Any]]:
    """The μP rules resolved for ``config``: one row per group, plus the forward multipliers.

    Rows are dicts with ``group``, ``params`` (which GPT-2 names), ``init_std`` (None: ones/zeros) and
    ``lr_multiplier`` (the factor on η_base); the last rows hold the three forward multipliers under
    ``multiplier``. For Cerebras-GPT-111M-muP this gives the published 0.08, 0.04619, 0.01033, LR
    adjust 0.3333 and output-logit scale 0.3333.
    """
    examples = {
        "embedding": ("transformer.wte.weight", "wte, wpe (and an untied lm_head)"),
        "hidden": ("transformer.h.0.attn.c_attn.weight", "attn.c_attn, mlp.c_fc"),
        "attn_out": ("transformer.h.0.attn.c_proj.weight", "attn.c_proj"),
        "ffn_out": ("transformer.h.0.mlp.c_proj.weight", "mlp.c_proj"),
        "vector": ("transformer.h.0.ln_1.weight", "LayerNorms, biases"),
    }
    rows: list[dict[str, Any]] = [
        {"group": g, "params": desc, "init_std": init_std(config, name), "lr_multiplier": lr_multiplier(config, name)}
        for g, (name, desc) in examples.items()
    ]
    rows += [
        {"group": "forward", "multiplier": "embeddings_scale", "value": embeddings_scale(config)},
        {"group": "forward", "multiplier": "output_logits_scale", "value": output_logits_scale(config)},
        {"group": "forward", "multiplier": "attn_scale", "value": attn_scale(config)},
    ]
    return rows
