"""Fault injection, the CLI's error boundary: each expected failure of the issue (full or read-only
disk, corrupt or truncated weights, a config.json missing a field, a YAML value of the wrong type, a
mistyped local path, no network for the hub or an lm-eval dataset, --device cuda without a GPU) is one
line naming the value and the fix, exit code 2, no traceback; --debug or CEREBRAS_GPT_DEBUG=1 shows it."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cerebras_gpt import GPT, GPTConfig
from cerebras_gpt.cli import main
from cerebras_gpt.errors import describe

SRC = Path(__file__).resolve().parents[1] / "src"


def run_cli(*args, **env) -> subprocess.CompletedProcess:
    """`python -m cerebras_gpt ARGS` with no network (offline hub and datasets) and extra env vars."""
    environ = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **env}
    environ["PYTHONPATH"] = os.pathsep.join([str(SRC), environ.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "cerebras_gpt", *map(str, args)],
        capture_output=True,
        text=True,
        env=environ,
        timeout=180,
    )


def error_line(out) -> str:
    """The one error line of a failed command; fails the test on a traceback or a 0 exit."""
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr and "Traceback" not in out.stdout, out.stderr
    lines = [line for line in out.stderr.splitlines() if ": error: " in line]
    assert len(lines) == 1, out.stderr
    return lines[0]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("tiny")
    GPT(GPTConfig.from_name("debug-tiny", block_size=64)).save_pretrained(directory)
    return directory


def _copy(model_dir: Path, to: Path) -> Path:
    to.mkdir()
    for f in model_dir.iterdir():
        (to / f.name).write_bytes(f.read_bytes())
    return to


def test_truncated_safetensors(model_dir, tmp_path):
    bad = _copy(model_dir, tmp_path / "bad")
    weights = bad / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    line = error_line(run_cli("generate", "--model", bad, "--prompt", "hi"))
    assert str(weights) in line and "corrupt or truncated" in line and "again" in line


def test_truncated_torch_file(model_dir, tmp_path):
    bad = tmp_path / "bad"
    GPT.from_pretrained(model_dir).save_pretrained(bad, safe_serialization=False)
    weights = bad / "pytorch_model.bin"
    weights.write_bytes(weights.read_bytes()[:3000])
    line = error_line(run_cli("generate", "--model", bad, "--prompt", "hi"))
    assert str(weights) in line and "corrupt or truncated" in line


def test_config_json_missing_a_field(model_dir, tmp_path):
    bad = _copy(model_dir, tmp_path / "bad")
    config = json.loads((bad / "config.json").read_text())
    del config["n_embd"]
    (bad / "config.json").write_text(json.dumps(config))
    line = error_line(run_cli("generate", "--model", bad, "--prompt", "hi"))
    assert str(bad / "config.json") in line and "lacks n_embd" in line
    (bad / "config.json").write_text('{"n_layer": 2, "n_emb')  # truncated
    line = error_line(run_cli("generate", "--model", bad, "--prompt", "hi"))
    assert "is not valid JSON" in line and "truncated" in line


def test_yaml_numbers_written_as_strings_are_coerced_and_wrong_types_named(model_dir, tmp_path):
    config = tmp_path / "gen.yaml"
    # PyYAML (YAML 1.1) reads 1e-3 as the string "1e-3"; it is taken as the number it means.
    config.write_text(
        f"model: {model_dir}\nprompt: hi\nsampling:\n  max_new_tokens: 3\n  temperature: 1e-3\n  stop_at_eos: false\n"
    )
    out = run_cli("generate", "--config", config)
    assert out.returncode == 0, out.stderr
    config.write_text(f"model: {model_dir}\nprompt: hi\nsampling:\n  max_new_tokens: lots\n")
    line = error_line(run_cli("generate", "--config", config))
    assert str(config) in line and "max_new_tokens is 'lots' (str); it must be int" in line


def test_a_mistyped_local_path_is_not_taken_for_a_hub_id(model_dir, tmp_path):
    typo = model_dir.parent / (model_dir.name + "x")
    line = error_line(run_cli("generate", "--model", typo, "--prompt", "hi"))
    assert f"model {str(typo)!r}: no such local directory" in line and "check the path" in line
    assert "did you mean" in line and str(model_dir) in line
    line = error_line(run_cli("generate", "--model", model_dir / "config.json", "--prompt", "hi"))
    assert "is a file; pass the model directory" in line


def test_hub_download_without_network():
    line = error_line(run_cli("generate", "--model", "someone/not-downloaded-here", "--prompt", "hi"))
    assert "'someone/not-downloaded-here': no such local directory" in line
    assert "could not be downloaded" in line and "no network" in line


def test_lm_eval_dataset_download_without_network(model_dir, tmp_path):
    (tmp_path / "probe.yaml").write_text(
        "task: offline_probe\ndataset_path: someone/absent-dataset\noutput_type: loglikelihood\n"
        "test_split: test\ndoc_to_text: '{{text}}'\ndoc_to_target: '{{label}}'\nmetric_list:\n  - metric: acc\n"
    )
    line = error_line(
        run_cli("eval", "--model", model_dir, "--tasks", "offline_probe", "--include-path", tmp_path, "--limit", "2")
    )
    assert "lm-eval task(s) ['offline_probe']" in line and "the network cannot be reached" in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_a_gpu(model_dir):
    line = error_line(run_cli("generate", "--model", model_dir, "--prompt", "hi", "--device", "cuda"))
    assert "--device cuda: this machine has no usable CUDA GPU" in line and "--device cpu" in line
    line = error_line(run_cli("generate", "--model", model_dir, "--prompt", "hi", "--device", "gpu0"))
    assert "--device 'gpu0' is not a device" in line


def test_debug_flag_and_env_show_the_traceback(model_dir, tmp_path):
    typo = tmp_path / "nowhere"
    for out in (
        run_cli("--debug", "generate", "--model", typo, "--prompt", "hi"),
        run_cli("generate", "--model", typo, "--prompt", "hi", "--debug"),
        run_cli("generate", "--model", typo, "--prompt", "hi", CEREBRAS_GPT_DEBUG="1"),
    ):
        assert out.returncode != 0 and "Traceback" in out.stderr and "no such local directory" in out.stderr


# ----------------------------------------------------------------------------- disks (in process)
@pytest.mark.parametrize(
    "code, words", [(errno.ENOSPC, "no space left on"), (errno.EROFS, "read-only"), (errno.EACCES, "permission denied")]
)
def test_disk_full_or_read_only_is_said_in_words(model_dir, tmp_path, monkeypatch, capsys, code, words):
    import safetensors.torch

    def failing_save_file(tensors, filename, metadata=None):
        raise OSError(code, os.strerror(code), filename)

    monkeypatch.setattr(safetensors.torch, "save_file", failing_save_file)
    previous = _copy(model_dir, tmp_path / "out")
    assert main(["export", "--model", str(model_dir), "--out", str(previous), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert words in err and "model.safetensors" in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # the previous output is intact
    assert (previous / "model.safetensors").read_bytes() == (model_dir / "model.safetensors").read_bytes()


@pytest.mark.parametrize(
    "message",
    [
        "[enforce fail at inline_container.cc:603] . unexpected pos 704 vs 598",
        "PytorchStreamWriter failed writing file data/0: file write failed",
        "basic_ios::clear: iostream error",  # the full-disk checkpoint of the issue
    ],
)
def test_torch_save_on_a_full_disk_is_said_in_words(message):
    """torch.save's C++ writer loses errno; the messages it raises on a full disk are recognised."""
    assert "the disk is probably full or read-only" in describe(RuntimeError(message))


def test_unexpected_errors_keep_their_traceback():
    assert describe(KeyError("a bug")) is None and describe(AttributeError("a bug")) is None


class _RunsCode:
    """A pickle that would create a file when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_weight_file_holding_code_is_refused_and_never_run(model_dir, tmp_path):
    from cerebras_gpt.hf import load_pretrained

    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "config.json").write_text((model_dir / "config.json").read_text())
    marker = tmp_path / "code-ran"
    torch.save({"transformer.wte.weight": _RunsCode(marker)}, evil / "pytorch_model.bin")
    with pytest.raises(ValueError, match="holds more than tensors.*could run code"):
        load_pretrained(evil)
    assert not marker.exists()
