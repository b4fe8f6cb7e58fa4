"""Atomic writes: a failure at any point leaves the previous file or directory whole."""

from __future__ import annotations

import errno
import json
import os

import pytest

from cerebras_gpt import atomic


def _no_temp_files(directory) -> bool:
    return not [p for p in directory.iterdir() if atomic.TMP_SUFFIX in p.name or atomic.OLD_SUFFIX in p.name]


def test_write_json_replaces_whole_or_not_at_all(tmp_path):
    path = tmp_path / "state.json"
    atomic.write_json(path, {"best": 1})

    def fail_midway(f):
        f.write(b'{"best": ')
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError):
        atomic.write_with(path, fail_midway)
    assert json.loads(path.read_text()) == {"best": 1} and _no_temp_files(tmp_path)
    atomic.write_json(path, {"best": 2})
    assert json.loads(path.read_text()) == {"best": 2} and _no_temp_files(tmp_path)


def test_building_dir_failure_leaves_the_old_directory(tmp_path):
    target = tmp_path / "best"
    target.mkdir()
    (target / "weights").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic.building_dir(target) as tmp:
            (tmp / "weights").write_text("half")
            raise RuntimeError("copy failed")
    assert (target / "weights").read_text() == "old" and _no_temp_files(tmp_path)
    with atomic.building_dir(target) as tmp:
        (tmp / "weights").write_text("new")
    assert (target / "weights").read_text() == "new" and _no_temp_files(tmp_path)


def test_the_old_directory_is_removed_only_after_the_new_one_is_in_place(tmp_path, monkeypatch):
    target = tmp_path / "model"
    target.mkdir()
    (target / "weights").write_text("old")
    built = atomic.temp_dir_for(target)
    (built / "weights").write_text("new")
    renames = []
    real_rename = os.rename

    def rename(src, dst):
        renames.append((os.path.basename(src), os.path.basename(dst)))
        if len(renames) == 2:  # crash between moving the old one aside and moving the new one in
            raise OSError(errno.EIO, "crash")
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError):
        atomic.replace_dir(built, target)
    monkeypatch.undo()
    assert not target.exists() and list(tmp_path.glob(f"model{atomic.OLD_SUFFIX}*"))  # the old one, aside
    atomic.recover_dir(target)  # what the next save or load does first
    assert (target / "weights").read_text() == "old"


def test_copy_dir_replaces_a_directory(tmp_path):
    source, target = tmp_path / "src", tmp_path / "dst"
    source.mkdir()
    (source / "a").write_text("1")
    target.mkdir()
    (target / "stale").write_text("x")
    atomic.copy_dir(source, target)
    assert sorted(p.name for p in target.iterdir()) == ["a"] and _no_temp_files(tmp_path)


def test_error_words():
    assert atomic.describe_os_error(OSError(errno.ENOSPC, "x")) == "no space left on device"
    assert atomic.describe_os_error(OSError(errno.EROFS, "x")) == "read-only file system"
    message = str(atomic.write_failed(OSError(errno.ENOSPC, "x"), "/out/best.json", "the sweep summary"))
    assert "no space left on device" in message and "/out/best.json" in message and "\n" not in message


def test_metrics_truncation_is_not_an_in_place_rewrite(tmp_path):
    from cerebras_gpt.train.metrics import MetricsWriter

    writer = MetricsWriter(tmp_path, tensorboard=False)
    for step in (1, 2, 3):
        writer.write({"step": step, "loss": 1.0})
    with writer.path.open("a") as f:
        f.write('{"step": 4, "lo')  # cut short by a SIGKILL
    inode = writer.path.stat().st_ino
    writer.truncate_after(2)
    assert [json.loads(line)["step"] for line in writer.path.read_text().splitlines()] == [1, 2]
    assert writer.path.stat().st_ino != inode  # a new file swapped in, the old one never half rewritten


def test_save_pretrained_failure_keeps_the_previous_files(tmp_path, tiny_model, monkeypatch):
    tiny_model.save_pretrained(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    import safetensors.torch

    def full_disk(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\0" * 16)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    with pytest.raises(OSError):
        tiny_model.save_pretrained(tmp_path)
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    assert after == before


def test_write_errors_are_worded_and_name_the_file(tmp_path):
    def full_disk(f):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as info:
        atomic.write_with(tmp_path / "best.json", full_disk)
    assert info.value.errno == errno.ENOSPC
    assert "no space left on device" in str(info.value) and "best.json" in str(info.value)
    with pytest.raises(OSError, match="cannot write directory .*read-only file system"):
        with atomic.building_dir(tmp_path / "model"):
            raise OSError(errno.EROFS, "Read-only file system")
