"""The runtime layer under everything that runs a model: which device and dtype.

Commands, the server, the lm-eval adapter and the benchmarks resolve the user's 'auto'-able
``--device``/``--dtype`` strings here (never through a command module).
"""

from __future__ import annotations


def resolve_device_dtype(device: str, dtype: str):
    """(torch.device, torch.dtype) from the 'auto'-able strings every command takes."""
    import torch

    from cerebras_gpt.errors import require_device

    try:
        dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else "cpu" if device == "auto" else device)
    except RuntimeError as e:
        raise ValueError(f"--device {device!r} is not a device: use cpu, cuda, cuda:N or auto") from e
    require_device(dev)
    if dtype == "auto":
        return dev, torch.bfloat16 if dev.type == "cuda" else torch.float32
    choices = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
               "float16": torch.float16, "fp16": torch.float16}
    if dtype not in choices:
        raise ValueError(f"--dtype {dtype!r} is not one of {sorted(choices)}")
    return dev, choices[dtype]


__all__ = ["resolve_device_dtype"]
