"""Quality of the inference precisions: perplexity and greedy agreement of a trained model, fp32 vs bf16 vs int8.

Loads a trained model directory, evaluates its perplexity on a text file at each precision
(`cerebras_gpt.quantize`, the same windows for all), and compares greedy continuations of a fixed prompt
set against fp32: how many generated tokens agree position by position, and how many prompts agree to
the end. Goals (issue #15): bf16 within 0.1% and int8 within 1% of the fp32 perplexity.

    python bench/quantize_quality.py --model runs/small/model [--data /work/shared/data/wikitext-2-valid.txt]
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

PROMPTS = [
    "The history of the",
    "In 1914, the",
    "He was born in",
    "The city is located",
    "First Citizen:",
    "KING RICHARD III:",
    "The song was released",
    "She said that",
    "It is a",
    "After the war, the",
    "The team won",
    "Music and",
    "ROMEO:",
    "The population of",
    "In the early",
    "According to the",
]
GOALS = {"bf16": 0.001, "int8": 0.01}


COMPILED_NOTE = """"compiled" rows: the same quantized model's greedy continuations through the compiled decode step
(`generate_ids(..., compile=True)`), against the eager fp32 ones; its int8 linears take bf16 rows and bf16
scales (Inductor's weight-only int8 kernel) where the eager int8 step quantizes its rows to 8 bits, and
a bf16 or int8 model's KV cache is bfloat16 there (float32 in the eager step).

"""


def continue_greedily(model, prompts: list[list[int]], new_tokens: int, compile: bool = False) -> list[list[int]]:
    """Greedy continuations, one prompt at a time: batch-1 decoding, no padding effects between prompts."""
    from cerebras_gpt.generation import generate_ids

    return [
        generate_ids(model, [ids], max_new_tokens=new_tokens, temperature=0, stop_at_eos=False, compile=compile)[0]
        for ids in prompts
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a trained model directory")
    parser.add_argument("--data", default="/work/shared/data/wikitext-2-valid.txt")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "int8"])
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--max-batches", type=int, default=None, help="cap the perplexity windows (speed)")
    parser.add_argument("--context", type=int, default=None, help="perplexity window (default the block size)")
    parser.add_argument(
        "--llamacpp",
        nargs="*",
        default=None,
        metavar="TYPE",
        help="also llama.cpp on our GGUF export at these types (default f16 q8_0): perplexity on "
        "the same windows and greedy continuations (needs llama-cpp-python)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also decode the continuations through the compiled step (generate_ids(..., compile=True))",
    )
    parser.add_argument("--trained", default="", help="how the model was trained, for the record")
    parser.add_argument("--no-record", action="store_true", help="do not write BENCHMARKS.md")
    args = parser.parse_args()

    import torch

    from cerebras_gpt.evaluate.perplexity import evaluate_perplexity
    from cerebras_gpt.hf import load_model_and_tokenizer
    from cerebras_gpt.quantization import check_precision, quantize

    torch.manual_seed(0)
    base, tokenizer = load_model_and_tokenizer(args.model)
    precisions = [check_precision(p) for p in args.precisions]
    prompts = [tokenizer.encode(p) for p in PROMPTS]
    ppl, continuations = {}, {}
    for p in precisions:
        model = quantize(copy.deepcopy(base), p)
        result = evaluate_perplexity(
            model, tokenizer, [args.data], context=args.context, max_batches=args.max_batches, show_progress=False
        )
        ppl[p] = result.metrics["perplexity"]
        continuations[p] = continue_greedily(model, prompts, args.new_tokens)
        print(f"{p}: perplexity {ppl[p]:.4f}", flush=True)
        if args.compile:  # the compiled step decodes only: its perplexity is the eager forward's above
            continuations[p + " compiled"] = continue_greedily(model, prompts, args.new_tokens, compile=True)
    names = [n for p in precisions for n in ([p, p + " compiled"] if args.compile else [p])]
    if args.llamacpp is not None:
        for outtype in args.llamacpp or ["f16", "q8_0"]:
            name = f"llama.cpp {outtype}"
            ppl[name], continuations[name] = llamacpp_quality(
                args, tokenizer, outtype, prompts, args.context or base.config.block_size
            )
            names.append(name)
            print(f"{name}: perplexity {ppl[name]:.4f}", flush=True)
    ref = precisions[0]
    rows = []
    for p in names:
        same = sum(a == b for x, y in zip(continuations[p], continuations[ref]) for a, b in zip(x, y))
        total = sum(len(x) for x in continuations[ref])
        whole = sum(x == y for x, y in zip(continuations[p], continuations[ref]))
        if p in ppl:
            rel = ppl[p] / ppl[ref] - 1
            goal = GOALS.get(p)
            verdict = "" if goal is None else f"{'met' if abs(rel) <= goal else 'not met'} (goal ±{goal:.1%})"
            scored = f"{ppl[p]:.4f} | {rel:+.3%} {verdict}"
        else:
            scored = "(decoding only) | —"
        rows.append(f"| {p} | {scored} | {same}/{total} | {whole}/{len(prompts)} |")
        print(rows[-1], flush=True)
    section = f"""## Quantized inference: quality (`bench/quantize_quality.py`)

A model trained here ({args.trained or args.model}), its perplexity on `{Path(args.data).name}` at each
precision (same windows{f", the first {args.max_batches} batches" if args.max_batches else ""}), and greedy continuations ({args.new_tokens} new tokens) of {len(prompts)} fixed prompts
compared with {ref}, position by position.

| precision | perplexity | vs {ref} | tokens agreeing with {ref} | prompts identical to the end |
|---|---|---|---|---|
{chr(10).join(rows)}

{COMPILED_NOTE if args.compile else ""}llama.cpp rows: llama-cpp-python on our GGUF export of the same model at that type, the same windows scored
from its logits, the same prompts decoded greedily (top_k=1).

Command: `.venv/bin/python bench/quantize_quality.py --model {args.model} --data {args.data}{f" --context {args.context}" if args.context else ""}{f" --max-batches {args.max_batches}" if args.max_batches else ""}{" --llamacpp " + " ".join(args.llamacpp) if args.llamacpp else (" --llamacpp" if args.llamacpp is not None else "")}{" --compile" if args.compile else ""}` — torch {torch.__version__}."""
    print(section)
    if not args.no_record:
        from update_section import update_section

        update_section(ROOT / "BENCHMARKS.md", "quantize-quality", section)


def llamacpp_quality(
    args, tokenizer, outtype: str, prompts: list[list[int]], context: int
) -> tuple[float, list[list[int]]]:
    """llama.cpp's perplexity on the windows ours scores, and its greedy continuations of ``prompts``."""
    import itertools
    import math
    import tempfile

    import llama_cpp
    import numpy as np

    from cerebras_gpt.evaluate.perplexity import read_documents, sliding_windows
    from cerebras_gpt.export import export_model

    windows = (
        w
        for text in read_documents(args.data)
        for w in sliding_windows([tokenizer.eos_id, *tokenizer.encode(text)], context, context)
    )
    if args.max_batches is not None:  # ours scores batches of 8 windows
        windows = itertools.islice(windows, 8 * args.max_batches)
    with tempfile.TemporaryDirectory() as d:
        path = f"{d}/model-{outtype}.gguf"
        export_model(args.model, "gguf", path, outtype=outtype)
        llm = llama_cpp.Llama(path, n_ctx=context + 1, n_batch=context + 1, logits_all=True, verbose=False)
        nll, count = 0.0, 0
        for w in windows:
            llm.reset()
            llm.eval(w.tokens[:-1])
            logits = np.asarray(llm.scores[: len(w.tokens) - 1], dtype=np.float64)[-w.score :]
            targets = np.asarray(w.tokens[-w.score :])
            top = logits.max(axis=1)
            logz = top + np.log(np.exp(logits - top[:, None]).sum(axis=1))
            nll += float((logz - logits[np.arange(len(targets)), targets]).sum())
            count += len(targets)
        outputs = []
        for ids in prompts:
            out = []
            for token in llm.generate(ids, top_k=1, temp=0.0, reset=True):
                out.append(token)
                if len(out) == args.new_tokens:
                    break
            outputs.append(out)
    return math.exp(nll / count), outputs


if __name__ == "__main__":
    main()
