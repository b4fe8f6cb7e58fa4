"""`cerebras-gpt export --format hf|sparse`: from a model directory or a training checkpoint, to a
directory that `transformers` (hence vLLM and TGI) loads with the same logits, or to sparse storage
that loads back to the identical model."""

from __future__ import annotations

import json

import pytest
import torch

from cerebras_gpt import GPT, GPTConfig
from cerebras_gpt.commands.export import main as export_main

transformers = pytest.importorskip("transformers")


def _logits_match(ours: GPT, hf_dir, ids: torch.Tensor) -> None:
    theirs = transformers.AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    with torch.no_grad():
        torch.testing.assert_close(theirs(ids).logits, ours(ids), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("preset", ["debug-tiny", "debug-tiny-muP"])
def test_hf_export_from_training_checkpoint_loads_in_transformers(preset, tmp_path, capsys):
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_name(preset)).eval()
    ckpt = tmp_path / "ckpt-000100"  # a training checkpoint keeps its model directory in model/
    model.save_pretrained(ckpt / "model")
    (ckpt / "trainer_state.json").write_text(json.dumps({"step": 100}))
    out = tmp_path / "hf"
    assert export_main(["--model", str(ckpt), "--format", "hf", "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["path"] == str(out)
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["GPT2LMHeadModel"] and config["model_type"] == "gpt2"
    assert {"model.safetensors", "vocab.json", "merges.txt", "tokenizer_config.json"} <= {p.name for p in out.iterdir()}
    ids = torch.randint(0, model.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(1))
    _logits_match(model, out, ids)
    tok = transformers.AutoTokenizer.from_pretrained(out)
    assert tok.eos_token_id == 50256 and tok("Hello world")["input_ids"] == [15496, 995]


def test_sparse_export_round_trips(tmp_path):
    from cerebras_gpt.export.sparse import load_sparse

    torch.manual_seed(0)
    model = GPT(GPTConfig.from_name("debug-tiny")).eval()
    with torch.no_grad():  # 90% of each block matrix pruned, as sparse training leaves them
        for name, p in model.named_parameters():
            if p.dim() == 2 and ".h." in name:
                p.mul_(torch.rand_like(p) > 0.9)
    model.save_pretrained(tmp_path / "dense")
    out = tmp_path / "sparse"
    assert export_main(["--model", str(tmp_path / "dense"), "--format", "sparse", "--out", str(out)]) == 0
    back = load_sparse(out)
    ids = torch.randint(0, model.config.vocab_size, (1, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(back(ids), model(ids), atol=0, rtol=0)


def test_export_bad_input(tmp_path, capsys):
    assert export_main(["--model", str(tmp_path / "missing"), "--format", "hf", "--out", str(tmp_path / "o")]) == 2
    assert "missing" in capsys.readouterr().err
