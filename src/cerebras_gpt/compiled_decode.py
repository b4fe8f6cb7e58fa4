"""A decode step compiled by TorchInductor for the CPU: the weights frozen into the graph and each linear
multiplied by Inductor's own C++ GEMM template (``max_autotune``), which packs the weight once at
compile time and reads it at about the machine's memory bandwidth at one or a few rows. Eager
`F.linear` (MKL) reads the same weights at about half of it here, and a step's few hundred small ops
each pay Python and dispatch; the compiled step is one C++ graph. Measured against llama.cpp on our own
GGUF export: `bench/llamacpp.py --compile` (BENCHMARKS.md, "Compiled decode step").

On a CUDA device the step is compiled in torch.compile's "reduce-overhead" mode instead: its kernels are
replayed as one CUDA graph, which removes the launch cost that bounds decoding a small model on a GPU.

What it costs: compiling (tens of seconds on two cores the first time, some seconds less once Inductor's
on-disk cache holds the kernels; every process traces the step again), and the step attends
over every slot of the KV cache (`GPT.forward`'s ``whole_cache``), so `DecodeState` rounds the cache
length up a little (`cache_length`) and a generation of a similar length reuses the graph. A bf16 or
int8 model's step keeps that cache in bfloat16 (`cache_dtype`), an fp32 model's in float32.

Weights are constants of the compiled graph: the step is compiled again when a parameter or buffer of the
model has been replaced or changed in place since (`weights_key`: which tensors, their version counters).
A compiled step keeps its KV cache allocated between generations, for up to `KEPT_SHAPES` (rows, length)
shapes per model; `release_compiled(model)` frees them.
Where compiling fails (no C++ compiler, an unsupported op) decoding falls back to the eager step, with
one warning naming the error.

On the CPU, once a step is compiled for some input shapes, later calls with those shapes go straight to
Inductor's compiled graph (`CompiledStep.direct`), not through Dynamo's frame evaluation and guards, which
took ~0.5 ms of a 5 ms int8 step (BENCHMARKS.md, "Compiled decode step"). That is safe because the graph
has no Python side effects to replay, its weights and caches are bound to the step, and the call checks
what the guards would: the inputs' shapes, strides, dtypes and device, and the grad/inference mode.

Quantized linears (`cerebras_gpt.quantization`) trace to their compiled forms: bf16 as a plain bf16
`F.linear`, int8 as ``F.linear(x_bf16, W_int8.to(bf16)) * s`` with bf16 scales, which Inductor matches
to its weight-only int8 kernel (`aten._weight_int8pack_mm`, lowered to the same C++ template).
"""

from __future__ import annotations

import dataclasses
import inspect
import warnings
import weakref
from collections.abc import Callable

import torch
import torch.nn as nn

from cerebras_gpt.quantization import precision_of

# Inductor options of the compiled step (torch._inductor.config names): weights frozen to constants
# (the template prepacks them; Dynamo must see it while tracing too, so these are patched around every
# call rather than passed as torch.compile options), every GEMM through the C++ template. Not autotuned
# against ATen's kernels: autotuning times each kernel over and over on the same weights, warm in the
# cache, where MKL looks as fast or faster, while a decode step streams its weights from memory, where the
# template reads them about twice as fast. With ATen in the running, some GEMMs went to ATen and the bf16
# step was 1.18x slower; one choice also skips the timing (BENCHMARKS.md, "Compiled decode step").
INDUCTOR_OPTIONS = {"freezing": True, "max_autotune": True, "max_autotune_gemm_backends": "CPP"}
# Tried when those fail to compile (a matmul the template does not take has no kernel under them):
# ATen's kernels in the running beside the template.
FALLBACK_OPTIONS = {"freezing": True, "max_autotune": True, "max_autotune_gemm_backends": "CPP,ATEN"}
# On a CUDA device: the weights frozen, and the step's kernels replayed as one CUDA graph (torch.compile's
# "reduce-overhead" mode), which removes the per-kernel launch cost that bounds decoding a small model
# there (the 111M shape at batch 1 on an H200: 4.8x the eager step, BENCHMARKS.md "GPU check").
CUDA_OPTIONS = {"freezing": True}
CUDA_MODE = "reduce-overhead"

# Keywords of torch.compile that older PyTorch releases lack (the toolkit supports torch >= 2.4; 2.11 has
# no isolate_recompiles): the step compiles without them there, with Dynamo's guards and recompile limit.
_COMPILE_KEYWORDS = set(inspect.signature(torch.compile).parameters)
_SKIP_MODULE_GUARDS = getattr(torch.compiler, "skip_guard_on_all_nn_modules_unsafe", None)


class DecodeStep(nn.Module):
    """One decode step of ``model`` over its whole KV cache: tokens (B,), positions (1,) or (B, 1) -> logits (B, V)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self.model(tokens.unsqueeze(1), positions, whole_cache=True)[:, -1]


class CompiledStep:
    """A compiled decode step bound to one set of KV caches (one per block) of ``model``.

    Each has its own `torch.compile` (``isolate_recompiles``): its one graph is specialized to these
    cache tensors, so Dynamo's guards on the model's modules are dropped (checking them cost ~0.25 ms a
    step, BENCHMARKS.md) and only the inputs' shapes are guarded. On a PyTorch without
    ``isolate_recompiles`` the guards stay. On a CUDA device the step is replayed as a CUDA graph.
    """

    def __init__(self, model: nn.Module, caches: list) -> None:
        self.model = model
        self.caches = caches
        self.on_cuda = caches[0].k.device.type == "cuda"
        self.options, self.untried = (CUDA_OPTIONS, []) if self.on_cuda else (INDUCTOR_OPTIONS, [FALLBACK_OPTIONS])
        self.compiled = None  # made on the first call, inside its error handling
        # Inductor's compiled graphs by `input_signature`, called without Dynamo (CPU only).
        self.direct: dict[tuple, Callable] = {}
        # The inputs of the call being compiled and their signature (taken before Dynamo: it compiles with
        # inference mode off).
        self._tracing: tuple[torch.Tensor, torch.Tensor, tuple] | None = None

    def _compile(self):
        keywords: dict = {"fullgraph": True}
        if "isolate_recompiles" in _COMPILE_KEYWORDS:
            keywords["isolate_recompiles"] = True
        if self.on_cuda:
            keywords["mode"] = CUDA_MODE  # (torch.compile takes a mode or options, not both)
            return torch.compile(DecodeStep(self.model), **keywords)
        if _SKIP_MODULE_GUARDS is not None and "isolate_recompiles" in keywords:
            keywords["options"] = {"guard_filter_fn": _SKIP_MODULE_GUARDS}
        return torch.compile(DecodeStep(self.model), backend=self._inductor_keeping_the_graph, **keywords)

    def _inductor_keeping_the_graph(self, graph: torch.fx.GraphModule, example_inputs: list) -> Callable:
        """The Dynamo backend of the CPU step: Inductor (what torch.compile's default backend calls), and the
        compiled graph kept in `direct` when it takes just the step's two inputs and returns just the logits,
        so that later calls can skip Dynamo. Anything else (a PyTorch that traces differently) stays behind
        Dynamo's guards."""
        from torch._inductor.compile_fx import compile_fx

        compiled = compile_fx(graph, example_inputs)
        (output,) = [node for node in graph.graph.nodes if node.op == "output"]
        returns_logits_alone = isinstance(output.args[0], (tuple, list)) and len(output.args[0]) == 1
        if self._tracing is None or not returns_logits_alone or len(example_inputs) != 2:
            return compiled
        tokens, positions, signature = self._tracing
        if example_inputs[0] is tokens and example_inputs[1] is positions:
            self.direct[signature] = compiled  # called as Dynamo calls it: compiled(tokens, positions)
        return compiled

    def __call__(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor | None:
        """Logits (compiling on the first call of these input shapes; on the CPU with `FALLBACK_OPTIONS`
        where `INDUCTOR_OPTIONS` fail); None where compiling fails with every set of options tried, after
        one warning (the caller runs the eager step)."""
        direct = self.direct.get(input_signature(tokens, positions)) if self.direct else None
        if direct is not None:
            return direct(tokens, positions)[0]
        if self.model in _failed:
            return None
        import torch._inductor.config  # (imported on the first compiled step: it takes ~1 s)

        while True:
            try:
                if self.compiled is None:
                    self.compiled = self._compile()
                self._tracing = (tokens, positions, input_signature(tokens, positions))
                try:
                    with torch._inductor.config.patch(self.options):
                        logits = self.compiled(tokens, positions)
                finally:
                    self._tracing = None
                # A CUDA graph writes each replay's output into the same memory: the caller's copy.
                return logits.clone() if self.on_cuda else logits
            except Exception as error:  # noqa: BLE001 - whatever stops the compiler, decoding goes on
                self.direct.clear()  # nothing compiled under options that failed is called again
                if self.untried:  # a fresh torch.compile: Dynamo remembers a frame that failed
                    self.options, self.compiled = self.untried.pop(0), None
                    continue
                _failed[self.model] = repr(error)
                warnings.warn(f"compiling the decode step failed; decoding eagerly instead ({error!r})", stacklevel=2)
                return None


def input_signature(tokens: torch.Tensor, positions: torch.Tensor) -> tuple:
    """What Dynamo's guards check of a step's call and a compiled graph is specialized to: each input's
    shape, strides, dtype and device, and whether grad and inference mode are on."""
    return (
        tokens.shape,
        tokens.stride(),
        tokens.dtype,
        positions.shape,
        positions.stride(),
        positions.dtype,
        tokens.device,
        positions.device,
        torch.is_grad_enabled(),
        torch.is_inference_mode_enabled(),
    )


@dataclasses.dataclass
class _Compiled:
    weights: tuple  # `weights_key` of the model when its steps were made
    steps: dict[tuple, CompiledStep] = dataclasses.field(default_factory=dict)  # by (rows, positions, device)

    def __getstate__(self) -> dict:
        return {"weights": (), "steps": {}}  # a copied or pickled model compiles its own


# Compiled steps (each with its KV cache, which stays allocated between generations) kept per model.
KEPT_SHAPES = 4

# A model's compiled steps live on the model (this attribute): they hold the model, so a registry
# beside it would keep every model that ever compiled alive; on it, the cycle dies with the model.
_ATTRIBUTE = "_compiled_decode"
_failed: weakref.WeakKeyDictionary[nn.Module, str] = weakref.WeakKeyDictionary()


def _entry(model: nn.Module) -> _Compiled | None:
    return model.__dict__.get(_ATTRIBUTE)


def weights_key(model: nn.Module) -> tuple:
    """Which tensors ``model``'s parameters and non-cache buffers are, and their version counters:
    replacing one or updating it in place changes the key. Tensors made under inference mode (a bf16
    weight unpacked while generating) keep no counter and count 0: they cannot be updated in place
    outside inference mode."""
    tensors = list(model.parameters()) + [b for name, b in model.named_buffers() if ".kv_cache." not in name]
    return tuple((id(t), 0 if t.is_inference() else t._version) for t in tensors)


def cache_length(positions: int, block_size: int) -> int:
    """The KV cache length a compiled step gets for ``positions``: rounded up to a multiple of an eighth
    of the power of two above it (..., 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, ...; at least 16),
    at most ``block_size``. The step attends over every slot, so rounding adds at most a quarter to
    the attention's work; lengths that round alike share one compiled graph (a new length compiles anew)."""
    quantum = max(16, 1 << max(0, (max(positions, 1) - 1).bit_length() - 3))
    return min(block_size, -(-positions // quantum) * quantum)


def cache_dtype(model: nn.Module) -> torch.dtype | None:
    """The KV cache's dtype for ``model``'s compiled step: bfloat16 for quantized weights (bf16, int8; as
    llama.cpp keeps f16 keys and values by default: the step reads the whole cache every token, and half
    the bytes made the 111M int8 step 1.10-1.15x faster, BENCHMARKS.md "Compiled decode step"), the
    model's own (None) for an fp32 model, whose step stays float32 throughout."""
    return None if precision_of(model) == "fp32" else torch.bfloat16


def attach(model: nn.Module, rows: int, positions: int, device: torch.device) -> CompiledStep:
    """Give ``model`` a KV cache of ``rows`` x ``positions`` for the compiled step and return that step.

    The same cache tensors (zeroed) and step as the last time these dimensions were asked for, while
    the weights are the same: a step's graph holds the weights as constants. New ones otherwise."""
    entry = _entry(model)
    if entry is None or entry.weights != weights_key(model):
        prepare_for_compile(model)  # may swap tensors (unpacked bf16 weights): keyed after it
        entry = _Compiled(weights_key(model))
        model.__dict__[_ATTRIBUTE] = entry
    shape = (rows, positions, str(device))
    step = entry.steps.pop(shape, None)
    if step is None:
        while len(entry.steps) >= KEPT_SHAPES:  # the least recently used goes, with its cache's memory
            entry.steps.pop(next(iter(entry.steps)))
        step = CompiledStep(model, model.setup_kv_cache(rows, positions, device=device, dtype=cache_dtype(model)))
    else:
        for cache in step.caches:
            cache.reset()
        model.attach_kv_cache(step.caches)
    entry.steps[shape] = step  # (re)inserted last: the dict runs from least to most recently used
    return step


def prepare_for_compile(model: nn.Module) -> None:
    """Put layouts that only the eager path understands back to plain tensors (oneDNN-packed bf16 weights)."""
    for module in model.modules():
        if hasattr(module, "compile_ready"):
            module.compile_ready()


def release_compiled(model: nn.Module) -> bool:
    """Drop ``model``'s compiled steps and their KV caches (and a recorded failure); True if there were any."""
    _failed.pop(model, None)
    return model.__dict__.pop(_ATTRIBUTE, None) is not None
