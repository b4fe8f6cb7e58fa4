"""Resource limits checked before a model is allocated: a config too big for this machine is refused
with the numbers, before the first layer is built (instead of swapping the machine to a halt or dying
in the out-of-memory killer).

The check counts the parameters alone (`GPTConfig.num_params` x bytes per element): the least any use
of the model needs. Activations, the KV cache, gradients and optimizer state come on top, so passing
this check does not promise a run fits; failing it promises it cannot.
"""

from __future__ import annotations

import os

import torch


def available_memory(device: torch.device) -> int | None:
    """Bytes that can still be allocated on ``device`` (None where it cannot be told)."""
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return None
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as f:  # Linux: MemAvailable counts reclaimable page cache as free
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_model_fits(config, dtype: torch.dtype, device: torch.device | str) -> None:
    """Raise `ValueError` (with the numbers) when ``config``'s weights alone exceed ``device``'s free memory.

    Args:
        config: a `GPTConfig`.
        dtype: the weights' dtype.
        device: where the weights will live (``meta`` is never checked).
    """
    device = torch.device(device)
    if device.type == "meta":
        return
    available = available_memory(device)
    if available is None:
        return
    n = config.num_params()
    needed = n * torch.empty((), dtype=dtype).element_size()
    if needed > available:
        raise ValueError(
            f"the model config (n_layer={config.n_layer}, n_embd={config.n_embd}, vocab_size={config.vocab_size}, "
            f"block_size={config.block_size}) has {n:,} parameters: {needed / 2**30:,.1f} GiB in "
            f"{str(dtype).removeprefix('torch.')}, more than the {available / 2**30:,.1f} GiB available on "
            f"{device}; use a smaller model, a smaller --dtype, or a machine with more memory"
        )
