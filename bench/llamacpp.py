"""CPU decoding side by side with llama.cpp, on our own GGUF export of the same weights.

The peer a CPU user compares us with is llama.cpp. This loads the same weights three ways on each
side and decodes with each, alternating within one run so both see the same machine load:

    ours fp32  vs  llama.cpp f32
    ours bf16  vs  llama.cpp f16
    ours int8  vs  llama.cpp q8_0

Batch 1, greedy, a random ``--prompt-tokens`` prompt and ``--new-tokens`` new tokens (EOS ignored),
``--threads`` threads on both sides, median of ``--repeats`` alternating repeats (the order of the
sides turning by one each repeat); time includes the prompt on both sides. Ours is `generate_ids` on
`cerebras_gpt.quantize(model, precision)`; llama.cpp is `llama_cpp.Llama.generate` (top_k=1) on
`cerebras-gpt export --format gguf --outtype ...`.

It also measures what bounds decoding on this machine: the memory read bandwidth with all threads
(the best of a reduction and a copy over 1 GiB), next to each side's effective bandwidth (weight
bytes read per token x tokens/s).

llama-cpp-python is not a dependency of the toolkit: it builds llama.cpp from source (about ten
minutes on two cores), so install it only for this benchmark:

    CMAKE_BUILD_PARALLEL_LEVEL=2 .venv/bin/pip install llama-cpp-python==0.3.36
    python bench/llamacpp.py [--preset Cerebras-GPT-111M | --model DIR] [--repeats 5] [--no-record]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "bench"))

# (ours, llama.cpp's GGUF type): the matched precisions.
PAIRS = (("fp32", "f32"), ("bf16", "f16"), ("int8", "q8_0"))
GOALS = {"fp32": 1.0, "bf16": 1.0, "int8": 1.5}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="Cerebras-GPT-111M", help="random weights of this shape")
    parser.add_argument("--model", help="a model directory instead of random weights")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--pairs",
        nargs="+",
        default=[p for p, _ in PAIRS],
        choices=[p for p, _ in PAIRS],
        help="which of our precisions to compare (each with its llama.cpp type)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also decode through our compiled step (generate_ids(..., compile=True)); ratios are then the compiled step's",
    )
    parser.add_argument("--no-record", action="store_true", help="do not write BENCHMARKS.md")
    args = parser.parse_args()

    try:
        import llama_cpp
    except ImportError:
        raise SystemExit(
            "llama-cpp-python is not installed; it builds from source (about ten minutes on two "
            "cores): CMAKE_BUILD_PARALLEL_LEVEL=2 .venv/bin/pip install llama-cpp-python==0.3.36"
        ) from None
    from generate import cpu_name, read_bandwidth_gbs

    from cerebras_gpt import GPT, GPTConfig
    from cerebras_gpt.export import export_model
    from cerebras_gpt.generation import generate_ids
    from cerebras_gpt.quantization import quantize

    torch.set_num_threads(args.threads)
    pairs = [(p, g) for p, g in PAIRS if p in args.pairs]
    n, work = args.new_tokens, tempfile.TemporaryDirectory()
    model_dir = args.model
    if model_dir is None:
        torch.manual_seed(0)
        model_dir = f"{work.name}/model"
        GPT(GPTConfig.from_name(args.preset)).save_pretrained(model_dir)
    base = GPT.from_pretrained(model_dir).eval()
    what = f"{args.preset} shape, random weights" if args.model is None else f"the model in {args.model}"
    ours = {p: quantize(copy.deepcopy(base), p) for p, _ in pairs}
    # A model of its own for the compiled step: compiling keeps bf16 weights out of oneDNN's packed layout.
    compiled = {p: quantize(copy.deepcopy(base), p) for p, _ in pairs} if args.compile else {}
    theirs = {}
    for _, g in pairs:
        path = f"{work.name}/model-{g}.gguf"
        export_model(model_dir, "gguf", path, outtype=g)
        theirs[g] = llama_cpp.Llama(
            path,
            n_ctx=args.prompt_tokens + n + 8,
            n_threads=args.threads,
            n_threads_batch=args.threads,
            n_batch=512,
            verbose=False,
        )
    prompt = torch.randint(
        0, base.config.vocab_size, (args.prompt_tokens,), generator=torch.Generator().manual_seed(1)
    ).tolist()

    def run_ours(p: str, count: int) -> list[int]:
        return generate_ids(ours[p], [prompt], max_new_tokens=count, temperature=0, stop_at_eos=False)[0]

    def run_compiled(p: str, count: int) -> list[int]:
        return generate_ids(
            compiled[p], [prompt], max_new_tokens=count, temperature=0, stop_at_eos=False, compile=True
        )[0]

    def run_theirs(g: str, count: int) -> list[int]:
        out = []
        for token in theirs[g].generate(prompt, top_k=1, temp=0.0, reset=True):
            out.append(token)
            if len(out) == count:
                return out
        return out

    # Same tokens first: the comparison is fair only if both decode the same sequence. Random weights
    # give near-ties, so this reports agreement rather than requiring it.
    def same_prefix(a: list[int], b: list[int]) -> int:
        return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))

    agree, compile_s = {}, {}
    for p, g in pairs:
        a, b = run_ours(p, n), run_theirs(g, n)
        agree[p] = same_prefix(a, b)
        print(f"{p} vs {g}: the first {agree[p]} of {n} greedy tokens agree", flush=True)
        if args.compile:
            start = time.perf_counter()
            c = run_compiled(p, n)  # compiles (or loads Inductor's cache) on this first call
            compile_s[p] = time.perf_counter() - start
            agree[p + " compiled"] = same_prefix(c, b)
            print(
                f"{p} compiled ({compile_s[p]:.0f} s first call) vs {g}: the first {agree[p + ' compiled']} of {n} "
                f"agree; vs our eager {p}: {same_prefix(c, a)}",
                flush=True,
            )

    # Per pair, each side (name, run, model key) in the order they alternate.
    sides = {p: [(p, run_ours, p), (g, run_theirs, g)] for p, g in pairs}
    for p in compiled:
        sides[p].append((p + " compiled", run_compiled, p))
    times: dict[str, list[float]] = {name: [] for pair in sides.values() for name, _, _ in pair}
    for repeat in range(args.repeats):
        for pair in sides.values():
            # The order turns by one each repeat: a side that runs right after another decodes a little
            # slower (ours compiled int8 ~8% right after llama.cpp than after ours; BENCHMARKS.md, "Compiled
            # decode step"), so no side always follows the same one.
            turn = repeat % len(pair)
            for name, fn, key in pair[turn:] + pair[:turn]:
                start = time.perf_counter()
                count = len(fn(key, n))
                times[name].append(count / (time.perf_counter() - start))
    med = {k: statistics.median(v) for k, v in times.items()}
    bandwidth = read_bandwidth_gbs()

    def weight_gb(p: str) -> float:
        """Bytes one decode step reads: every block matrix and the LM head at this precision."""
        mats = sum(m.weight.numel() for m in base.modules() if isinstance(m, torch.nn.Linear))
        return mats * {"fp32": 4, "f32": 4, "bf16": 2, "f16": 2, "int8": 1, "q8_0": 34 / 32}[p] / 1e9

    rows = []
    for p, g in pairs:
        for ours_name in [p] + ([p + " compiled"] if args.compile else []):
            ratio = med[ours_name] / med[g]
            verdict = "met" if ratio >= GOALS[p] else "not met"
            rows.append(
                f"| {ours_name} vs {g} | {med[ours_name]:.1f} | {med[g]:.1f} | **{ratio:.2f}x** ({verdict}, goal "
                f"{GOALS[p]}x) | {weight_gb(p) * med[ours_name]:.0f} / {weight_gb(g) * med[g]:.0f} | "
                f"{agree[ours_name]}/{n} | {', '.join(f'{x:.0f}' for x in times[ours_name])} / "
                f"{', '.join(f'{x:.0f}' for x in times[g])} |"
            )
            print(
                f"{ours_name} {med[ours_name]:.1f} tok/s vs llama.cpp {g} {med[g]:.1f} tok/s: {ratio:.2f}x", flush=True
            )
    compiled_note = ""
    if args.compile:
        firsts = ", ".join(f"{p} {s:.0f} s" for p, s in compile_s.items())
        compiled_note = (
            '\n"compiled" rows decode through `generate_ids(..., compile=True)` (`cerebras_gpt.compiled_decode`), on a model '
            f"copy of their own; its first call, which compiles or loads Inductor's on-disk cache, took {firsts} "
            "and is not in the timings.\n"
        )
    command = (
        "flock /tmp/bench.lock .venv/bin/python bench/llamacpp.py"
        + (f" --model {args.model}" if args.model else "")
        + f" --repeats {args.repeats} --new-tokens {n} --threads {args.threads}"
        + (" --compile" if args.compile else "")
    )
    section = f"""## CPU decoding vs llama.cpp (`bench/llamacpp.py`)

{what}; ours at each precision (`cerebras_gpt.quantize`) against llama.cpp (llama-cpp-python
{llama_cpp.__version__}, built from PyPI source) on our own GGUF export of the same weights at the matched type.
Batch 1, greedy, {args.prompt_tokens}-token prompt, {n} new tokens, {args.threads} threads on both sides; median of
{args.repeats} alternating repeats (the order turning by one each repeat), prompt included.

| precision (ours vs llama.cpp) | ours tok/s | llama.cpp tok/s | ratio | effective GB/s (ours / llama.cpp) | greedy tokens agreeing | all repeats (ours / llama.cpp) |
|---|---|---|---|---|---|---|
{chr(10).join(rows)}
{compiled_note}
Memory read bandwidth of this machine, all {args.threads} threads (the best of a reduction and a copy over 1 GiB):
**{bandwidth:.1f} GB/s**. "Effective" is the weight bytes one decode step reads (block matrices and the LM
head at that precision) times tokens/s: what each side gets out of that bandwidth.

Command: `{command}` — machine: {cpu_name()}, torch {torch.__version__}; timings on this shared 2-core box are
noisy, read the ratios. Installing llama-cpp-python for it: `CMAKE_BUILD_PARALLEL_LEVEL=2 .venv/bin/pip install
llama-cpp-python==0.3.36` (a source build, about ten minutes; `make setup` and `make demo` never build it)."""
    print(section)
    if not args.no_record:
        from update_section import update_section

        update_section(ROOT / "BENCHMARKS.md", "llamacpp", section)
    work.cleanup()


if __name__ == "__main__":
    main()
