"""`cerebras-gpt demo` end to end, shortened: prepare the built-in corpus, train, perplexity, model directory,
sample."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cerebras_gpt",
            "demo",
            "--out",
            str(out),
            "--steps",
            "4",
            "--batch-size",
            "2",
            "--seq-len",
            "32",
            "--minutes",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "perplexity" in proc.stdout and "The Python standard library" in proc.stdout
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out / "model")
    assert model.config.n_layer == 4
    assert (out / "loss.png").exists() and (out / "metrics.jsonl").exists()
