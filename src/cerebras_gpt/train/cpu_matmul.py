"""CPU float32 training matmuls through oneDNN where it is measured faster than PyTorch's default.

PyTorch multiplies CPU float32 matrices with MKL. On AMD CPUs MKL takes a generic code path, and the
``x @ W.T`` of a linear layer's forward ran there at 117-175 GFLOP/s where oneDNN, which ships in the
same PyTorch build and dispatches on the CPU's features rather than its vendor, ran at 166-216
(2-core AMD EPYC with AVX-512, the 111M shapes; BENCHMARKS.md, "Training step"). Which one is faster
depends on the machine, so it is timed, never assumed: once per machine and matrix shape, the answer
kept beside the matmul peak (``~/.cache/cerebras_gpt/cpu_matmul.json``), so that every process on the
machine takes the same kernels and a resumed run repeats the interrupted one's arithmetic exactly.

Two users:

- `apply_onednn_linears` swaps the ``nn.Linear`` layers of a model for `OneDNNLinear` (the same
  parameter objects under the same names: state dicts, optimizers and checkpoints do not change) when
  oneDNN's forward is faster at the model's shape. Its forward and the input gradient (``dy @ W``) go
  through oneDNN; the weight gradient (``dy.T @ x``) stays with `torch.mm`, which was as fast or faster
  there. `parallelize` applies it for CPU float32 training without torch.compile or FSDP2.
- `nt_matmul` is ``a @ w.T`` for the chunked LM-head loss (`train/loss.py`), through oneDNN where that
  pays at the block's shape, otherwise `torch.mm` into the caller's reused buffer. It and the loss's two
  gradient products (`nn_matmul`: ``g @ w``, `tn_matmul`: ``g.T @ x``) go through NumPy's matmul instead
  where that is measured faster (`numpy_pays`): NumPy's wheels carry OpenBLAS, whose kernels are chosen
  for the CPU at hand. At debug-small's head (1,024 x 128 x 50,257) on the AVX-512 AMD EPYC it took the
  logits in 74 ms where torch's took 116-125 and oneDNN's 150 (BENCHMARKS.md, "Training step").

Both change only the summation order of float32 products (results agree to float32 rounding), and both
kernels are deterministic for a given shape and thread count, so resumed runs repeat exactly.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cerebras_gpt import atomic
from cerebras_gpt.runtime import median_times
from cerebras_gpt.train import metrics

log = logging.getLogger("cerebras_gpt.train")

# (threads, timed rows, in, out, backward) -> whether oneDNN beat torch: this process's copy of the
# machine's answers, looked up on every call of the loss's head (the file's key names the machine too,
# which takes reading /proc/cpuinfo: done once per shape).
_onednn_pays: dict[tuple[int, int, int, int, bool], bool] = {}
# Set by `onednn_forced`: the answer of `onednn_pays` for every shape, or None to measure.
_forced: bool | None = None
# oneDNN is taken only when this much faster, so that at shapes where the two are close (debug-small's on
# the AMD box) the timing's noise does not decide.
_MARGIN = 0.95
# The most rows timed: enough for the BLAS to reach its speed; more only costs time at setup.
_TIMED_ROWS = 2048


def onednn_available() -> bool:
    """Whether this PyTorch build has oneDNN's linear (x86 and ARM CPU builds do)."""
    return bool(torch.backends.mkldnn.is_available()) and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def onednn_nt(a: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``a @ w.T + bias`` for a 2-D ``a`` through oneDNN (``w`` may be a transposed view)."""
    return torch.ops.mkldnn._linear_pointwise(a, w, bias, "none", [], "")


def decisions_path() -> Path:
    """Where each machine's measured choices are kept: beside the matmul peak's cache."""
    return metrics.peak_cache_path().with_name("cpu_matmul.json")


def timed_rows(rows: int) -> int:
    """The row count a choice is measured and kept for: row counts share the answer of their power of two
    (a fine-tuning run's ragged batches would otherwise each be timed), up to the most rows timed."""
    return min(1 << max(rows - 1, 0).bit_length(), _TIMED_ROWS)


def decision_key(rows: int, in_features: int, out_features: int, backward: bool = False) -> str:
    """The key of a choice in `decisions_path`: this machine, torch's thread count and version, the shape."""
    shape = f"{timed_rows(rows)}x{in_features}x{out_features}{' with backward' if backward else ''}"
    return f"{metrics.peak_key(torch.device('cpu'), torch.float32)}: {shape}"


def onednn_pays(rows: int, in_features: int, out_features: int, backward: bool = False, repeats: int = 5) -> bool:
    """Whether oneDNN's ``x @ W.T`` (and with ``backward`` also the input gradient ``g @ W``) is faster
    than `torch.mm`'s on this machine at this shape.

    Timed once per machine (`decisions_path`), thread count, torch version and shape on random values:
    a warm-up each, then ``repeats`` alternating calls, medians compared; oneDNN must win by 5%.
    oneDNN's calls allocate their outputs and the others write into reused ones, as the loss's calls do.
    False where oneDNN is missing.
    """
    if _forced is not None:
        return _forced and onednn_available()
    if not onednn_available():
        return False
    rows = timed_rows(rows)
    shape = (torch.get_num_threads(), rows, in_features, out_features, backward)
    if shape not in _onednn_pays:
        _onednn_pays[shape] = _cached_or_measured(
            decision_key(rows, in_features, out_features, backward),
            lambda: _measure(rows, in_features, out_features, backward, repeats),
        )
    return _onednn_pays[shape]


def _cached_or_measured(key: str, measure) -> bool:
    """The machine's answer for ``key`` from `decisions_path`, else ``measure()``'s, written there. Under a
    file lock, so that processes starting together (torchrun ranks, test workers) measure once and agree."""
    from filelock import FileLock

    path = decisions_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(path.with_suffix(".lock"))
    except OSError as e:  # a read-only home: measured for this process alone
        log.debug("cannot cache the matmul choice in %s: %s", path, e)
        return measure()
    with lock:  # no other process writes the file meanwhile: one read serves the lookup and the update
        answers = metrics.read_json_cache(path)
        if isinstance(answers.get(key), bool):
            return answers[key]
        answer = measure()
        try:
            atomic.write_json(path, {**answers, key: answer})
        except OSError as e:
            log.debug("cannot cache the matmul choice in %s: %s", path, e)
        return answer


def _measure(rows: int, in_features: int, out_features: int, backward: bool, repeats: int) -> bool:
    with torch.no_grad():
        x, w = torch.randn(rows, in_features), torch.randn(out_features, in_features)
        g = torch.randn(rows, out_features)
        y, grad_x = torch.empty(rows, out_features), torch.empty(rows, in_features)

        def torch_mm():
            torch.mm(x, w.t(), out=y)
            if backward:
                torch.mm(g, w, out=grad_x)

        def onednn():
            onednn_nt(x, w)
            if backward:
                onednn_nt(g, w.t())

        median = median_times({"torch.mm": torch_mm, "oneDNN": onednn}, repeats)
    log.debug(
        "x @ W.T%s, x (%d, %d), W (%d, %d), %d threads: oneDNN %.2f ms, torch.mm %.2f ms (medians of %d)",
        " and g @ W" if backward else "",
        rows,
        in_features,
        out_features,
        in_features,
        torch.get_num_threads(),
        median["oneDNN"] * 1e3,
        median["torch.mm"] * 1e3,
        repeats,
    )
    return median["oneDNN"] < _MARGIN * median["torch.mm"]


@contextlib.contextmanager
def onednn_forced(use: bool) -> Iterator[None]:
    """Within the block `onednn_pays` answers ``use`` for every shape, unmeasured: for side-by-side
    comparisons (bench/train.py) and for tests that need one path or the other."""
    global _forced
    saved, _forced = _forced, use
    try:
        yield
    finally:
        _forced = saved


def nt_matmul(a: torch.Tensor, w: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``a @ w.T`` for CPU float32 2-D ``a``: through NumPy into ``out`` where `numpy_pays`, else through
    oneDNN where `onednn_pays` at this shape (a new tensor), else `torch.mm` into ``out``. Anything else
    goes to `torch.mm`."""
    return _head_product("nt", a, w, out)


def nn_matmul(g: torch.Tensor, w: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``g @ w`` into ``out`` (the loss head's input gradient: ``g`` (n, V), ``w`` (V, C)): through NumPy
    where `numpy_pays` at this shape on the CPU, else `torch.mm`."""
    return _head_product("nn", g, w, out)


def tn_matmul(g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``g.T @ x``, a new tensor (the loss head's weight gradient: ``g`` (n, V), ``x`` (n, C)): through
    NumPy where `numpy_pays` at this shape on the CPU, else torch."""
    return _head_product("tn", g, x)


def _head_product(kind: str, a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """The loss head's product ``kind`` (`_PRODUCTS`) through the kernel chosen for its shape."""
    tensors = (a, b) if out is None else (a, b, out)
    if _cpu_float32(*tensors) and numpy_pays(kind, *_product_shape(kind, a, b)):
        return _numpy_product(kind, a, b, out)
    return _torch_product(kind, a, b, out)


def _product_shape(kind: str, a: torch.Tensor, b: torch.Tensor) -> tuple[int, int, int]:
    """(rows, in, out) of a product: x (rows, in), W (out, in), g (rows, out) as in `_PRODUCTS`."""
    if kind == "nt":  # x @ W.T
        return a.shape[0], a.shape[1], b.shape[0]
    if kind == "nn":  # g @ W
        return a.shape[0], b.shape[1], b.shape[0]
    return a.shape[0], b.shape[1], a.shape[1]  # g.T @ x


def _torch_product(kind: str, a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    """The product through torch: ``x @ W.T`` through oneDNN where `onednn_pays` (CPU float32), else into
    ``out``; ``g.T @ x`` into a new tensor."""
    if kind == "nt":
        if a.device.type == "cpu" and a.dtype == torch.float32 and onednn_pays(*_product_shape(kind, a, b)):
            return onednn_nt(a, b)
        return torch.mm(a, b.t(), out=out)
    if kind == "nn":
        return torch.mm(a, b, out=out)
    return a.t() @ b


def _numpy_product(kind: str, a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    """The product through NumPy's BLAS (`numpy_matmul`), into ``out`` (a new tensor for ``g.T @ x``)."""
    left = _array(a).T if kind == "tn" else _array(a)
    right = _array(b).T if kind == "nt" else _array(b)
    if out is None:
        out = torch.empty(left.shape[0], right.shape[1])
    numpy_matmul(left, right, _array(out))
    return out


def _cpu_float32(*tensors: torch.Tensor) -> bool:
    """Whether these are CPU float32 matrices (what NumPy's path takes; like ``torch.mm(..., out=)``, the
    products here are for the loss's own backward, not autograd's)."""
    return all(t.device.type == "cpu" and t.dtype == torch.float32 and t.dim() == 2 for t in tensors)


def _array(t: torch.Tensor) -> np.ndarray:
    """``t``'s memory as a NumPy array (no copy)."""
    return t.detach().numpy()


# NumPy's BLAS (OpenBLAS in its wheels) has a thread pool of its own, one thread per core by default, whose
# threads spin for a while after each call: torch's own kernels right after ran 1.28x slower (scratch
# script; BENCHMARKS.md, "Training step"), and under torchrun every rank would run every core's worth.
# So each call here runs BLAS on one thread (threadpoolctl; made once, as it looks for the loaded BLAS
# libraries; a limit then costs ~9 µs), on torch's thread count of Python threads, each computing its
# share of the output's rows: no BLAS thread is left spinning, and the work is split as torch's would be.
_blas_controller = None
_row_workers: dict[int, ThreadPoolExecutor] = {}


def numpy_matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """``out[:] = a @ b`` through NumPy's BLAS on torch's thread count (see above); deterministic for a
    given thread count (each output row made by one single-threaded BLAS call)."""
    global _blas_controller
    if _blas_controller is None:
        from threadpoolctl import ThreadpoolController

        _blas_controller = ThreadpoolController()
    threads = max(1, min(torch.get_num_threads(), len(out)))
    with _blas_controller.limit(limits=1, user_api="blas"):
        if threads == 1:
            np.matmul(a, b, out=out)
            return
        if threads not in _row_workers:
            _row_workers[threads] = ThreadPoolExecutor(threads, thread_name_prefix="cerebras-gpt-blas")
        bounds = [len(out) * k // threads for k in range(threads + 1)]
        shares = [
            _row_workers[threads].submit(np.matmul, a[lo:hi], b, out=out[lo:hi]) for lo, hi in zip(bounds, bounds[1:])
        ]
        for share in shares:
            share.result()


# (kind, threads, timed rows, in, out) -> whether NumPy beat torch's kernel: this process's copy.
_numpy_pays: dict[tuple[str, int, int, int, int], bool] = {}
# The loss head's products by kind: a @ w.T (the logits), g @ w (input gradient), g.T @ x (weight gradient).
_PRODUCTS = {"nt": "x @ W.T", "nn": "g @ W", "tn": "g.T @ x"}


def numpy_decision_key(kind: str, rows: int, in_features: int, out_features: int) -> str:
    """The key of a `numpy_pays` choice in `decisions_path`."""
    return f"{decision_key(rows, in_features, out_features)} {_PRODUCTS[kind]} through NumPy"


def numpy_pays(kind: str, rows: int, in_features: int, out_features: int, repeats: int = 5) -> bool:
    """Whether NumPy's matmul is faster than torch's kernel for the loss head's product ``kind`` ("nt":
    ``x @ W.T`` against oneDNN or `torch.mm`, whichever `onednn_pays` picks; "nn": ``g @ W``; "tn":
    ``g.T @ x``) with x (rows, in), W (out, in), g (rows, out), on this machine.

    Measured and kept as `onednn_pays` is (NumPy must win by 5%). False while `onednn_forced` fixes the
    kernels, and without threadpoolctl (NumPy's BLAS threads must follow torch's).
    """
    if _forced is not None:
        return False
    rows = timed_rows(rows)
    shape = (kind, torch.get_num_threads(), rows, in_features, out_features)
    if shape not in _numpy_pays:
        try:
            import threadpoolctl  # noqa: F401
        except ImportError:
            _numpy_pays[shape] = False
        else:
            if kind == "nt":  # NumPy's rival there is oneDNN's or torch's: chosen first (not under the lock)
                onednn_pays(rows, in_features, out_features)
            _numpy_pays[shape] = _cached_or_measured(
                numpy_decision_key(kind, rows, in_features, out_features),
                lambda: _measure_numpy(kind, rows, in_features, out_features, repeats),
            )
    return _numpy_pays[shape]


def _measure_numpy(kind: str, rows: int, in_features: int, out_features: int, repeats: int) -> bool:
    with torch.no_grad():
        x, w = torch.randn(rows, in_features), torch.randn(out_features, in_features)
        g = torch.randn(rows, out_features)
        # The operands and output buffer as the loss passes them (``g.T @ x`` makes a new tensor).
        a, b, out = {
            "nt": (x, w, torch.empty(rows, out_features)),
            "nn": (g, w, torch.empty(rows, in_features)),
            "tn": (g, x, None),
        }[kind]
        # (x @ W.T's rival, oneDNN or torch.mm, was chosen by `numpy_pays` before this: `_torch_product` reads it)
        candidates = {
            "torch": lambda: _torch_product(kind, a, b, out),
            "NumPy": lambda: _numpy_product(kind, a, b, out),
        }
        median = median_times(candidates, repeats)
    log.debug(
        "%s, x (%d, %d), W (%d, %d), %d threads: NumPy %.2f ms, torch %.2f ms (medians of %d)",
        _PRODUCTS[kind],
        rows,
        in_features,
        out_features,
        in_features,
        torch.get_num_threads(),
        median["NumPy"] * 1e3,
        median["torch"] * 1e3,
        repeats,
    )
    return median["NumPy"] < _MARGIN * median["torch"]


class _OneDNNLinearFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        y = onednn_nt(x.reshape(-1, x.shape[-1]), weight, bias)
        return y.view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        x, weight = ctx.saved_tensors
        g = grad_y.reshape(-1, grad_y.shape[-1])
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = onednn_nt(g, weight.t()).view(x.shape)  # dy @ W
        if ctx.needs_input_grad[1]:
            grad_w = g.t() @ x.reshape(-1, x.shape[-1])
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = g.sum(0)
        return grad_x, grad_w, grad_b


class OneDNNLinear(nn.Linear):
    """An ``nn.Linear`` whose CPU float32 matmuls run through oneDNN; built around an existing layer's
    parameters (shared, not copied), so its state dict is the layer's. Other devices and dtypes, and
    anything under autocast (which `F.linear` obeys and a custom function would not), take `F.linear`."""

    def __init__(self, linear: nn.Linear) -> None:
        nn.Module.__init__(self)  # not nn.Linear's: it would allocate and initialise a new weight
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            x.device.type != "cpu"
            or x.dtype != torch.float32
            or self.weight.dtype != torch.float32
            or torch.is_autocast_enabled("cpu")
        ):
            return F.linear(x, self.weight, self.bias)
        return _OneDNNLinearFunction.apply(x, self.weight, self.bias)

    def plain(self) -> nn.Linear:
        """An ``nn.Linear`` holding the same parameters."""
        linear = nn.Linear.__new__(nn.Linear)
        nn.Module.__init__(linear)
        linear.in_features, linear.out_features = self.in_features, self.out_features
        linear.weight, linear.bias = self.weight, self.bias
        return linear


def _swappable(module: nn.Module) -> bool:
    # Exactly nn.Linear: LoRA wrappers and other subclasses keep their own forward.
    return type(module) is nn.Linear and module.weight.device.type == "cpu" and module.weight.dtype == torch.float32


def apply_onednn_linears(blocks: nn.ModuleList, rows: int) -> int:
    """Swap the CPU float32 ``nn.Linear`` layers of the transformer ``blocks`` for `OneDNNLinear`, in
    place, if oneDNN is faster on the largest of them (forward and input gradient) with ``rows`` rows
    (tokens per micro-batch); returns how many were swapped. Layers already swapped stay as they are.

    The LM head is not in the blocks: the chunked loss multiplies by it itself, through `nt_matmul`.
    """
    targets = [(block, name, mod) for block in blocks for name, mod in block.named_modules() if _swappable(mod)]
    if not targets:
        return 0
    largest = max((mod for _, _, mod in targets), key=lambda mod: mod.weight.numel())
    if not onednn_pays(rows, largest.in_features, largest.out_features, backward=True):
        return 0
    for block, name, mod in targets:
        block.set_submodule(name, OneDNNLinear(mod))
    log.debug("%d linear layers through oneDNN", len(targets))
    return len(targets)


def remove_onednn_linears(model: nn.Module) -> None:
    """Put plain ``nn.Linear`` layers back wherever `apply_onednn_linears` swapped them in ``model``."""
    for name, mod in list(model.named_modules()):
        if isinstance(mod, OneDNNLinear):
            model.set_submodule(name, mod.plain())


__all__ = [
    "OneDNNLinear",
    "decision_key",
    "decisions_path",
    "apply_onednn_linears",
    "nt_matmul",
    "onednn_available",
    "onednn_forced",
    "onednn_nt",
    "onednn_pays",
    "remove_onednn_linears",
]
