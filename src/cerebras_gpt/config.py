"""Architecture configuration (`GPTConfig`), the Cerebras-GPT presets and the paper's recipe figures.

`GPTConfig` describes the network only; run settings (batch, learning rate, steps) live in
`train/`. The per-preset training figures from the paper are kept beside the presets in
`PaperRecipe` so the training code can use them as defaults without mixing them into the
architecture.

Sources (see ../shared/docs/cerebras-gpt-facts.md): Cerebras ModelZoo
`models/nlp/gpt3/configs/Cerebras_GPT/<size>.yaml`, the Hugging Face model cards
(huggingface.co/cerebras/Cerebras-GPT-<size>) and arXiv 2304.03208.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass
from typing import Any, Literal

from cerebras_gpt import mup

# A sane bound on model size, 100x the largest Cerebras-GPT (13B): absurd depths or widths from a
# config.json are refused with their numbers instead of overflowing a tensor size or the machine.
MAX_PARAMS = 100 * 13 * 10**9


@dataclass
class GPTConfig:
    """A GPT-2-style decoder with GPT-3 shapes (pre-LN, learned positions, tied embeddings)."""

    n_layer: int = 2
    """Number of transformer blocks."""
    n_embd: int = 64
    """Model width d_model."""
    n_head: int = 4
    """Attention heads; n_embd must be divisible by it."""
    n_inner: int | None = None
    """FFN hidden width d_ffn; None means 4 * n_embd (every Cerebras-GPT model)."""
    block_size: int = 2048
    """Maximum sequence length (learned position embeddings)."""
    vocab_size: int = 50257
    """Vocabulary size (GPT-2 BPE)."""
    layer_norm_epsilon: float = 1e-5
    """LayerNorm epsilon."""
    dropout: float = 0.0
    """Dropout on embeddings, attention and residuals; Cerebras-GPT used none."""
    tie_word_embeddings: bool = True
    """Share the input embedding with the LM head (the μP fold may untie it on export)."""
    init_std: float = 0.02
    """Std of the truncated-normal init (±2σ) for embeddings and hidden weights (SP)."""
    output_init_std: float | None = None
    """Std for the residual output projections (attn.c_proj, mlp.c_proj); None: init_std/sqrt(2*n_layer)."""

    # Maximal update parametrization (arithmetic in mup.py).
    use_mup: bool = False
    """Use μP: width-scaled init and LR, embedding and output multipliers, attention 1/d_head."""
    mup_base_width: int = 256
    """Width of the μP proxy model the hyperparameters were tuned on."""
    mup_init_std: float = 0.08
    """σ_base of the μP proxy (paper's tuned value)."""
    mup_embeddings_scale: float = 10.0
    """Multiplier on the embedding output under μP (paper's tuned value)."""
    mup_output_alpha: float = 1.0
    """α in the μP output-logit multiplier α·base_width/n_embd."""

    name: str = ""
    """Preset name this config came from, if any (informational)."""

    def __post_init__(self) -> None:
        problems = []
        for key in ("n_layer", "n_embd", "n_head", "block_size", "vocab_size", "mup_base_width"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                problems.append(f"{key}={value!r} must be a positive integer")
        if self.n_inner is not None and (not isinstance(self.n_inner, int) or self.n_inner <= 0):
            problems.append(f"n_inner={self.n_inner!r} must be a positive integer or None (for 4 * n_embd)")
        if not problems and self.n_embd % self.n_head:
            problems.append(
                f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}; "
                f"choose n_head among {[h for h in range(1, 65) if self.n_embd % h == 0]}"
            )
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout={self.dropout!r} must be in [0, 1)")
        for key in ("init_std", "layer_norm_epsilon", "mup_init_std", "mup_embeddings_scale", "mup_output_alpha"):
            if not getattr(self, key) > 0:
                problems.append(f"{key}={getattr(self, key)!r} must be > 0")
        if self.output_init_std is not None and not self.output_init_std > 0:
            problems.append(f"output_init_std={self.output_init_std!r} must be > 0 or None")
        if not problems and self.num_params() > MAX_PARAMS:
            problems.append(
                f"{self.num_params():,} parameters (n_layer={self.n_layer}, n_embd={self.n_embd}, "
                f"vocab_size={self.vocab_size}, block_size={self.block_size}) is beyond any model this "
                f"code builds (at most {MAX_PARAMS:,}); check the sizes"
            )
        if problems:
            raise ValueError("invalid GPTConfig: " + "; ".join(problems))

    # ----- derived shapes -------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def ffn_dim(self) -> int:
        return self.n_inner if self.n_inner is not None else 4 * self.n_embd

    @property
    def residual_init_std(self) -> float:
        """SP std for attn.c_proj / mlp.c_proj: GPT-2's 0.02/sqrt(2L) unless the preset fixes it."""
        if self.output_init_std is not None:
            return self.output_init_std
        return self.init_std / math.sqrt(2 * self.n_layer)

    # ----- forward multipliers (1.0 / False under SP) ------------------------------------
    @property
    def embeddings_scale(self) -> float:
        return mup.embeddings_scale(self) if self.use_mup else 1.0

    @property
    def output_logits_scale(self) -> float:
        return mup.output_logits_scale(self) if self.use_mup else 1.0

    @property
    def attn_scale(self) -> float:
        """Multiplier on QK^T: 1/sqrt(d_head) (SP) or 1/d_head (μP)."""
        return mup.attn_scale(self) if self.use_mup else 1.0 / math.sqrt(self.head_dim)

    # ----- counts ---------------------------------------------------------------------
    def num_params(self, include_embeddings: bool = True) -> int:
        """Exact parameter count; tied embeddings are counted once.

        With the 4*d FFN this is the paper's V·d + 2048·d + L(12d² + 13d) + 2d.
        """
        d, f, L = self.n_embd, self.ffn_dim, self.n_layer
        per_layer = (d * 3 * d + 3 * d) + (d * d + d) + (d * f + f) + (f * d + d) + 4 * d
        n = L * per_layer + 2 * d  # blocks + final LayerNorm
        if include_embeddings:
            n += self.vocab_size * d + self.block_size * d
            if not self.tie_word_embeddings:
                n += self.vocab_size * d
        return n

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Training FLOPs per token (forward + backward = 3 x forward), attention included.

        Forward per token: 2 FLOPs per multiply-add of every matrix (QKV, out-proj, FFN, LM head)
        plus 4·T·d per layer for QK^T and AV over a context of T (full, not causally halved, as in
        the Chinchilla/Megatron convention). Embedding look-ups, norms and softmax are not counted.
        """
        T = seq_len or self.block_size
        d, f, L = self.n_embd, self.ffn_dim, self.n_layer
        matmul = L * (2 * d * 3 * d + 2 * d * d + 2 * 2 * d * f) + 2 * d * self.vocab_size
        attention = L * 4 * T * d
        return 3 * (matmul + attention)

    def compute_optimal_tokens(self, tokens_per_param: float = 20.0) -> int:
        """Chinchilla-style budget Cerebras-GPT used: 20 tokens per parameter."""
        return int(round(tokens_per_param * self.num_params()))

    # ----- construction ---------------------------------------------------------------
    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> GPTConfig:
        """A preset by (case-insensitive) Hugging Face name, e.g. ``"cerebras-gpt-111m"``."""
        key = _lookup(name)
        return dataclasses.replace(PRESETS[key], **overrides)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GPTConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown GPTConfig fields {unknown}; valid fields are {sorted(known)}")
        return cls(**data)


@dataclass(frozen=True)
class PaperRecipe:
    """Training figures the paper used for a preset (ModelZoo configs; facts file §2)."""

    peak_lr: float
    batch_size: int
    """Global batch in sequences of 2048 tokens."""
    warmup_steps: int
    total_steps: int
    tokens: float
    decay: Literal["linear", "cosine"]
    adam_eps: float
    pile_test_loss: float | None = None
    """Pile test cross-entropy reported in the ModelZoo README / paper."""
    training_flops: float | None = None
    """Training FLOPs from the model card (after the "flops typo fix")."""
    seq_len: int = 2048
    min_lr_ratio: float = 0.1
    """The LR decays to 10% of peak."""
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    batch_schedule: str | None = None
    """Global batch changes during the run (`cerebras_gpt.train.batch_schedule` syntax); None: constant."""


# --- presets (shapes from the HF config.json of each repo, checked against the ModelZoo YAMLs) ---

_HUB = "cerebras/"


def _sp(n_layer: int, n_embd: int, n_head: int, output_init_std: float, name: str) -> GPTConfig:
    return GPTConfig(
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=n_head,
        n_inner=4 * n_embd,
        output_init_std=output_init_std,
        name=name,
    )


_SP_SHAPES = {
    # name: (L, d_model, heads, residual out-proj init std [CFG])
    # https://huggingface.co/cerebras/Cerebras-GPT-111M/blob/main/config.json
    "Cerebras-GPT-111M": (10, 768, 12, 0.02 / math.sqrt(2 * 10)),  # 0.004472
    # https://huggingface.co/cerebras/Cerebras-GPT-256M/blob/main/config.json (17 heads of 64)
    "Cerebras-GPT-256M": (14, 1088, 17, 0.02 / math.sqrt(2 * 14)),  # 0.003780
    # https://huggingface.co/cerebras/Cerebras-GPT-590M/blob/main/config.json
    "Cerebras-GPT-590M": (18, 1536, 12, 0.02 / math.sqrt(2 * 18)),  # 0.003333
    # https://huggingface.co/cerebras/Cerebras-GPT-1.3B/blob/main/config.json
    "Cerebras-GPT-1.3B": (24, 2048, 16, 0.0025),  # fixed 0.02/sqrt(64) from 1.3B up [CFG]
    # https://huggingface.co/cerebras/Cerebras-GPT-2.7B/blob/main/config.json (32 heads of 80)
    "Cerebras-GPT-2.7B": (32, 2560, 32, 0.0025),
    # https://huggingface.co/cerebras/Cerebras-GPT-6.7B/blob/main/config.json
    "Cerebras-GPT-6.7B": (32, 4096, 32, 0.0025),
    # https://huggingface.co/cerebras/Cerebras-GPT-13B/blob/main/config.json
    "Cerebras-GPT-13B": (40, 5120, 40, 0.0025),
}

PRESETS: dict[str, GPTConfig] = {name: _sp(L, d, h, std, name) for name, (L, d, h, std) in _SP_SHAPES.items()}

# μP variants: same shapes, μP init/LR/multipliers with the paper's tuned base values (σ_base 0.08, m_emb 10,
# α 1, base 256). The μP checkpoints are published under https://huggingface.co/cerebras/Cerebras-GPT-Intermediate
# (BTLM format, facts file §1 [HFI]), not as separate Cerebras-GPT-<size>-muP repos. Init: these presets reproduce
# the ModelZoo release 2.0.2 μP configs (σ_base 0.08 scaled by width: 0.08 / 0.046188 / 0.010328 for 111M);
# release 1.9.1's Cerebras_GPT/*_mup.yaml used the SP init instead (0.02, 0.02, 0.0044721), which no option here
# reproduces (which of the two the published μP checkpoints used is not stated).
for _size in ("111M", "256M", "590M", "1.3B", "2.7B"):
    _base = PRESETS[f"Cerebras-GPT-{_size}"]
    PRESETS[f"Cerebras-GPT-{_size}-muP"] = dataclasses.replace(
        _base, use_mup=True, output_init_std=None, name=f"Cerebras-GPT-{_size}-muP"
    )

# Small presets for tests, demos and scaling ladders on a CPU. Same architecture, GPT-2 vocab.
PRESETS.update(
    {
        "debug-tiny": GPTConfig(n_layer=2, n_embd=32, n_head=2, block_size=128, name="debug-tiny"),
        "debug-small": GPTConfig(n_layer=4, n_embd=128, n_head=4, block_size=256, name="debug-small"),
        "debug-medium": GPTConfig(n_layer=6, n_embd=256, n_head=4, block_size=512, name="debug-medium"),
        "debug-tiny-muP": GPTConfig(
            n_layer=2, n_embd=32, n_head=2, block_size=128, use_mup=True, name="debug-tiny-muP"
        ),
        "debug-small-muP": GPTConfig(
            n_layer=4, n_embd=128, n_head=4, block_size=256, use_mup=True, name="debug-small-muP"
        ),
    }
)

# The μP proxy from the ModelZoo (configs/muP/params_gpt3_40M.yaml): width 256, 24 layers, 4 heads.
PRESETS["Cerebras-GPT-40M-muP-proxy"] = GPTConfig(
    n_layer=24, n_embd=256, n_head=4, n_inner=1024, use_mup=True, name="Cerebras-GPT-40M-muP-proxy"
)


def _recipe(lr, bs, warmup, steps, tokens, decay, eps, loss, flops) -> PaperRecipe:
    return PaperRecipe(
        peak_lr=lr,
        batch_size=bs,
        warmup_steps=warmup,
        total_steps=steps,
        tokens=tokens,
        decay=decay,
        adam_eps=eps,
        pile_test_loss=loss,
        training_flops=flops,
    )


# Facts file §1-§2: peak LR, batch (seqs), warmup, steps, tokens, decay [CFG], eps, Pile test xent [MZR], FLOPs.
RECIPES: dict[str, PaperRecipe] = {
    "Cerebras-GPT-111M": _recipe(6.0e-4, 120, 1525, 9037, 2.22e9, "linear", 1e-8, 2.608, 2.6e18),
    "Cerebras-GPT-256M": _recipe(6.0e-4, 264, 693, 9468, 5.12e9, "linear", 1e-8, 2.349, 1.3e19),
    "Cerebras-GPT-590M": _recipe(2.0e-4, 264, 693, 21836, 1.18e10, "linear", 1e-8, 2.181, 6.1e19),
    "Cerebras-GPT-1.3B": _recipe(2.0e-4, 528, 346, 24334, 2.63e10, "cosine", 1e-8, 1.997, 2.8e20),
    "Cerebras-GPT-2.7B": _recipe(2.0e-4, 528, 346, 49041, 5.30e10, "cosine", 1e-8, 1.834, 1.1e21),
    "Cerebras-GPT-6.7B": _recipe(1.2e-4, 1040, 176, 62522, 1.33e11, "linear", 1e-9, 1.704, 6.3e21),
    # 13B: 57,000 steps at 720 sequences (13b_bs720.yaml), then 78,223 at 1080 (13b_bs1080.yaml, max_steps
    # 116223 resumed at step 38,000 = 57,000 x 720/1080) [CFG][MZR]: 135,223 optimizer steps in all.
    "Cerebras-GPT-13B": dataclasses.replace(
        _recipe(1.2e-4, 720, 254, 57000 + 78223, 2.57e11, "cosine", 1e-9, 1.572, 2.3e22),
        batch_schedule="720,1080@57000",
    ),
}
# μP runs: peak 6e-3 (η_base, scaled per group by mup.py) decaying to 6e-4; same batches, steps, warmups.
# The 1.3B/2.7B μP configs use cosine; [P2] lists all μP runs as linear: we follow the configs.
_MUP_LOSS = {"111M": 2.588, "256M": 2.359, "590M": 2.155, "1.3B": 1.984, "2.7B": 1.846}
for _size, _loss in _MUP_LOSS.items():
    RECIPES[f"Cerebras-GPT-{_size}-muP"] = dataclasses.replace(
        RECIPES[f"Cerebras-GPT-{_size}"], peak_lr=6.0e-3, pile_test_loss=_loss
    )


def recipe_for(config_or_name: GPTConfig | str) -> PaperRecipe | None:
    """The paper's recipe for a preset, or None for sizes the paper did not train."""
    name = config_or_name.name if isinstance(config_or_name, GPTConfig) else config_or_name
    if not name:
        return None
    key = _CANONICAL.get(name.lower())
    return RECIPES.get(key) if key else None


_CANONICAL = {name.lower(): name for name in PRESETS}


def _lookup(name: str) -> str:
    """Canonical preset name for a case-insensitive name (a ``cerebras/`` prefix is allowed)."""
    raw = name.strip()
    key = raw.lower().removeprefix(_HUB)
    if key in _CANONICAL:
        return _CANONICAL[key]
    close = difflib.get_close_matches(key, list(_CANONICAL), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(_CANONICAL[c] for c in close)}?" if close else ""
    raise ValueError(f"unknown preset {name!r}{hint} (run `cerebras-gpt info` to list all {len(PRESETS)} presets)")


def preset_names() -> list[str]:
    return list(PRESETS)


__all__ = ["GPTConfig", "PRESETS", "RECIPES", "PaperRecipe", "recipe_for", "preset_names"]
