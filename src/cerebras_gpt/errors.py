"""Expected failures, as the one-line messages the command line prints (exit code 2).

`describe` turns an exception a user can cause or fix (bad input, a missing, unreadable or corrupt
file, a full or read-only disk, no network, no GPU) into one line naming the value, the file and the
fix; anything else is a bug and keeps its traceback. `commands.run_command` is the only caller that
prints; library code raises `ValueError`/`OSError` with clear messages and, for unavailable hardware,
`require_device`.
"""

from __future__ import annotations

import errno
import os

DEBUG_ENV = "CEREBRAS_GPT_DEBUG"
"""Set to 1 (or pass --debug) to see the traceback of an expected failure."""

# errno -> what it means for the user, in words (strerror says "No space left on device" too, but the
# C++ writers of torch.save and safetensors lose it: they raise RuntimeError("... basic_ios::clear")).
_OS_ERRORS = {
    errno.ENOSPC: "no space left on the device: free some space or write elsewhere",
    errno.EDQUOT: "disk quota exceeded: free some space or write elsewhere",
    errno.EROFS: "the file system is read-only: write elsewhere",
    errno.EACCES: "permission denied: check the file's permissions or write elsewhere",
    errno.EPERM: "operation not permitted: check the file's permissions or write elsewhere",
    errno.ENOENT: "no such file or directory: check the path",
    errno.EISDIR: "is a directory where a file was expected: check the path",
    errno.ENOTDIR: "a part of the path is a file, not a directory: check the path",
    errno.EEXIST: "already exists: choose another name or remove it",
    errno.ENOTEMPTY: "the directory is not empty: choose another one or empty it",
    errno.EADDRINUSE: "the address is already in use (another server on that port?): choose another --port",
}


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def is_network_error(exc: BaseException) -> bool:
    """True if ``exc`` (or what caused it) is a failed connection or a download refused in offline mode."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        name = type(exc).__name__
        module = type(exc).__module__ or ""
        if isinstance(exc, (ConnectionError, TimeoutError)) or name in (
            "OfflineModeIsEnabled",
            "LocalEntryNotFoundError",
        ):
            return True
        if module.startswith(("httpx", "requests", "urllib3", "socket")) and (
            "Connect" in name or "Timeout" in name or "Resolution" in name
        ):
            return True
        if "offline" in str(exc).lower() and ("HF_" in str(exc) or "hub" in str(exc).lower()):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def network_message(what: str, exc: BaseException) -> str:
    """One line for a download that failed for want of a network: what needed it, why, and the fix."""
    return (
        f"{what} needs a download, and the network cannot be reached ({type(exc).__name__}: "
        f"{one_line(exc)}). With no network, download it on a connected machine into the Hugging Face "
        "cache (or pass a local copy); HF_HUB_OFFLINE=1 makes such downloads fail at once"
    )


def describe(exc: BaseException) -> str | None:
    """One line for an expected failure, or None for an unexpected one (a bug: show the traceback)."""
    from cerebras_gpt.extras import MissingExtraError

    if isinstance(exc, MissingExtraError):  # names the pip install line already
        return one_line(exc)
    if isinstance(exc, UnicodeDecodeError):
        return f"a file is not UTF-8 text ({exc}): check that the path names a text file"
    if isinstance(exc, ValueError):  # ours name the value and the fix
        return one_line(exc)
    if is_network_error(exc):
        return network_message("this step", exc)
    if isinstance(exc, OSError):
        return describe_os_error(exc)
    if type(exc).__name__ == "SafetensorError":
        return f"a safetensors file is corrupt or truncated ({one_line(exc)}): download or export it again"
    if isinstance(exc, RuntimeError):
        text = str(exc)
        # torch.save's C++ writer loses errno: a full disk reads "basic_ios::clear" or "unexpected pos".
        if any(
            sign in text
            for sign in ("basic_ios::clear", "PytorchStreamWriter failed", "file write failed", "unexpected pos")
        ):
            return (
                f"writing a file failed ({one_line(exc)}): the disk is probably full or read-only; "
                "free some space or write elsewhere"
            )
        if "CUDA" in text and ("not compiled" in text or "no CUDA GPUs" in text or "driver" in text.lower()):
            return f"no usable CUDA GPU here ({one_line(exc)}): use --device cpu (or auto)"
    return None


def describe_os_error(exc: OSError) -> str:
    """An `OSError` in words: what happened to which file, and what to do."""
    if exc.filename is None and (exc.strerror or "").startswith("cannot write"):
        return exc.strerror  # already worded by `cerebras_gpt.atomic`, with the file and the fix
    where = exc.filename if exc.filename is not None else ""
    if exc.filename2 is not None:
        where = f"{where} -> {exc.filename2}"
    meaning = _OS_ERRORS.get(exc.errno)
    if meaning is None:
        meaning = exc.strerror or one_line(exc)
    if not where and exc.errno not in _OS_ERRORS:
        return one_line(exc)
    return f"{where!r}: {meaning}" if where else meaning


def require_device(device) -> None:
    """Raise a one-line `ValueError` when ``device`` (a torch.device) names hardware this machine lacks."""
    import torch

    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"--device {device}: this machine has no usable CUDA GPU (torch {torch.__version__}, "
                "torch.cuda.is_available() is False); use --device cpu or auto"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"--device {device}: this machine has {torch.cuda.device_count()} CUDA GPU(s) "
                f"(cuda:0 to cuda:{torch.cuda.device_count() - 1}); choose one of them"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {device}: MPS is not available on this machine; use --device cpu or auto")


def one_line(exc: BaseException) -> str:
    """The exception's message on one line (whitespace and line breaks collapsed)."""
    return " ".join(str(exc).split()) or type(exc).__name__
