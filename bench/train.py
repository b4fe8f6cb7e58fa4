"""Training throughput: cerebras-gpt vs transformers `GPT2LMHeadModel`, same shapes, batch and optimizer.

One training step = forward, token cross-entropy, backward, global-norm clipping at 1.0 and an AdamW step
(β=(0.9, 0.95), weight decay 0.1), fp32 on the CPU. Ours is the step `cerebras_gpt.train.loop` takes
(`train.loss.token_loss` and `train.optim.build_optimizer`); theirs is the textbook step over
`GPT2LMHeadModel` (logits, `F.cross_entropy`, `torch.optim.AdamW(fused=True)`, the optimizer
transformers' Trainer picks by default). Both models have the same shape and
the same weights (ours saved as an HF directory, loaded by transformers with activation_function="gelu",
exact erf GELU as ours). The two alternate within one run (ours, theirs, ours, ...) so both see the same
machine load; medians of the repeats are reported, for the whole step and for its parts:

- forward: the model call (ours: the transformer up to the final LayerNorm when the loss is chunked, as
  the LM head then runs inside the loss; theirs: up to the logits);
- loss: cross-entropy (ours chunked: LM head forward and backward too);
- backward: ``loss.backward()``;
- optimizer: clipping, AdamW step, zeroing the gradients.

Peak RSS: each implementation trains two steps alone in a fresh child process (no other model in it);
the figure is the process's peak resident memory (VmHWM) and, beside it, how far it rose above
the resident memory once the model was built (activations, gradients, optimizer state, logits).
MFU is against this machine's cached matmul peak (`cerebras_gpt.train.metrics.peak_flops`, refreshed
by this run), with `GPTConfig.flops_per_token`, the formula `train --dry-run` and the training log use.

    flock /tmp/bench.lock python bench/train.py [--shapes Cerebras-GPT-111M:512:4 debug-small:128:8] [--repeats 5]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

PARTS = ("forward", "loss", "backward", "optimizer")
LOGITS_LOSS = "ours, logits loss"
TORCH_MM = "ours, torch.mm"


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _peak_rss_bytes() -> int:
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent through fork and exec, so a child
    # of this (large) bench process would report the parent's peak.
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


class Runner:
    """One implementation's model, optimizer and step, timed by parts."""

    def __init__(self, impl: str, model, config) -> None:
        self.impl, self.model, self.config = impl, model, config
        if impl.startswith("ours"):
            from cerebras_gpt.train.optim import build_optimizer

            self.opt = build_optimizer(model, config, 1e-4, (0.9, 0.95), 1e-8, 0.1)
            self.params = [p for g in self.opt.param_groups for p in g["params"]]
        else:
            # fused=True: what transformers' Trainer uses by default (optim "adamw_torch_fused", torch >= 2.8).
            self.opt = torch.optim.AdamW(
                model.parameters(), lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, fused=True
            )
            self.params = list(model.parameters())

    def step(self, batch: torch.Tensor) -> dict[str, float]:
        from cerebras_gpt.train.cpu_matmul import onednn_forced

        # "ours, torch.mm": the same step with every matmul through torch's BLAS, none through oneDNN or NumPy.
        with onednn_forced(False) if self.impl == TORCH_MM else contextlib.nullcontext():
            return self._step(batch)

    def _step(self, batch: torch.Tensor) -> dict[str, float]:
        x, y = batch[:, :-1], batch[:, 1:]
        t = [time.perf_counter()]
        if self.impl.startswith("ours"):
            from cerebras_gpt.train.loss import loss_from_output, output_for_loss

            # "ours, logits loss": the same step with the textbook loss over the model's logits.
            out = self.model(x) if self.impl == LOGITS_LOSS else output_for_loss(self.model, x)
            t.append(time.perf_counter())
            # The loop's step: summed token loss times 1/count (accumulation and ranks give one gradient).
            loss = loss_from_output(out, y) / y.numel()
        else:
            logits = self.model(input_ids=x).logits
            t.append(time.perf_counter())
            loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        t.append(time.perf_counter())
        loss.backward()
        t.append(time.perf_counter())
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        t.append(time.perf_counter())
        parts = {name: t[i + 1] - t[i] for i, name in enumerate(PARTS)}
        parts["step"] = t[-1] - t[0]
        return parts


def build(impl: str, preset: str, rows: int, hf_dir: str | None = None):
    from cerebras_gpt import GPT, GPTConfig
    from cerebras_gpt.train.cpu_matmul import apply_onednn_linears

    config = GPTConfig.from_name(preset)
    if impl.startswith("ours"):
        torch.manual_seed(0)
        model = GPT(config).train()
        if impl != TORCH_MM:  # what `parallelize` does for CPU training: oneDNN where measured faster
            apply_onednn_linears(model.transformer.h, rows)
        return Runner(impl, model, config)
    from transformers import GPT2Config, GPT2LMHeadModel

    if hf_dir is not None:
        model = GPT2LMHeadModel.from_pretrained(hf_dir, activation_function="gelu", attn_implementation="sdpa")
    else:  # the RSS child: same shape, its own init (memory does not depend on the values)
        torch.manual_seed(0)
        model = GPT2LMHeadModel(
            GPT2Config(
                vocab_size=config.vocab_size,
                n_positions=config.block_size,
                n_embd=config.n_embd,
                n_layer=config.n_layer,
                n_head=config.n_head,
                n_inner=config.ffn_dim,
                activation_function="gelu",
                attn_implementation="sdpa",
            )
        )
    return Runner(impl, model.train(), config)


def rss_child(impl: str, preset: str, seq: int, batch: int) -> None:
    """Two steps of ``impl`` alone in this process; prints its peak RSS and the rise over the built model."""
    runner = build(impl, preset, batch * seq)
    x = torch.randint(0, runner.config.vocab_size, (batch, seq + 1))
    before = _rss_bytes()
    for _ in range(2):
        runner.step(x)
    peak = _peak_rss_bytes()
    print(json.dumps({"peak_rss": peak, "rise": peak - before}))


def measure_rss(impl: str, preset: str, seq: int, batch: int) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--rss-child", impl, preset, str(seq), str(batch)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_shape(
    preset: str, seq: int, batch: int, repeats: int, peak: float, compare_logits_loss: bool, compare_matmul: bool
) -> dict:
    ours = build("ours", preset, batch * seq)
    with tempfile.TemporaryDirectory() as d:
        ours.model.save_pretrained(d)
        theirs = build("transformers", preset, batch * seq, hf_dir=d)
    runners = {"ours": ours, "transformers": theirs}
    if compare_logits_loss:
        runners[LOGITS_LOSS] = build(LOGITS_LOSS, preset, batch * seq)
    if compare_matmul:
        runners[TORCH_MM] = build(TORCH_MM, preset, batch * seq)
    x = torch.randint(0, ours.config.vocab_size, (batch, seq + 1))
    times: dict[str, list[dict[str, float]]] = {name: [] for name in runners}
    for runner in runners.values():  # warm-up (allocator, optimizer state)
        runner.step(x)
    for _ in range(repeats):
        for name, runner in runners.items():
            times[name].append(runner.step(x))
    flops = ours.config.flops_per_token(seq)
    del runners, ours, theirs  # free their memory before the RSS children run
    row = {"preset": preset, "seq_len": seq, "batch": batch}
    for name, ts in times.items():
        median = {part: statistics.median(t[part] for t in ts) for part in (*PARTS, "step")}
        tok_s = batch * seq / median["step"]
        row[name] = {
            "median_s": median,
            "tokens_per_s": tok_s,
            "mfu": flops * tok_s / peak,
            **measure_rss(name, preset, seq, batch),
        }
    row["speedup"] = row["ours"]["tokens_per_s"] / row["transformers"]["tokens_per_s"]
    if compare_logits_loss:
        row["chunked_loss_speedup"] = row["ours"]["tokens_per_s"] / row[LOGITS_LOSS]["tokens_per_s"]
    if compare_matmul:
        row["onednn_speedup"] = row["ours"]["tokens_per_s"] / row[TORCH_MM]["tokens_per_s"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--shapes", nargs="+", default=["Cerebras-GPT-111M:512:4", "debug-small:128:8"], help="PRESET:SEQ_LEN:BATCH"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-record", action="store_true", help="do not write BENCHMARKS.md")
    parser.add_argument(
        "--compare-logits-loss",
        action="store_true",
        help="also run ours with the textbook loss over its logits, to measure what the chunked loss buys",
    )
    parser.add_argument(
        "--compare-matmul",
        action="store_true",
        help="also run ours with every matmul through torch's BLAS, to measure what oneDNN and NumPy's BLAS buy here",
    )
    parser.add_argument("--rss-child", nargs=4, metavar=("IMPL", "PRESET", "SEQ", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        impl, preset, seq, batch = args.rss_child
        rss_child(impl, preset, int(seq), int(batch))
        return

    from cerebras_gpt.train.metrics import peak_flops

    peak, how = peak_flops(torch.device("cpu"), torch.float32, refresh=True)
    rows = []
    for spec in args.shapes:
        preset, seq, batch = spec.split(":")
        rows.append(
            bench_shape(preset, int(seq), int(batch), args.repeats, peak, args.compare_logits_loss, args.compare_matmul)
        )
        print(json.dumps(rows[-1]))
    lines = [
        "## Training throughput (`train`)",
        "",
        f"`flock /tmp/bench.lock .venv/bin/python bench/train.py --repeats {args.repeats}"
        f"{' --compare-logits-loss' if args.compare_logits_loss else ''}"
        f"{' --compare-matmul' if args.compare_matmul else ''}` on {platform.machine()}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}; fp32 CPU; matmul peak "
        f"{peak / 1e9:.1f} GFLOP/s ({how.split(';')[0]}; shared machine: read the ratios). One step = "
        "forward, cross-entropy, backward, clip 1.0, AdamW; the two alternate within the run; median of "
        "the repeats. Peak RSS: each alone in a child process, two steps; the rise is over the built model.",
        "",
        "| shape | seq x batch | ours tokens/s | transformers tokens/s | ours / transformers | ours MFU | "
        "transformers MFU |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['preset']} | {r['seq_len']} x {r['batch']} | {r['ours']['tokens_per_s']:,.0f} | "
            f"{r['transformers']['tokens_per_s']:,.0f} | {r['speedup']:.2f}x | {r['ours']['mfu']:.1%} | "
            f"{r['transformers']['mfu']:.1%} |"
        )
    if args.compare_logits_loss:
        lines += [
            "",
            "The chunked loss, side by side with ours on the textbook loss (logits + `F.cross_entropy`): "
            + ", ".join(f"{r['preset']} {r['chunked_loss_speedup']:.2f}x" for r in rows)
            + ".",
        ]
    if args.compare_matmul:
        lines += [
            "",
            "oneDNN and NumPy's BLAS where measured faster (`train/cpu_matmul.py`), side by side with ours with "
            "every matmul through torch's BLAS: "
            + ", ".join(f"{r['preset']} {r['onednn_speedup']:.2f}x" for r in rows)
            + ".",
        ]
    lines += [
        "",
        "Per part (median seconds per step) and memory:",
        "",
        "| shape | impl | forward | loss | backward | optimizer | step | peak RSS | rise over model |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        for impl in [name for name in ("ours", "transformers", LOGITS_LOSS, TORCH_MM) if name in r]:
            m = r[impl]["median_s"]
            lines.append(
                f"| {r['preset']} | {impl} | "
                + " | ".join(f"{m[p]:.3f}" for p in (*PARTS, "step"))
                + f" | {r[impl]['peak_rss'] / 2**20:,.0f} MiB | {r[impl]['rise'] / 2**20:,.0f} MiB |"
            )
    section = "\n".join(lines) + "\n"
    print(section)
    if not args.no_record:
        from update_section import update_section

        update_section(ROOT / "BENCHMARKS.md", "train", section)


if __name__ == "__main__":
    main()
