"""Inference weight precisions (fp32, bf16, int8) behind one function, and their save/load.

`quantize(model, precision)` swaps every `nn.Linear` of a GPT, the tied LM head included, for a module
holding its weight at the chosen precision. Everything else stays float32: embeddings (lookups),
LayerNorms, the residual stream, attention's softmax, the logits and the KV cache (its dtype follows
``wte``; the compiled decode step keeps a quantized model's in bfloat16, `compiled_decode.cache_dtype`).
Only the matmuls change, so the numerics of the rest of the network are the fp32 model's.

- ``bf16``: weights in bfloat16; inputs are cast to bf16 for the matmul and the output back to fp32.
- ``int8``: 8-bit weights with one scale per output channel (symmetric, max-abs / 127). On CPU the
  matmul is FBGEMM's dynamic-quantized linear (`torch.ops.quantized.linear_dynamic`): the input is
  quantized per call to 8 bits (7 on x86, ``reduce_range``, which AVX2's 16-bit pair sums need), and the
  weight is prepacked once. Measured on the 2-core AVX2 machine (bench/generate.py, BENCHMARKS.md) it
  reads the weights several times faster than fp32 `F.linear`. Where FBGEMM is missing (other
  architectures, CUDA) the weight is dequantized in the matmul's dtype instead: right, not fast.
  FBGEMM's input scale is one per call, so rows decoded together (a server's batch) share it: a
  row's logits can move by int8 rounding with its neighbours. Greedy tokens rarely change.

The tied LM head (``x @ wte.T``) gets its own quantized copy of ``wte``; the fp32 embedding stays for
lookups (a dequantizing lookup would save its 154 MB at 111M, at a cost on every token).

``int4`` is refused: no CPU int4 kernel in this PyTorch build was measured to pay here.
`aten._weight_int4pack_mm_for_cpu` (on bf16 rows, eager or compiled) unpacks nibbles at about the rate the
compiled int8 step reads bytes, so 4-bit blocks decoded no faster than int8 ones (166 against 162 tok/s at
111M, both compiled) at much worse fidelity (BENCHMARKS.md, "Figures from the code").

FBGEMM's entry points sit beside PyTorch's deprecated quantized-tensor API (`torch.quantize_per_channel`
warns); they are used in this module only, and tests/test_quantize.py fails loudly if they disappear.

A quantized model is saved as a directory like a model directory, its `model.safetensors` holding the
int8 weights and scales under our parameter names, with metadata keys ``cerebras_gpt_precision`` and
``cerebras_gpt_config``; `cerebras_gpt.hf.load_pretrained` (so `GPT.from_pretrained` and every
``--model``) loads it straight into the quantized model.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import warnings
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from cerebras_gpt.config import GPTConfig
from cerebras_gpt.model import GPT

PRECISIONS = ("fp32", "bf16", "int8")
# What --quantize accepts: the precisions plus "none" (= fp32) and "int4" (refused with the reason).
CHOICES = ("none", "fp32", "bf16", "int8", "int4")
PRECISION_KEY = "cerebras_gpt_precision"
CONFIG_KEY = "cerebras_gpt_config"


def check_precision(precision: str | None) -> str:
    """The canonical precision name for ``precision`` ("none"/None -> "fp32"); a clear error otherwise."""
    name = "fp32" if precision is None else str(precision).lower()
    name = "fp32" if name in ("none", "float32") else "bf16" if name == "bfloat16" else name
    if name == "int4":
        raise ValueError(
            "quantize='int4' is not supported: no CPU int4 kernel available to this PyTorch build was "
            "faster than int8 here (see cerebras_gpt/quantization.py); use 'int8' (4x smaller weights "
            "than fp32, fastest measured) or 'bf16'"
        )
    if name not in PRECISIONS:
        raise ValueError(f"unknown quantize precision {precision!r}; choose one of none, bf16, int8")
    return name


# Both are fixed for the process; cached because every quantized linear asks on every call, and
# `supported_engines` builds its list afresh each time (7 us a call, 41 calls a 111M decode step).
@functools.cache
def fbgemm_available() -> bool:
    """Whether this build has FBGEMM's prepacked dynamic-quantized linear (x86 CPU builds do)."""
    return "fbgemm" in torch.backends.quantized.supported_engines and hasattr(torch.ops.quantized, "linear_dynamic")


@functools.cache
def native_bf16_cpu() -> bool:
    """Whether oneDNN runs bf16 matmuls natively on this CPU (AVX512-BF16 or AMX), where its packed layout pays."""
    return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


class BF16Linear(nn.Module):
    """``y = x W^T + b`` with W (and b) held in bfloat16; x is cast in and y cast back to x's dtype.

    On a CPU with native bf16 the first forward moves W into oneDNN's packed layout (the same bytes, in
    place of the plain tensor: no second copy) and multiplies through oneDNN's linear; batch-1 decoding
    measured 1.36x faster than through `F.linear` (`bench/decode_candidates.py bf16-packed`). The state
    dict still holds the plain W, and moving the module (``.to``) unpacks it first.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(
            torch.empty(out_features, in_features, dtype=torch.bfloat16, device=device), requires_grad=False
        )
        self.bias = (
            nn.Parameter(torch.empty(out_features, dtype=torch.bfloat16, device=device), requires_grad=False)
            if bias
            else None
        )
        self._packed: torch.Tensor | None = None  # W in oneDNN's layout; `weight` is None while it is set
        self._packing = True  # off once a compiled step holds the plain weight (`compile_ready`)

    @classmethod
    def from_weight(cls, weight: torch.Tensor, bias: torch.Tensor | None) -> BF16Linear:
        out_features, in_features = weight.shape
        module = cls(in_features, out_features, bias is not None, device=weight.device)
        with torch.no_grad():
            module.weight.copy_(weight)
            if bias is not None:
                module.bias.copy_(bias)
        return module

    def _pack(self) -> None:
        if self._packing and self._packed is None and self.weight.device.type == "cpu" and native_bf16_cpu():
            self._packed = torch.ops.mkldnn._reorder_linear_weight(self.weight.detach(), 1)
            self.weight = None

    def _unpack(self) -> None:
        if self._packed is not None:
            self.weight = nn.Parameter(self._packed.to_dense(), requires_grad=False)
            self._packed = None

    def compile_ready(self) -> None:
        """Keep W plain from now on: a compiled decode step (`cerebras_gpt.compiled_decode`) freezes it
        into its graph and packs it its own way, and eager calls must not swap the tensor under it."""
        self._unpack()
        self._packing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and not torch.compiler.is_compiling():
            self._pack()
        if self._packed is None:
            return F.linear(x.to(torch.bfloat16), self.weight, self.bias).to(x.dtype)
        rows = x.reshape(-1, self.in_features).to(torch.bfloat16)
        y = torch.ops.mkldnn._linear_pointwise(rows, self._packed, self.bias, "none", [], "")
        return y.view(*x.shape[:-1], self.out_features).to(x.dtype)

    def _save_to_state_dict(self, destination, prefix, keep_vars) -> None:
        if self._packed is None:
            return super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + "weight"] = self._packed.to_dense()
        if self.bias is not None:
            destination[prefix + "bias"] = self.bias if keep_vars else self.bias.detach()

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        self._unpack()  # load into the plain tensor; the next CPU forward packs the new weights
        super()._load_from_state_dict(*args, **kwargs)

    def _apply(self, fn, recurse: bool = True):
        self._unpack()  # a move or a cast acts on the plain tensor (oneDNN's layout lives on the CPU only)
        return super()._apply(fn, recurse)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, dtype=bfloat16"


class Int8Linear(nn.Module):
    """``y = x (s ⊙ Q)^T + b``: int8 weight Q (out, in) with per-output-channel scales s (out,)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight_int8", torch.empty(out_features, in_features, dtype=torch.int8, device=device))
        self.register_buffer("weight_scale", torch.empty(out_features, dtype=torch.float32, device=device))
        self.register_buffer("bias", torch.empty(out_features, device=device) if bias else None)
        self._packed: tuple[int, object] | None = None  # (weight data_ptr, FBGEMM packed weight)

    @classmethod
    def from_weight(cls, weight: torch.Tensor, bias: torch.Tensor | None) -> Int8Linear:
        out_features, in_features = weight.shape
        module = cls(in_features, out_features, bias is not None, device=weight.device)
        w = weight.detach().float()
        # Symmetric per-channel: the largest |w| of each row maps to 127; an all-zero row gets scale 1.
        scale = w.abs().amax(dim=1).clamp_min(1e-12) / 127.0
        scale = torch.where(w.abs().amax(dim=1) > 0, scale, torch.ones_like(scale))
        module.weight_int8.copy_(torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8))
        module.weight_scale.copy_(scale)
        if bias is not None:
            module.bias.copy_(bias.detach().float())
        return module

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        self._packed = None  # new weights (copied in place, same pointer): pack again
        super()._load_from_state_dict(*args, **kwargs)

    def _fbgemm_weight(self):
        ptr = self.weight_int8.data_ptr()
        if self._packed is None or self._packed[0] != ptr:
            with warnings.catch_warnings():  # quantized tensors are deprecated; FBGEMM's packing needs one
                warnings.simplefilter("ignore", UserWarning)
                q = torch._make_per_channel_quantized_tensor(
                    self.weight_int8, self.weight_scale.double(), torch.zeros(self.out_features, dtype=torch.long), 0
                )
                packed = torch.ops.quantized.linear_prepack(q, self.bias)
            self._packed = (ptr, packed)
        return self._packed[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        compiling = torch.compiler.is_compiling()
        if not compiling and x.device.type == "cpu" and x.dtype == torch.float32 and fbgemm_available():
            rows = x.reshape(-1, self.in_features)
            y = torch.ops.quantized.linear_dynamic(rows, self._fbgemm_weight(), True)  # reduce_range (x86)
            return y.view(*x.shape[:-1], self.out_features)
        if compiling:
            # The form Inductor's freezing passes match to their weight-only int8 kernel (bf16 rows, int8
            # weight, bf16 scales: `cerebras_gpt.compiled_decode`); the rows are rounded to bf16 for it.
            y = self._dequantizing_matmul(x.to(torch.bfloat16)).to(x.dtype)
        else:
            y = self._dequantizing_matmul(x)  # where FBGEMM is not: right, not fast
        return y if self.bias is None else y + self.bias.to(x.dtype)

    def _dequantizing_matmul(self, x: torch.Tensor) -> torch.Tensor:
        """``x (s ⊙ Q)^T`` in x's dtype, the scales applied to the output (one multiply per column)."""
        return F.linear(x, self.weight_int8.to(x.dtype)) * self.weight_scale.to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, dtype=int8 (per-channel scales)"


_MODULES = {"bf16": BF16Linear, "int8": Int8Linear}


def precision_of(model: GPT) -> str:
    """The precision `quantize` gave ``model`` ("fp32" for a plain model)."""
    return getattr(model, "precision", "fp32")


def _linear_names(model: GPT) -> list[str]:
    return [name for name, mod in model.named_modules() if type(mod) is nn.Linear]


@torch.no_grad()
def quantize(model: GPT, precision: str | None) -> GPT:
    """Put ``model``'s linears (LM head included) at ``precision``: "none"/"fp32", "bf16" or "int8".

    In place, and returns the model (in eval mode, for inference: the new weights take no gradients).
    The embeddings, LayerNorms, logits and KV cache stay float32. The tied LM head gets its own copy
    of ``wte`` at the new precision. Quantizing an already quantized model to another precision is
    refused (quantize the fp32 model instead).
    """
    precision = check_precision(precision)
    current = precision_of(model)
    if precision == current:
        return model
    if current != "fp32":
        raise ValueError(f"model is already {current}; quantize the fp32 model to {precision!r} instead")
    cls = _MODULES[precision]
    for name in _linear_names(model):
        linear = model.get_submodule(name)
        model.set_submodule(name, cls.from_weight(linear.weight, linear.bias))
    model.precision = precision
    return model.eval()


def apply_quantize(model: GPT, requested: str | None) -> GPT:
    """What ``--quantize`` does to a loaded model: "none" keeps it as loaded (a directory saved quantized
    stays quantized), another precision quantizes an fp32 model (or keeps one saved at that precision)."""
    precision = check_precision(requested)
    return model if precision == "fp32" else quantize(model, precision)


def _empty_quantized(config: GPTConfig, precision: str) -> GPT:
    """A model of ``config`` with ``precision`` modules on the meta device, to load weights into."""
    with torch.device("meta"):
        model = GPT(config, init_weights=False)
        cls = _MODULES[precision]
        for name in _linear_names(model):
            linear = model.get_submodule(name)
            model.set_submodule(name, cls(linear.in_features, linear.out_features, linear.bias is not None))
    model.precision = precision
    return model


def save_quantized(model: GPT, directory: str | Path, tokenizer=None) -> Path:
    """Write a quantized ``model`` to ``directory`` (weights as they are, no re-quantizing on load)."""
    from safetensors.torch import save_file

    from cerebras_gpt import atomic, hf
    from cerebras_gpt.tokenizer import load_tokenizer

    precision = precision_of(model)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {"format": "pt", PRECISION_KEY: precision, CONFIG_KEY: json.dumps(dataclasses.asdict(model.config))}
    atomic.write_via_path(directory / "model.safetensors", lambda tmp: save_file(state, str(tmp), metadata=metadata))
    # config.json for tools that read the shape (info, tokenizer limits); the exact GPTConfig is in the metadata.
    hf_config = hf.config_to_hf(model.config, tie_word_embeddings=model.config.tie_word_embeddings, dtype=torch.float32)
    hf_config[PRECISION_KEY] = precision
    atomic.write_json(directory / "config.json", hf_config)
    (tokenizer or load_tokenizer()).save_pretrained(directory)
    return directory


def saved_precision(model_dir: Path) -> str | None:
    """The precision a quantized directory was saved at; None for a plain model directory."""
    path = Path(model_dir) / "model.safetensors"
    if not path.exists():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get(PRECISION_KEY)
    except OSError:
        raise
    except Exception as e:  # safetensors' SafetensorError on a cut or damaged header
        raise ValueError(
            f"{str(path)!r} is corrupt or truncated ({type(e).__name__}: {' '.join(str(e).split())}); "
            "download or export the model again"
        ) from e


def load_quantized(model_dir: str | Path, device: torch.device | str = "cpu") -> GPT:
    """The quantized model saved by `save_quantized` in ``model_dir``; strict about its tensors."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(model_dir) / "model.safetensors"
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
    precision = check_precision(metadata.get(PRECISION_KEY))
    if precision == "fp32" or CONFIG_KEY not in metadata:
        raise ValueError(
            f"{str(path)!r} is not a quantized model (metadata {PRECISION_KEY!r}/{CONFIG_KEY!r} "
            "missing); load it with GPT.from_pretrained"
        )
    config = GPTConfig(**json.loads(metadata[CONFIG_KEY]))
    model = _empty_quantized(config, precision)
    state = load_file(str(path))
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(
            f"weights in {str(path)!r} do not match a {precision} model of its config: "
            f"missing {missing or 'none'}; unexpected {unexpected or 'none'}"
        )
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device).eval()


__all__ = [
    "CHOICES",
    "PRECISIONS",
    "BF16Linear",
    "Int8Linear",
    "apply_quantize",
    "check_precision",
    "fbgemm_available",
    "load_quantized",
    "precision_of",
    "quantize",
    "save_quantized",
    "saved_precision",
]
