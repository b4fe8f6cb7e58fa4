"""LoRA (Hu et al. 2021, arXiv:2106.09685): low-rank adapters on the GPT's linear layers, merge, PEFT export.

Why our own module rather than `peft`: peft does wrap our `nn.Linear`-based GPT (``get_peft_model`` with
``target_modules=["c_attn", "c_proj", "c_fc"]`` runs), but it renames every parameter
(``base_model.model.…base_layer.weight``) and puts a `PeftModel` in front of the GPT. The training loop,
its checkpoints (which write ``model.save_pretrained`` as a plain HF directory), the μP learning-rate
groups and the sparsifier all key on our GPT-2 parameter names, and a μP model's export folds its
multipliers into the weights, which a LoRA delta must follow. A 100-line module keeps every base
parameter under its own name and object (bit-identical, frozen), keeps the model a `GPT`, and writes the
adapter in PEFT's file format, so `peft` still loads it onto `transformers`' GPT-2 (see `save_adapter`).

A targeted linear computes ``W x + b + (α/r)·B A dropout(x)`` with A (r, in) drawn like peft's default
(Kaiming-uniform, a=√5) and B (out, r) zero, so training starts exactly at the base model.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from cerebras_gpt import mup
from cerebras_gpt.model import GPT

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


@dataclass
class LoRAConfig:
    """Low-rank adapters: which linear layers, and their rank, scale and dropout."""

    rank: int = 8
    """Rank r of each adapter (0: full fine-tuning, no adapters)."""
    alpha: float = 16.0
    """Scale numerator: the update is (alpha / rank) · B A."""
    dropout: float = 0.05
    """Dropout on the adapter's input (training only)."""
    target_modules: list[str] = field(default_factory=lambda: ["c_attn", "c_proj", "c_fc"])
    """Linear layers to adapt, by the last part of their name (c_attn, c_proj, c_fc; c_proj is both the
    attention and the MLP output, as in peft)."""

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.rank, int) or self.rank < 0:
            problems.append(f"rank={self.rank!r} must be an integer >= 0 (0 disables LoRA)")
        if not self.alpha > 0:
            problems.append(f"alpha={self.alpha!r} must be > 0")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout={self.dropout!r} must be in [0, 1)")
        bad = sorted(set(self.target_modules) - {"c_attn", "c_proj", "c_fc"})
        if bad or not self.target_modules:
            problems.append(f"target_modules={self.target_modules!r}: choose among c_attn, c_proj, c_fc")
        if problems:
            raise ValueError("invalid LoRA settings: " + "; ".join(problems))

    @property
    def enabled(self) -> bool:
        return self.rank > 0


class LoRALinear(nn.Linear):
    """An `nn.Linear` whose ``weight``/``bias`` are the base layer's own (frozen) parameters, plus A and B."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias  # the same Parameter objects, not copies
        self.rank, self.alpha, self.scaling = rank, alpha, alpha / rank
        w = base.weight
        self.lora_A = nn.Parameter(torch.empty(rank, self.in_features, device=w.device, dtype=w.dtype))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank, device=w.device, dtype=w.dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # peft's default init of A
        self.lora_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(…, in) -> (…, out)."""
        update = F.linear(F.linear(self.lora_dropout(x), self.lora_A), self.lora_B)
        return F.linear(x, self.weight, self.bias) + update * self.scaling

    def delta_weight(self) -> torch.Tensor:
        """(α/r)·B A, shaped like ``weight`` (out, in)."""
        return (self.lora_B @ self.lora_A) * self.scaling


class LoRAGPT(GPT):
    """A `GPT` carrying LoRA adapters. ``save_pretrained`` writes the merged model: a plain model directory.

    Built by `apply_lora` from a GPT's own modules (adopted, not copied), so the model keeps its parameters,
    names and every GPT method; training checkpoints then hold the adapters in their state and a merged,
    directly loadable ``model/`` directory.
    """

    lora: LoRAConfig

    def __init__(self, base: GPT, lora: LoRAConfig) -> None:
        # Not GPT.__init__: that would allocate and initialise a second set of layers. Take the base's
        # children (transformer, lm_head: the tie survives, it is one Parameter) and its plain attributes
        # (config, the μP multipliers, training); nn.Module's own bookkeeping starts with "_" and stays ours.
        nn.Module.__init__(self)
        assert not base._parameters and not base._buffers, "GPT keeps its tensors in submodules"
        for name, child in base.named_children():
            self.add_module(name, child)
        for name, value in vars(base).items():
            if not name.startswith("_"):
                setattr(self, name, value)
        self.lora = lora

    def lora_layers(self) -> dict[str, LoRALinear]:
        return {name: m for name, m in self.named_modules() if isinstance(m, LoRALinear)}

    def merged(self) -> GPT:
        """A plain GPT (a copy) whose targeted weights are W + (α/r)·B A."""
        deltas = {f"{name}.weight": m.delta_weight() for name, m in self.lora_layers().items()}
        state = {
            k: v.detach() + deltas[k].detach() if k in deltas else v.detach()
            for k, v in self.state_dict().items()
            if ".lora_" not in k
        }
        model = GPT(self.config, init_weights=False).to(next(self.parameters()).device)
        model.load_state_dict(state)
        return model.eval()

    def save_pretrained(self, directory: str | Path, **kwargs) -> Path:
        """Write the merged model as a Hugging Face GPT-2 directory (see `cerebras_gpt.hf.save_pretrained`)."""
        return self.merged().save_pretrained(directory, **kwargs)

    def save_adapter(self, directory: str | Path, base_model: str | None = None) -> Path:
        """Write the adapters alone in PEFT's format (`adapter_config.json`, `adapter_model.safetensors`).

        Keys are ``base_model.model.<module>.lora_{A,B}.weight``; our module names are HF GPT-2's, and A, B
        act on activations, so they need no transpose for HF's `Conv1D` (``fan_in_fan_out`` tells peft that
        the base weight is stored (in, out) when it merges). A μP model is exported with 1/√d_head folded
        into the query rows of c_attn (`cerebras_gpt.hf`), so the query rows of B are scaled to match.
        """
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {}
        for name, m in self.lora_layers().items():
            b = m.lora_B.detach().float().cpu()
            if name.endswith("attn.c_attn"):
                b = mup.fold_query_rows(b, self.config)
            tensors[f"base_model.model.{name}.lora_A.weight"] = m.lora_A.detach().float().cpu().contiguous()
            tensors[f"base_model.model.{name}.lora_B.weight"] = b.contiguous()
        save_file(tensors, str(directory / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        config = {
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "r": self.lora.rank,
            "lora_alpha": self.lora.alpha,
            "lora_dropout": self.lora.dropout,
            "target_modules": sorted(self.lora.target_modules),
            "fan_in_fan_out": True,
            "bias": "none",
            "inference_mode": True,
            "init_lora_weights": True,
            "modules_to_save": None,
            "base_model_name_or_path": base_model,
        }
        (directory / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        return directory


def apply_lora(model: GPT, config: LoRAConfig) -> LoRAGPT:
    """Freeze ``model`` and put adapters on its target linears; returns a `LoRAGPT` over the same modules.

    The base's layers are shared, not copied (its parameters stay the same objects, bit-identical), so use
    the returned model from here on: ``model`` itself now runs through the adapters too.
    """
    if not config.enabled:
        raise ValueError("LoRA rank is 0; set --lora.rank > 0 to add adapters")
    if isinstance(model, LoRAGPT):
        raise ValueError("the model already carries LoRA adapters")
    for p in model.parameters():
        p.requires_grad_(False)
    targets = [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and name.rsplit(".", 1)[-1] in config.target_modules
    ]
    for name, module in targets:
        parent_name, child = name.rsplit(".", 1)
        setattr(model.get_submodule(parent_name), child, LoRALinear(module, config.rank, config.alpha, config.dropout))
    return LoRAGPT(model, config)


def load_adapter(model: GPT, directory: str | Path) -> LoRAGPT:
    """Put the adapters saved by `LoRAGPT.save_adapter` (or peft, for a GPT-2 model) onto ``model``."""
    from safetensors.torch import load_file

    directory = Path(directory)
    if not (directory / ADAPTER_CONFIG).exists():
        raise ValueError(f"{str(directory)!r} has no {ADAPTER_CONFIG}; pass a directory written by --save-adapter")
    cfg = json.loads((directory / ADAPTER_CONFIG).read_text())
    if cfg.get("peft_type") != "LORA":
        raise ValueError(f"{directory / ADAPTER_CONFIG}: peft_type={cfg.get('peft_type')!r}; only LORA loads")
    targets = cfg["target_modules"]
    model = apply_lora(
        model,
        LoRAConfig(
            rank=int(cfg["r"]),
            alpha=float(cfg["lora_alpha"]),
            dropout=float(cfg.get("lora_dropout", 0.0)),
            target_modules=list(targets if isinstance(targets, list) else [targets]),
        ),
    )
    tensors = load_file(str(directory / ADAPTER_WEIGHTS))
    layers = model.lora_layers()
    missing = []
    for name, m in layers.items():
        a, b = (tensors.get(f"base_model.model.{name}.lora_{x}.weight") for x in "AB")
        if a is None or b is None:
            missing.append(name)
            continue
        if name.endswith("attn.c_attn"):
            b = mup.fold_query_rows(b, model.config, unfold=True)
        with torch.no_grad():
            m.lora_A.copy_(a)
            m.lora_B.copy_(b)
    if missing:
        raise ValueError(f"adapter in {str(directory)!r} lacks weights for {missing}")
    return model


__all__ = ["LoRAConfig", "LoRALinear", "LoRAGPT", "apply_lora", "load_adapter"]
