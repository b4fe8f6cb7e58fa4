"""Atomic writes: every file or directory a user or a resume depends on is replaced whole or not at all.

A file is written to a temporary name in the same directory, flushed and fsynced, then `os.replace`d over
the target, and the directory is fsynced so the rename itself survives a power cut. A directory is built
next to its target by the caller, then swapped in with two renames (old target aside, new one in), and the
old one is removed only once the new one is in place: a crash at any point leaves either the old or the
new directory under the target's name (or, between the two renames, the old one under ``NAME.old-*``,
which `replace_dir` restores on its next call).

An OSError while writing (a full or read-only disk) is re-raised as an `OSError` (same errno) whose one-line
message says so in words and names the file; the previous file or directory is left as it was.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

OLD_SUFFIX = ".old-"
TMP_SUFFIX = ".tmp-"


def describe_os_error(error: OSError) -> str:
    """The condition in words ("no space left on device", "read-only file system", ...)."""
    words = {
        errno.ENOSPC: "no space left on device",
        errno.EROFS: "read-only file system",
        errno.EACCES: "permission denied (read-only?)",
        errno.EPERM: "permission denied (read-only?)",
        errno.EDQUOT: "disk quota exceeded",
    }
    return words.get(error.errno, error.strerror or str(error))


def write_failed(error: OSError, target: str | Path, what: str) -> OSError:
    """A one-line `OSError` for a failed write of ``target``: the condition in words, the file and the fix."""
    return OSError(
        error.errno,
        f"cannot write {what} {str(target)!r}: {describe_os_error(error)}; "
        "free space or choose a writable directory (nothing already there was changed)",
    )


def _is_worded(error: OSError) -> bool:
    return str(error).startswith("[Errno") and "cannot write" in str(error)


def fsync_dir(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_with(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Replace ``path`` atomically with what ``write(file)`` writes to an open binary file."""

    def fill(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            write(f)

    return write_via_path(path, fill)


def write_via_path(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Replace ``path`` atomically with the file ``write(tmp_path)`` creates (for writers that want a name)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TMP_SUFFIX}", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise write_failed(e, path, "file") from e
        raise
    return path


def write_bytes(path: str | Path, data: bytes) -> Path:
    return write_with(path, lambda f: f.write(data))


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any, indent: int | None = 2) -> Path:
    return write_text(path, json.dumps(obj, indent=indent, default=str) + "\n")


def fsync_tree(path: str | Path) -> None:
    """fsync every file under ``path``, then the directories (deepest first)."""
    path = Path(path)
    dirs = [path]
    for p in sorted(path.rglob("*")):
        if p.is_file():
            with p.open("rb") as f:
                os.fsync(f.fileno())
        elif p.is_dir():
            dirs.append(p)
    for d in reversed(dirs):
        fsync_dir(d)


def recover_dir(target: str | Path) -> None:
    """Put back ``target`` if a crash between `replace_dir`'s two renames left only its ``.old-*`` copy."""
    target = Path(target)
    olds = sorted(target.parent.glob(f"{target.name}{OLD_SUFFIX}*")) if target.parent.is_dir() else []
    if not target.exists() and olds:
        os.rename(olds[-1], target)
        olds = olds[:-1]
    for old in olds:
        shutil.rmtree(old, ignore_errors=True)


def temp_dir_for(target: str | Path) -> Path:
    """A fresh empty directory beside ``target`` (same file system), to build its replacement in."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}{TMP_SUFFIX}", dir=target.parent))


def replace_dir(built: str | Path, target: str | Path) -> Path:
    """Swap the complete directory ``built`` in as ``target``; the old ``target`` is removed only afterwards."""
    built, target = Path(built), Path(target)
    recover_dir(target)
    fsync_tree(built)
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f"{target.name}{OLD_SUFFIX}", dir=target.parent))
        os.rmdir(old)
        os.rename(target, old)
    os.rename(built, target)
    fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target


@contextlib.contextmanager
def building_dir(target: str | Path) -> Iterator[Path]:
    """``with building_dir(target) as tmp:`` fill ``tmp``; on success it replaces ``target`` atomically,
    on an error it is removed and ``target`` is untouched."""
    tmp = temp_dir_for(target)
    try:
        yield tmp
        replace_dir(tmp, target)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError) and not _is_worded(e):
            raise write_failed(e, target, "directory") from e
        raise


def copy_dir(source: str | Path, target: str | Path) -> Path:
    """Replace ``target`` atomically with a copy of the directory ``source``."""
    with building_dir(target) as tmp:
        shutil.copytree(source, tmp, dirs_exist_ok=True)
    return Path(target)


__all__ = [
    "building_dir",
    "copy_dir",
    "describe_os_error",
    "fsync_dir",
    "fsync_tree",
    "recover_dir",
    "replace_dir",
    "temp_dir_for",
    "write_bytes",
    "write_failed",
    "write_json",
    "write_text",
    "write_via_path",
    "write_with",
]
