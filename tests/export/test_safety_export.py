"""Fault injection, export: a user's OUT.tmp directory or OUT.gguf.tmp file is never removed or
overwritten, a failed export leaves no temporary files and the previous output intact, and
--overwrite replaces an existing export only once the new one is complete."""

from __future__ import annotations

import json
import os
import stat

import pytest
import torch

from cerebras_gpt import GPT, GPTConfig
from cerebras_gpt.commands.export import main as export_main
from cerebras_gpt.export import export_model
from cerebras_gpt.hf import load_pretrained


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("tiny")
    GPT(GPTConfig.from_name("debug-tiny")).save_pretrained(directory)
    return directory


def _user_files(tmp_path):
    """A user's own OUT.tmp directory and OUT.gguf.tmp file, the names the old export clobbered."""
    user_dir = tmp_path / "hf.tmp"
    user_dir.mkdir()
    (user_dir / "notes.txt").write_text("mine")
    user_file = tmp_path / "m.gguf.tmp"
    user_file.write_text("also mine")
    return user_dir, user_file


def test_export_leaves_the_users_tmp_names_alone(model_dir, tmp_path, capsys):
    user_dir, user_file = _user_files(tmp_path)
    assert export_main(["--model", str(model_dir), "--out", str(tmp_path / "hf")]) == 0
    assert export_main(["--model", str(model_dir), "--format", "gguf", "--out", str(tmp_path / "m.gguf")]) == 0
    assert (user_dir / "notes.txt").read_text() == "mine"
    assert user_file.read_text() == "also mine"
    assert load_pretrained(tmp_path / "hf").config.n_layer == 2
    # No temporary file of ours is left behind, and the outputs have ordinary permissions.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "hf.tmp", "m.gguf", "m.gguf.tmp"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "hf").stat().st_mode) == 0o777 & ~umask
    assert stat.S_IMODE((tmp_path / "m.gguf").stat().st_mode) == 0o666 & ~umask


@pytest.mark.parametrize("fmt, name", [("hf", "hf"), ("gguf", "m.gguf")])
def test_a_failed_export_removes_its_temp_and_keeps_the_previous_output(model_dir, tmp_path, monkeypatch, fmt, name):
    user_dir, user_file = _user_files(tmp_path)
    out = tmp_path / name
    export_model(model_dir, fmt, out)
    before = sorted(p.name for p in tmp_path.iterdir())
    previous = (out / "config.json").read_text() if fmt == "hf" else out.read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    if fmt == "hf":
        monkeypatch.setattr(GPT, "save_pretrained", disk_full)
    else:
        import gguf

        monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", disk_full)
    with pytest.raises(OSError, match="No space left"):
        export_model(model_dir, fmt, out, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert ((out / "config.json").read_text() if fmt == "hf" else out.read_bytes()) == previous
    assert (user_dir / "notes.txt").read_text() == "mine" and user_file.read_text() == "also mine"


def test_overwrite_semantics(model_dir, tmp_path, capsys):
    out = tmp_path / "hf"
    assert export_main(["--model", str(model_dir), "--out", str(out)]) == 0
    (out / "stale.txt").write_text("from an older export")
    assert export_main(["--model", str(model_dir), "--out", str(out)]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert (out / "stale.txt").exists()
    assert export_main(["--model", str(model_dir), "--out", str(out), "--overwrite"]) == 0
    assert not (out / "stale.txt").exists()  # replaced as a whole, not merged
    assert json.loads((out / "config.json").read_text())["n_layer"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]
