"""`cerebras-gpt serve` accepts vLLM's flag names: a `vllm serve` command line runs here unchanged."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx
import openai
import pytest
import torch

from cerebras_gpt import GPT, GPTConfig
from cerebras_gpt.commands import parse_args
from cerebras_gpt.commands.serve import ServeArgs, translate_vllm_flags


def test_vllm_flag_names_map_to_ours():
    argv = [
        "--model",
        "m",
        "--served-model-name",
        "tiny",
        "--max-num-seqs=3",
        "--max-model-len",
        "64",
        "--max-num-batched-tokens",
        "512",
    ]
    args = parse_args(ServeArgs, translate_vllm_flags(argv), "cerebras-gpt serve")
    assert args.model_name == "tiny"
    assert (args.engine.max_slots, args.engine.max_seq_len, args.engine.max_prefill_tokens) == (3, 64, 512)
    ours = parse_args(
        ServeArgs,
        [
            "--model",
            "m",
            "--model-name",
            "tiny",
            "--max-slots",
            "3",
            "--max-seq-len",
            "64",
            "--max-prefill-tokens",
            "512",
        ],
        "cerebras-gpt serve",
    )
    assert ours == args


def test_a_vllm_command_line_serves(tmp_path):
    torch.manual_seed(0)
    GPT(GPTConfig.from_name("debug-tiny", block_size=128)).eval().save_pretrained(tmp_path / "model")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cerebras_gpt",
            "serve",
            "--model",
            str(tmp_path / "model"),
            "--port",
            str(port),
            "--served-model-name",
            "tiny-vllm",
            "--max-num-seqs",
            "2",
            "--max-model-len",
            "64",
            "--log-level",
            "warning",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the server did not start: {proc.communicate(timeout=5)[0][-2000:]}")
            time.sleep(0.2)
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)
        assert [m.id for m in client.models.list().data] == ["tiny-vllm"]
        assert client.completions.create(model="tiny-vllm", prompt="Hi", max_tokens=2).usage.completion_tokens == 2
        assert "cerebras_gpt_slots_total 2.0" in httpx.get(url + "/metrics").text
        with pytest.raises(openai.BadRequestError):  # --max-model-len 64: prompt + completion over 64 positions
            client.completions.create(model="tiny-vllm", prompt="word " * 60, max_tokens=10)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
