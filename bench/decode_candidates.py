"""Decode-step candidates measured for issue #15, each side by side in one process (alternating repeats,
medians of tokens/s), printed as JSON; BENCHMARKS.md ("CPU decoding vs llama.cpp": what did not pay)
quotes them. Cerebras-GPT-111M shape, random weights, batch 1, greedy, 32-token prompt.

    flock /tmp/bench.lock python bench/decode_candidates.py compile       # torch.compile'd decode step vs eager
    flock /tmp/bench.lock python bench/decode_candidates.py bf16-packed   # bf16 linears: F.linear vs oneDNN-packed
    flock /tmp/bench.lock python bench/decode_candidates.py overhead      # the step's fixed cost beside its weights
    flock /tmp/bench.lock python bench/decode_candidates.py split-row     # one-row linears: split over cores vs F.linear
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time

import torch
import torch.nn.functional as F

from cerebras_gpt import GPT, GPTConfig, decode_linear, generate_ids, generation, quantize
from cerebras_gpt.quantization import BF16Linear, native_bf16_cpu

PROMPT = [list(range(100, 132))]


def tokens_per_second(model: GPT, new_tokens: int) -> tuple[float, list[int]]:
    t0 = time.perf_counter()
    out = generate_ids(model, PROMPT, max_new_tokens=new_tokens, temperature=0, eos_id=None)
    return new_tokens / (time.perf_counter() - t0), out[0]


def alternate(setups: dict, model: GPT, repeats: int, new_tokens: int) -> dict:
    """Each setup is entered (a function that patches and returns its undo) around its own run."""
    rates: dict[str, list[float]] = {name: [] for name in setups}
    tokens = {}
    for _ in range(repeats):
        for name, setup in setups.items():
            undo = setup()
            rate, tokens[name] = tokens_per_second(model, new_tokens)
            undo()
            rates[name].append(rate)
    first = next(iter(tokens.values()))
    return {
        "tok/s": {k: statistics.median(v) for k, v in rates.items()},
        "all": rates,
        "same greedy tokens": {k: v == first for k, v in tokens.items()},
    }


def compiled_step(repeats: int, new_tokens: int) -> dict:
    """`torch.compile(model, dynamic=True)` driving `DecodeState.step` (the prompt still prefilled eagerly)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_name("Cerebras-GPT-111M")).eval()
    compiled = torch.compile(model, dynamic=True)
    eager_step = generation.DecodeState.step

    def compiled_setup():
        generation.DecodeState.step = lambda self, tokens, positions: compiled(tokens.unsqueeze(1), positions)[:, -1]
        return lambda: setattr(generation.DecodeState, "step", eager_step)

    t0 = time.perf_counter()
    undo = compiled_setup()
    tokens_per_second(model, 8)
    undo()
    first = time.perf_counter() - t0
    result = alternate({"eager": lambda: lambda: None, "compiled": compiled_setup}, model, repeats, new_tokens)
    return {**result, "compilation and first 8 tokens (s)": first}


def bf16_packed(repeats: int, new_tokens: int) -> dict:
    """bf16 weights through `F.linear` (`BF16Linear` before the packed layout, and still on CPUs without
    native bf16) vs oneDNN's packed layout (what `BF16Linear` does where the CPU has native bf16)."""
    torch.manual_seed(0)
    model = quantize(GPT(GPTConfig.from_name("Cerebras-GPT-111M")).eval(), "bf16")
    layers = [m for m in model.modules() if isinstance(m, BF16Linear)]
    packed_forward = BF16Linear.forward

    def plain_forward(self, x):
        return F.linear(x.to(torch.bfloat16), self.weight, self.bias).to(x.dtype)

    def plain_setup():  # the layout changes outside the timed runs
        for layer in layers:
            layer._unpack()
        BF16Linear.forward = plain_forward
        return lambda: setattr(BF16Linear, "forward", packed_forward)

    def packed_setup():
        for layer in layers:
            layer._pack()
        return lambda: None

    if not native_bf16_cpu():
        return {"skipped": "this CPU has no native bf16 (AVX512-BF16/AMX): BF16Linear uses F.linear here"}
    return alternate({"F.linear": plain_setup, "oneDNN packed": packed_setup}, model, repeats, new_tokens)


def step_overhead(repeats: int, new_tokens: int) -> dict:
    """Median time of one batch-1 decode step (`DecodeState.step`, 32-token prompt) of the 111M shape and of
    a model of the same depth and the same ops with width 64 and a 512-token vocabulary, whose weights are
    too small to cost anything: what is left is the step's fixed cost (Python, dispatch, small kernels)."""
    base = GPTConfig.from_name("Cerebras-GPT-111M")
    shapes = {"111M": base, "same depth, width 64": dataclasses.replace(base, n_embd=64, n_head=2, vocab_size=512)}
    result: dict[str, dict[str, float]] = {}
    for precision in ("fp32", "bf16", "int8"):
        for name, config in shapes.items():
            torch.manual_seed(0)
            model = GPT(config).eval()
            if precision != "fp32":
                model = quantize(model, precision)
            state = generation.DecodeState(model, 1, 32 + new_tokens + 1)
            times = []
            with torch.inference_mode(), decode_linear.decode_linears(model, max_rows=1):
                for _ in range(repeats):
                    state.prefill([PROMPT[0]])
                    token = torch.tensor([5])
                    for i in range(new_tokens):
                        t0 = time.perf_counter()
                        state.step(token, torch.tensor([32 + i]))
                        times.append(time.perf_counter() - t0)
            state.close()
            result.setdefault(precision, {})[f"{name} ms/step"] = round(statistics.median(times) * 1e3, 3)
        whole, fixed = result[precision].values()
        result[precision]["fixed share"] = round(fixed / whole, 3)
    return result


def split_row(repeats: int, new_tokens: int) -> dict:
    """fp32 batch 1: `DecodeLinear`'s one row split into a block per core (`split_row_linear`) vs `F.linear`,
    each forced (`decode_linears` otherwise picks one by `split_row_pays`, whose choice is reported)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_name("Cerebras-GPT-111M")).eval()
    measured = decode_linear.split_row_pays

    def forced(split: bool):
        def setup():
            decode_linear.split_row_pays = lambda weight, threads: split
            return lambda: setattr(decode_linear, "split_row_pays", measured)

        return setup

    result = alternate({"split rows": forced(True), "F.linear": forced(False)}, model, repeats, new_tokens)
    head = model.lm_head.weight.detach()
    return {**result, "split_row_pays (the 111M LM head)": measured(head, torch.get_num_threads())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["compile", "bf16-packed", "overhead", "split-row"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    run = {
        "compile": compiled_step,
        "bf16-packed": bf16_packed,
        "overhead": step_overhead,
        "split-row": split_row,
    }[args.what]
    print(json.dumps({"what": args.what, "threads": torch.get_num_threads(), **run(args.repeats, args.new_tokens)}))


if __name__ == "__main__":
    main()
