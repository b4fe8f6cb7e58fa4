"""One canonical parameter name, whatever wraps the model: optimizer groups and sparsity masks agree."""

from __future__ import annotations

import torch
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

from cerebras_gpt import mup
from cerebras_gpt.config import PRESETS
from cerebras_gpt.model import GPT
from cerebras_gpt.runtime import canonical_name
from cerebras_gpt.train.optim import param_groups


def test_wrapped_names_come_back_to_the_plain_models_names():
    assert (
        canonical_name("module._orig_mod.transformer.h.0._checkpoint_wrapped_module.attn.c_attn.weight")
        == "transformer.h.0.attn.c_attn.weight"
    )
    assert canonical_name("_orig_mod.module.transformer.wte.weight") == "transformer.wte.weight"
    assert canonical_name("_fsdp_wrapped_module.transformer.ln_f.bias") == "transformer.ln_f.bias"
    assert canonical_name("transformer.h.1.mlp.c_fc.weight") == "transformer.h.1.mlp.c_fc.weight"


def test_real_wrappers_checkpointing_and_compile_give_the_plain_names():
    model = GPT(PRESETS["debug-tiny"])
    plain = [name for name, _ in model.named_parameters()]
    for i, block in enumerate(model.transformer.h):
        model.transformer.h[i] = checkpoint_wrapper(block)
    wrapped = torch.compile(model)  # an OptimizedModule: names gain _orig_mod (compiled lazily: no run here)
    names = [name for name, _ in wrapped.named_parameters()]
    assert any("_checkpoint_wrapped_module" in n for n in names) and all(n.startswith("_orig_mod.") for n in names)
    assert [canonical_name(n) for n in names] == plain
    # The optimizer sees the same μP LR groups, by the same names, through the wrappers.
    config = mup.to_mup(PRESETS["debug-tiny"], base_width=PRESETS["debug-tiny"].n_embd // 2)
    groups = lambda m: [(g["lr_mult"], g["weight_decay"], g["names"]) for g in param_groups(m, config, 0.1)]  # noqa: E731
    assert groups(wrapped) == groups(GPT(PRESETS["debug-tiny"])) and len(groups(wrapped)) >= 3


def test_the_query_fold_is_mups_one_over_sqrt_head_dim():
    config = mup.to_mup(PRESETS["debug-tiny"], base_width=PRESETS["debug-tiny"].n_embd // 2)
    assert abs(mup.query_fold_scale(config) - 1 / config.head_dim**0.5) < 1e-12
    assert mup.query_fold_scale(PRESETS["debug-tiny"]) == 1.0
