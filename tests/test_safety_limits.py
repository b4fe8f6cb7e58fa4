"""Fault injection, resource limits: a config.json (or overrides) with an absurd depth or width, or a
model bigger than this machine's free memory, is refused with the numbers before a layer is built."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cerebras_gpt import GPT, GPTConfig, limits
from cerebras_gpt.config import MAX_PARAMS
from cerebras_gpt.hf import load_pretrained

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.mark.parametrize(
    "overrides", [dict(n_layer=10**9), dict(n_embd=2**40, n_head=1), dict(vocab_size=10**15), dict(block_size=2**50)]
)
def test_absurd_sizes_are_refused_by_the_config(overrides):
    with pytest.raises(ValueError, match=r"parameters \(n_layer=.*\) is beyond any model this code builds"):
        GPTConfig.from_name("debug-tiny", **overrides)


def test_the_largest_preset_is_within_the_bound():
    assert GPTConfig.from_name("Cerebras-GPT-13B").num_params() < MAX_PARAMS


def test_a_model_bigger_than_free_memory_is_refused_before_allocation(monkeypatch):
    config = GPTConfig.from_name("debug-tiny")
    monkeypatch.setattr(limits, "available_memory", lambda device: 1 << 20)  # 1 MiB free
    with pytest.raises(
        ValueError, match=r"has [\d,]+ parameters: .* GiB in float32, more than the 0.0 GiB available on cpu"
    ):
        GPT(config)
    with torch.device("meta"):  # nothing is allocated on meta: no check
        assert GPT(config, init_weights=False).config is config


def _config_dir(tmp_path: Path, **fields) -> Path:
    """A model directory whose config.json says ``fields`` and which holds no weights at all."""
    hf = {"model_type": "gpt2", "n_layer": 2, "n_embd": 64, "n_head": 4, "n_positions": 64, "vocab_size": 50257}
    (tmp_path / "config.json").write_text(json.dumps({**hf, **fields}))
    return tmp_path


def test_a_config_json_too_deep_for_this_machine_is_refused_before_reading_weights(tmp_path):
    # 100k layers of width 768: ~7e11 parameters, within the sane bound but far beyond any CPU's memory.
    directory = _config_dir(tmp_path, n_layer=100_000, n_embd=768, n_head=12)
    with pytest.raises(ValueError, match=r"n_layer=100000.* GiB in float32, more than the .* GiB available"):
        load_pretrained(directory)  # the check comes first: the directory has no weights to read


def test_the_cli_refuses_absurd_configs_in_one_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    for fields in (dict(n_layer=100_000, n_embd=768, n_head=12), dict(n_embd=2**40, n_head=1)):
        directory = tmp_path / f"width-{fields['n_embd']}"
        directory.mkdir()
        _config_dir(directory, **fields)
        out = subprocess.run(
            [sys.executable, "-m", "cerebras_gpt", "generate", "--model", str(directory), "--prompt", "hi"],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
        assert "parameters" in out.stderr and len(out.stderr.strip().splitlines()) == 1
