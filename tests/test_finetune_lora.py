"""LoRA: only adapters train (base bit-identical), merged = base + adapter, PEFT adapter loads onto HF GPT-2."""

from __future__ import annotations

import pytest
import torch

from cerebras_gpt import GPT, GPTConfig, load_tokenizer
from cerebras_gpt.finetune.data import FinetuneLoader, build_examples, val_batches
from cerebras_gpt.finetune.lora import LoRAConfig, LoRAGPT, LoRALinear, apply_lora, load_adapter
from cerebras_gpt.finetune.synthetic import reverse_records


def _lora_model(name: str = "debug-tiny", rank: int = 4) -> tuple[GPT, LoRAGPT]:
    torch.manual_seed(0)
    base = GPT(GPTConfig.from_name(name, block_size=64)).eval()
    model = apply_lora(GPT(base.config), LoRAConfig(rank=rank, alpha=8.0, dropout=0.0))
    model.load_state_dict(base.state_dict(), strict=False)
    with torch.no_grad():  # B starts at zero; give the adapters a visible effect
        for m in model.lora_layers().values():
            m.lora_B.normal_(0, 0.2)
    return base, model.eval()


def test_lora_trains_only_adapters_base_bit_identical(tmp_path):
    from cerebras_gpt.train.config import TrainConfig
    from cerebras_gpt.train.loop import train

    tok = load_tokenizer()
    torch.manual_seed(0)
    model = apply_lora(GPT(GPTConfig.from_name("debug-tiny", block_size=64)), LoRAConfig(rank=4))
    base = {k: v.clone() for k, v in model.state_dict().items() if ".lora_" not in k}
    adapters = {k: v.clone() for k, v in model.state_dict().items() if ".lora_" in k}
    assert len(model.lora_layers()) == 2 * 4  # c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj in each of 2 layers
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n for n in trainable)
    rows = build_examples(reverse_records(64, seed=1), tok, seq_len=16)
    result = train(TrainConfig(model="debug-tiny", steps=4, batch_size=8, seq_len=16, lr=1e-2, warmup_steps=1,
                               out_dir=str(tmp_path), progress=False, tensorboard=False, resume="never"),
                   model=model, train_loader=FinetuneLoader(rows, 8, tok.eos_id), val_batches=val_batches(rows[:8], 8, tok.eos_id))
    assert result["steps"] == 4
    after = model.state_dict()
    for k, v in base.items():
        assert torch.equal(after[k], v), k  # bit-identical
    assert all(not torch.equal(after[k], v) for k, v in adapters.items() if k.endswith("lora_B"))
    # the run's exported model directory is the merged model
    from cerebras_gpt.hf import load_pretrained

    merged = load_pretrained(result["model_dir"])
    x = torch.randint(0, 50257, (2, 12))
    torch.testing.assert_close(merged(x), model.eval()(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["debug-tiny", "debug-tiny-muP"])
def test_merged_logits_equal_base_plus_adapter(name):
    base, model = _lora_model(name)
    x = torch.randint(0, 50257, (2, 10))
    with torch.no_grad():
        assert not torch.allclose(base(x), model(x), atol=1e-3)  # the adapters change the output
        merged = model.merged()
        torch.testing.assert_close(merged(x), model(x), rtol=1e-5, atol=1e-5)
        for name_, m in model.lora_layers().items():
            w = merged.get_submodule(name_).weight
            torch.testing.assert_close(w, m.weight + m.scaling * m.lora_B @ m.lora_A)
    assert type(merged) is GPT and not any(isinstance(m, LoRALinear) for m in merged.modules())


@pytest.mark.parametrize("name", ["debug-tiny", "debug-tiny-muP"])
def test_peft_adapter_loads_onto_transformers_gpt2(tmp_path, name):
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    base, model = _lora_model(name)
    base.save_pretrained(tmp_path / "base")
    model.save_adapter(tmp_path / "adapter", base_model=str(tmp_path / "base"))
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "base").eval()
    tuned = peft.PeftModel.from_pretrained(hf, tmp_path / "adapter").eval()
    x = torch.randint(0, 50257, (2, 10))
    with torch.no_grad():
        ours = model(x)
        torch.testing.assert_close(tuned(input_ids=x).logits, ours, rtol=1e-4, atol=1e-4)
        # peft's own merge into HF Conv1D weights agrees too (fan_in_fan_out)
        torch.testing.assert_close(tuned.merge_and_unload()(input_ids=x).logits, ours, rtol=1e-4, atol=1e-4)
        # and our loader reads the adapter back
        again = load_adapter(GPT.from_pretrained(tmp_path / "base"), tmp_path / "adapter").eval()
        torch.testing.assert_close(again(x), ours, rtol=1e-5, atol=1e-5)


def test_lora_config_errors():
    with pytest.raises(ValueError, match="target_modules"):
        LoRAConfig(target_modules=["q_proj"])
    with pytest.raises(ValueError, match="alpha"):
        LoRAConfig(alpha=0)
