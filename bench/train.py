"""Training throughput: cerebras-gpt vs transformers `GPT2LMHeadModel`, same shapes, batch and optimizer.

One training step = forward, token cross-entropy, backward, global-norm clipping at 1.0 and an AdamW step
(β=(0.9, 0.95), weight decay 0.1), fp32 on the CPU. Both models have the same shape and the same weights
(ours saved as an HF directory, loaded by transformers with activation_function="gelu", exact erf GELU as
ours). The two alternate within one run (ours, theirs, ours, ...) so both see the same machine load; the
median step time is reported. MFU is against this machine's measured fp32 matmul peak
(`cerebras_gpt.train.metrics.measure_peak_flops`).

    flock /tmp/bench.lock python bench/train.py [--shapes Cerebras-GPT-111M:512:4 debug-small:128:8] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))


def _step(model, opt, x, hf: bool) -> None:
    logits = model(input_ids=x[:, :-1]).logits if hf else model(x[:, :-1])
    F.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten()).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)


def bench_shape(preset: str, seq: int, batch: int, repeats: int, peak: float) -> dict:
    from transformers import GPT2LMHeadModel

    from cerebras_gpt import GPT, GPTConfig
    from cerebras_gpt.train.optim import build_optimizer

    torch.manual_seed(0)
    config = GPTConfig.from_name(preset)
    ours = GPT(config).train()
    with tempfile.TemporaryDirectory() as d:
        ours.save_pretrained(d)
        theirs = GPT2LMHeadModel.from_pretrained(d, activation_function="gelu", attn_implementation="sdpa").train()
    opts = {"ours": build_optimizer(ours, config, 1e-4, (0.9, 0.95), 1e-8, 0.1),
            "transformers": torch.optim.AdamW(theirs.parameters(), lr=1e-4, betas=(0.9, 0.95), eps=1e-8,
                                              weight_decay=0.1)}
    models = {"ours": ours, "transformers": theirs}
    x = torch.randint(0, config.vocab_size, (batch, seq + 1))
    times: dict[str, list[float]] = {"ours": [], "transformers": []}
    for name in models:  # warm-up (allocator, optimizer state)
        _step(models[name], opts[name], x, name == "transformers")
    for _ in range(repeats):
        for name in models:
            t0 = time.perf_counter()
            _step(models[name], opts[name], x, name == "transformers")
            times[name].append(time.perf_counter() - t0)
    flops = config.flops_per_token(seq)
    row = {"preset": preset, "seq_len": seq, "batch": batch}
    for name, ts in times.items():
        tok_s = batch * seq / statistics.median(ts)
        row[name] = {"median_s": statistics.median(ts), "tokens_per_s": tok_s, "mfu": flops * tok_s / peak}
    row["speedup"] = row["ours"]["tokens_per_s"] / row["transformers"]["tokens_per_s"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=["Cerebras-GPT-111M:512:4", "debug-small:128:8"],
                        help="PRESET:SEQ_LEN:BATCH")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-record", action="store_true", help="do not write BENCHMARKS.md")
    args = parser.parse_args()

    from cerebras_gpt.train.metrics import measure_peak_flops

    peak = measure_peak_flops(torch.device("cpu"), torch.float32, seconds=1.0)
    rows = []
    for spec in args.shapes:
        preset, seq, batch = spec.split(":")
        rows.append(bench_shape(preset, int(seq), int(batch), args.repeats, peak))
        print(json.dumps(rows[-1]))
    lines = ["## Training throughput (`train`)", "",
             f"`flock /tmp/bench.lock .venv/bin/python bench/train.py --repeats {args.repeats}` on {platform.machine()}, "
             f"{torch.get_num_threads()} threads, torch {torch.__version__}; fp32 CPU; measured matmul peak "
             f"{peak / 1e9:.1f} GFLOP/s (shared machine: read the ratios). One step = forward, cross-entropy, "
             "backward, clip 1.0, AdamW; the two alternate within the run; median of the repeats.", "",
             "| shape | seq x batch | ours tokens/s | transformers tokens/s | ours / transformers | ours MFU | "
             "transformers MFU |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['preset']} | {r['seq_len']} x {r['batch']} | {r['ours']['tokens_per_s']:,.0f} | "
                     f"{r['transformers']['tokens_per_s']:,.0f} | {r['speedup']:.2f}x | {r['ours']['mfu']:.1%} | "
                     f"{r['transformers']['mfu']:.1%} |")
    section = "\n".join(lines) + "\n"
    print(section)
    if not args.no_record:
        from update_section import update_section

        update_section(ROOT / "BENCHMARKS.md", "train", section)


if __name__ == "__main__":
    main()
