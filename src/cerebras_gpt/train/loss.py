"""The training loss: summed token cross-entropy of a model on (inputs, targets), targets -100 ignored.

The LM head of a Cerebras-GPT model is its largest matmul, and its logits its largest tensor: at the 111M
shape, seq 512 x 4, they are 2,048 x 50,257 fp32 values, 411 MB, and the textbook loss
(``F.cross_entropy(model(x))``) holds three such tensors at once (logits, log-softmax, their gradient).
When the model is trained in fp32 with autograd on, the loss here never builds them: the model runs with
its LM head skipped (up to the final LayerNorm and the μP output multiplier, which commutes with the head),
and `ChunkedLinearCrossEntropy` computes the head, the loss and the head's gradients a block of rows at
a time, with the gradients for the backward pass made in the same sweep. Elsewhere (bf16 autocast,
FSDP2, a wrapped, hooked or biased head, no autograd) the model's logits and ``F.cross_entropy`` are used.

Split in two so a benchmark can time the parts: `output_for_loss` runs the model, `loss_from_output`
turns its output into the summed loss. `token_loss` is the two together, what the training loop calls.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cerebras_gpt.runtime import is_dtensor
from cerebras_gpt.train.cpu_matmul import nn_matmul, nt_matmul, tn_matmul

# Rows of logits per block: 1,024 x 50,257 fp32 is 206 MB. Much smaller blocks make the head's matmuls too
# thin for the BLAS; the measured block sizes are in BENCHMARKS.md, "Figures from the code".
CHUNK_ROWS = 1024
IGNORE_INDEX = -100

# One block of logits per thread, kept between steps on the CPU. A fresh 206 MB block each step is fresh
# memory from the OS, page-faulted in on first write: as long as the block's matmul at debug-small's shape
# (BENCHMARKS.md, "Training step"). CUDA's caching allocator already reuses its blocks.
_workspace = threading.local()


def _logits_block(rows: int, vocab: int, like: torch.Tensor) -> torch.Tensor:
    """A (rows, vocab) tensor to write a block of logits into: this thread's reused CPU buffer, else new."""
    if like.device.type != "cpu":
        return torch.empty(rows, vocab, dtype=like.dtype, device=like.device)
    buffer = getattr(_workspace, "logits", None)
    if buffer is None or buffer.dtype != like.dtype or buffer.numel() < rows * vocab:
        _workspace.logits = buffer = None  # free the old one before making the new
        _workspace.logits = buffer = torch.empty(rows * vocab, dtype=like.dtype)
    return buffer[: rows * vocab].view(rows, vocab)


# Below this probability of its target a row's loss is taken from its recomputed logits (logsumexp minus
# the target's logit) rather than -log(p): float32 probabilities lose precision (denormals) and reach 0.
_LOG_OF_SOFTMAX_FLOOR = 1e-30


def _softmax_in_place(logits: torch.Tensor) -> torch.Tensor:
    """``softmax(logits, dim=1)`` written over ``logits`` on the CPU, whose kernel reads each row (max,
    sum of exps) before writing it; elsewhere a new tensor (the caching allocator makes that cheap)."""
    if logits.device.type == "cpu":
        return torch.ops.aten._softmax.out(logits, 1, False, out=logits)
    return torch.softmax(logits, dim=1)


def release_workspace() -> None:
    """Free this thread's logits buffer (the Trainer calls it when a fit ends)."""
    _workspace.logits = None


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of ``h @ weight.T`` (rows of ``h`` (N, C), ``weight`` (V, C)) against ``y`` (N,),
    rows with ``y == -100`` ignored, computed ``chunk`` rows at a time. The gradients with respect to ``h``
    and ``weight`` are made during the forward pass (softmax - one-hot, times the block's inputs) and
    scaled by the incoming gradient in the backward pass, so no (N, V) tensor exists at any time."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, weight: torch.Tensor, y: torch.Tensor, chunk: int) -> torch.Tensor:
        grad_h = torch.empty_like(h)
        grad_w = None  # the first block writes it, the others add to it: no zero-filled weight-sized buffer
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        for start in range(0, h.shape[0], chunk):
            hc, yc = h[start : start + chunk], y[start : start + chunk]
            keep = yc != IGNORE_INDEX
            target = torch.where(keep, yc, 0)
            logits = nt_matmul(hc, weight, out=_logits_block(len(hc), weight.shape[0], hc))  # (n, V)
            # The softmax in place (one fused kernel over each row, one pass over the block: no (n, V)
            # temporary, where log-softmax + exp took two and `torch.logsumexp` + a shifted exp + a
            # division five; BENCHMARKS.md, "Training step") and the loss as -log of the target's
            # probability, exact to float32 rounding while that probability is a normal float.
            probs = _softmax_in_place(logits)
            target_probs = probs.gather(1, target.unsqueeze(1)).squeeze(1)
            row_loss = torch.where(keep, -torch.log(target_probs), 0.0)
            tiny = keep & (target_probs < _LOG_OF_SOFTMAX_FLOOR)
            if bool(tiny.any()):  # rare: a target far below the rest; recompute those rows' logits
                exact = hc[tiny] @ weight.t()
                row_loss[tiny] = torch.logsumexp(exact, 1) - exact.gather(1, target[tiny].unsqueeze(1)).squeeze(1)
            total += row_loss.sum()
            # d loss / d logits = softmax - one_hot, zero on ignored rows.
            probs[torch.arange(len(yc), device=h.device), target] -= 1.0
            if not bool(keep.all()):  # a pass over the whole block only where some target is ignored
                probs[~keep] = 0.0
            nn_matmul(probs, weight, out=grad_h[start : start + chunk])
            # (the first block's product through the kernel measured fastest; the others add with addmm_)
            grad_w = tn_matmul(probs, hc) if grad_w is None else grad_w.addmm_(probs.t(), hc)
        if grad_w is None:  # no rows at all
            grad_w = torch.zeros_like(weight)
        ctx.save_for_backward(grad_h, grad_w)
        return total

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        grad_h, grad_w = ctx.saved_tensors
        # In place: the gradients were made for this one backward pass (the graph is not kept for another),
        # and a weight-sized copy per step would be memory traffic for nothing.
        return grad_h.mul_(grad_out), grad_w.mul_(grad_out), None, None


@dataclass
class HeadInput:
    """What the model gives the chunked loss: the LM head's input (B, T, C) and the head's weight."""

    hidden: torch.Tensor
    weight: torch.Tensor


def _plain_gpt(model: nn.Module) -> nn.Module | None:
    """The cerebras_gpt `GPT` under ``model`` (itself, or under DDP), if its head can be chunked."""
    from cerebras_gpt.model import GPT

    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    if not isinstance(inner, GPT) or type(inner.lm_head) is not nn.Linear or inner.lm_head.bias is not None:
        return None
    if is_dtensor(inner.lm_head.weight):  # sharded by FSDP2: its forward hooks own the head
        return None
    if inner.lm_head._forward_hooks or inner.lm_head._forward_pre_hooks:  # someone watches the logits
        return None
    return inner


@contextlib.contextmanager
def _without_head(gpt: nn.Module) -> Iterator[None]:
    """The model's forward returns the LM head's input (times the μP output multiplier) instead of logits."""
    head = gpt.lm_head
    gpt.lm_head = nn.Identity()
    try:
        yield
    finally:
        gpt.lm_head = head


def chunked_loss_applies(model: nn.Module, x: torch.Tensor) -> bool:
    """Whether `output_for_loss` takes the chunked path for ``model`` here (fp32, autograd on, plain head)."""
    return (
        torch.is_grad_enabled()
        and not torch.is_autocast_enabled(x.device.type)
        and _plain_gpt(model) is not None
        and _plain_gpt(model).lm_head.weight.dtype == torch.float32
    )


def output_for_loss(
    model: nn.Module, x: torch.Tensor, segment_ids: torch.Tensor | None = None
) -> torch.Tensor | HeadInput:
    """The model's output that `loss_from_output` needs, for inputs ``x`` (B, T) (and packed documents'
    ``segment_ids`` (B, T)): the head's input and weight where the chunked loss applies, else the logits
    (B, T, V)."""
    kwargs = {} if segment_ids is None else {"segment_ids": segment_ids}
    if not chunked_loss_applies(model, x):
        return model(x, **kwargs)
    gpt = _plain_gpt(model)
    with _without_head(gpt):
        hidden = model(x, **kwargs)
    return HeadInput(hidden, gpt.lm_head.weight)


def loss_from_output(output: torch.Tensor | HeadInput, y: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy (fp32) of ``output`` from `output_for_loss` against targets ``y`` (B, T)."""
    if isinstance(output, HeadInput):
        return ChunkedLinearCrossEntropy.apply(output.hidden.flatten(0, 1), output.weight, y.flatten(), CHUNK_ROWS)
    return F.cross_entropy(output.float().flatten(0, 1), y.flatten(), ignore_index=IGNORE_INDEX, reduction="sum")


def token_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Summed token cross-entropy of ``model`` on inputs ``x`` (B, T) against targets ``y`` (B, T)."""
    return loss_from_output(output_for_loss(model, x), y)


__all__ = [
    "token_loss",
    "output_for_loss",
    "loss_from_output",
    "ChunkedLinearCrossEntropy",
    "chunked_loss_applies",
    "release_workspace",
]
