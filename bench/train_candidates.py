"""Training-step candidates measured for issue #21, each side by side in one process (alternating repeats,
medians), printed as JSON; BENCHMARKS.md ("Training step: what did not pay") quotes them.

    flock /tmp/bench.lock python bench/train_candidates.py optimizer     # AdamW foreach / for-loop / fused, 111M
    flock /tmp/bench.lock python bench/train_candidates.py loss-blocks   # LM head + loss: whole logits vs row blocks
    flock /tmp/bench.lock python bench/train_candidates.py loss-softmax  # chunked loss: the passes over each block
    flock /tmp/bench.lock python bench/train_candidates.py compile       # torch.compile vs eager, debug-small
    flock /tmp/bench.lock python bench/train_candidates.py malloc --malloc-child 0|1   # run each in turn (below)

``malloc`` needs a process per setting (glibc options act on the whole process): run it as
``for i in 1 2; do for m in 0 1; do python bench/train_candidates.py malloc --malloc-child $m; done; done``.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import time
from pathlib import Path

import torch

from cerebras_gpt import GPT, GPTConfig
from cerebras_gpt.runtime import median_times
from cerebras_gpt.train.loss import CHUNK_ROWS, ChunkedLinearCrossEntropy, _logits_block, token_loss
from cerebras_gpt.train.optim import param_groups


def optimizer(repeats: int) -> dict:
    config = GPTConfig.from_name("Cerebras-GPT-111M")
    model = GPT(config)
    params = list(model.parameters())
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3

    def make(**kw):
        groups = param_groups(model, config, 0.1)
        opt = torch.optim.AdamW(groups, lr=1e-4, betas=(0.9, 0.95), eps=1e-8, **kw)
        return lambda: (torch.nn.utils.clip_grad_norm_(params, 1.0), opt.step())

    return median_times(
        {"foreach": make(foreach=True), "for-loop": make(foreach=False), "fused": make(fused=True)}, repeats
    )


def loss_blocks(repeats: int) -> dict:
    import torch.nn.functional as F

    n, d, v = 2048, 768, 50257  # the 111M shape at seq 512 x 4
    h0, w0, y = torch.randn(n, d), torch.randn(v, d) * 0.02, torch.randint(0, v, (n,))

    def whole():
        h, w = h0.clone().requires_grad_(), w0.clone().requires_grad_()
        F.cross_entropy(h @ w.t(), y, reduction="sum").backward()

    def blocks(rows):
        def run():
            h, w = h0.clone().requires_grad_(), w0.clone().requires_grad_()
            ChunkedLinearCrossEntropy.apply(h, w, y, rows).backward()

        return run

    return median_times(
        {"whole logits": whole, **{f"{r}-row blocks": blocks(r) for r in (256, 512, CHUNK_ROWS)}}, repeats
    )


class TwoPassChunkedLoss(torch.autograd.Function):
    """The chunked loss as it was before: `torch.logsumexp` (which allocates the shifted (n, V) logits),
    a second exp pass for the softmax, and a fresh block of logits each time. Kept here to be measured."""

    @staticmethod
    def forward(ctx, h, weight, y, chunk):
        grad_h, grad_w = torch.empty_like(h), torch.zeros_like(weight)
        total = torch.zeros(())
        for start in range(0, h.shape[0], chunk):
            hc, yc = h[start : start + chunk], y[start : start + chunk]
            logits = hc @ weight.t()
            lse = torch.logsumexp(logits, dim=1)
            total += (lse - logits.gather(1, yc.unsqueeze(1)).squeeze(1)).sum()
            probs = logits.sub_(lse.unsqueeze(1)).exp_()
            probs[torch.arange(len(yc)), yc] -= 1.0
            torch.mm(probs, weight, out=grad_h[start : start + chunk])
            grad_w.addmm_(probs.t(), hc)
        ctx.save_for_backward(grad_h, grad_w)
        return total

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w = ctx.saved_tensors
        return grad_h * grad_out, grad_w * grad_out, None, None


class LogSoftmaxChunkedLoss(torch.autograd.Function):
    """The chunked loss before the in-place softmax: log-probabilities written over the logits, the loss
    read from them, then the softmax as their in-place exp (two passes over each block). Kept here to be
    measured."""

    @staticmethod
    def forward(ctx, h, weight, y, chunk):
        grad_h, grad_w = torch.empty_like(h), None
        total = torch.zeros(())
        for start in range(0, h.shape[0], chunk):
            hc, yc = h[start : start + chunk], y[start : start + chunk]
            logits = torch.mm(hc, weight.t(), out=_logits_block(len(hc), weight.shape[0], hc))
            log_probs = torch.ops.aten._log_softmax.out(logits, 1, False, out=logits)
            total -= log_probs.gather(1, yc.unsqueeze(1)).squeeze(1).sum()
            probs = log_probs.exp_()
            probs[torch.arange(len(yc)), yc] -= 1.0
            torch.mm(probs, weight, out=grad_h[start : start + chunk])
            grad_w = probs.t() @ hc if grad_w is None else grad_w.addmm_(probs.t(), hc)
        ctx.save_for_backward(grad_h, grad_w)
        return total

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w = ctx.saved_tensors
        return grad_h.mul_(grad_out), grad_w.mul_(grad_out), None, None


def loss_softmax(repeats: int) -> dict:
    """The chunked loss with its gradients at debug-small's and 111M's head shapes: two-pass (logsumexp),
    log-softmax in place + exp, and softmax in place (the code now)."""
    out = {}
    for n, d in ((1024, 256), (2048, 768)):
        torch.manual_seed(0)
        h, w = torch.randn(n, d, requires_grad=True), (torch.randn(50257, d) * 0.02).requires_grad_()
        y = torch.randint(0, 50257, (n,))

        def run(fn, h=h, w=w, y=y):
            return lambda: fn.apply(h, w, y, CHUNK_ROWS).backward()

        for name, t in median_times(
            {
                "two-pass": run(TwoPassChunkedLoss),
                "log-softmax + exp": run(LogSoftmaxChunkedLoss),
                "softmax in place": run(ChunkedLinearCrossEntropy),
            },
            repeats,
        ).items():
            out[f"{n}x{d} {name}"] = t
    return out


def compile_step(repeats: int, preset: str = "debug-small", seq: int = 128, batch: int = 8) -> dict:
    config = GPTConfig.from_name(preset)
    x = torch.randint(0, config.vocab_size, (batch, seq + 1))
    from cerebras_gpt.train.optim import build_optimizer

    def make(compiled: bool):
        torch.manual_seed(0)
        model = GPT(config).train()
        opt = build_optimizer(model, config, 1e-4, (0.9, 0.95), 1e-8, 0.1)
        forward = torch.compile(model) if compiled else model

        def step():
            (token_loss(forward, x[:, :-1], x[:, 1:]) / x[:, 1:].numel()).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)

        return step

    steps = {"eager": make(False), "compiled": make(True)}
    t0 = time.perf_counter()
    steps["compiled"]()
    first = time.perf_counter() - t0
    return {**median_times(steps, repeats), "compiled first step (compilation)": first}


def malloc_child(tuned: bool, steps: int = 4) -> dict:
    if tuned:  # keep big freed buffers in the heap: no fresh page-faulted mmap per step
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 1 << 30)
        libc.mallopt(m_trim_threshold, (1 << 31) - 1)
    from cerebras_gpt.train.optim import build_optimizer

    config = GPTConfig.from_name("Cerebras-GPT-111M")
    torch.manual_seed(0)
    model = GPT(config).train()
    opt = build_optimizer(model, config, 1e-4, (0.9, 0.95), 1e-8, 0.1)
    x = torch.randint(0, config.vocab_size, (4, 513))
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        (token_loss(model, x[:, :-1], x[:, 1:]) / x[:, 1:].numel()).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    hwm = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM"))
    return {"mallopt": tuned, "median_step_s": statistics.median(times[1:]), "VmHWM_MiB": int(hwm.split()[1]) // 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["optimizer", "loss-blocks", "loss-softmax", "compile", "malloc"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--malloc-child", type=int, choices=[0, 1], default=0)
    args = parser.parse_args()
    run = {
        "optimizer": lambda: optimizer(args.repeats),
        "loss-blocks": lambda: loss_blocks(args.repeats),
        "loss-softmax": lambda: loss_softmax(args.repeats),
        "compile": lambda: compile_step(args.repeats),
        "malloc": lambda: malloc_child(bool(args.malloc_child)),
    }
    print(json.dumps({"what": args.what, "threads": torch.get_num_threads(), "seconds": run[args.what]()}))


if __name__ == "__main__":
    main()
