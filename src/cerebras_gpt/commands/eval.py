"""`cerebras-gpt eval`: loss, perplexity and bits per byte on text or prepared shards; lm-eval harness tasks."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import sys
from pathlib import Path

from cerebras_gpt.commands import run_command

log = logging.getLogger(__name__)


@dataclasses.dataclass
class EvalArgs:
    """Evaluate a model: perplexity on --data, and/or lm-evaluation-harness --tasks.

    --data takes text files (.txt: one document each; .jsonl: one document per line) and prepared data
    directories (`cerebras-gpt prepare`). --tasks takes harness task names or the names of task YAMLs in
    --include-path (which can point at local JSON files, for runs with no network).
    """

    model: str | None = None
    """Model directory, training checkpoint directory, or hub id (e.g. cerebras/Cerebras-GPT-111M)."""
    data: list[str] = dataclasses.field(default_factory=list)
    """Text files and/or prepared data directories to compute loss, perplexity and bits per byte on."""
    tasks: list[str] = dataclasses.field(default_factory=list)
    """lm-eval task names (e.g. hellaswag piqa lambada_openai), or task YAML names under --include-path."""
    include_path: list[str] = dataclasses.field(default_factory=list)
    """Directories of extra lm-eval task YAMLs."""
    num_fewshot: int | None = None
    """Few-shot examples per task (the paper reports 0- and 5-shot); default the task's own."""
    limit: float | None = None
    """Evaluate only this many documents per task (a fraction if < 1): for quick checks."""
    context: int | None = None
    """Perplexity: tokens per window; default the model's block size."""
    stride: int | None = None
    """Perplexity: sliding-window advance for text longer than the context; default the context (disjoint
    windows). A smaller stride gives each token more context at context/stride times the cost."""
    split: str = "val"
    """Perplexity: the split of prepared data directories."""
    text_key: str = "text"
    """Perplexity: the text field of .jsonl files."""
    max_batches: int | None = None
    """Perplexity: stop each input (prepared directory or text file) after this many batches."""
    batch_size: int = 8
    """Windows (perplexity) or requests (lm-eval) per forward pass."""
    device: str = "auto"
    """cpu, cuda, cuda:N, or auto (cuda when available)."""
    dtype: str = "auto"
    """float32, bfloat16, float16, or auto (bfloat16 on CUDA, float32 on CPU)."""
    quantize: str = "none"
    """Weight precision for inference: none (as loaded), bf16 or int8 (8-bit weights, per-channel scales;
    fastest on CPU). int4 is refused (no kernel that pays). A directory saved quantized loads as it was saved."""
    output: str | None = None
    """Write the results as JSON to this file (they are always printed to standard output)."""
    log_samples: bool = False
    """lm-eval: keep every request and response in the output JSON."""
    seed: int = 1234
    """lm-eval: seed for few-shot sampling and generation."""
    no_progress: bool = False
    """Hide progress bars."""
    install_lm_eval_hook: bool = False
    """Write a one-line .pth file into this environment's site-packages so that lm-eval's own command finds
    the model type (`lm_eval --model cerebras_gpt --model_args pretrained=DIR ...`), then exit."""


def run(args: EvalArgs) -> int:
    if args.install_lm_eval_hook:
        from cerebras_gpt.evaluate.lm_eval_adapter import install_lm_eval_hook

        log.info("wrote %s: `lm_eval --model cerebras_gpt` now works in this environment", install_lm_eval_hook())
        return 0
    if args.model is None:
        raise ValueError("--model is required: a model directory, training checkpoint or hub id")
    if not args.data and not args.tasks:
        raise ValueError("nothing to evaluate: pass --data FILES_OR_DIRS and/or --tasks TASKS")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size {args.batch_size} must be >= 1")
    from cerebras_gpt.validation import finite_range_problem, int_range_problem

    problems = [
        args.limit is not None and finite_range_problem("--limit", args.limit, 0, lo_open=True),
        args.num_fewshot is not None and int_range_problem("--num-fewshot", args.num_fewshot, 0),
        args.max_batches is not None and int_range_problem("--max-batches", args.max_batches, 1),
    ]
    problems = [p for p in problems if p]
    if problems:
        raise ValueError("; ".join(problems))
    from cerebras_gpt.hf import load_model_and_tokenizer
    from cerebras_gpt.quantization import apply_quantize, check_precision, precision_of
    from cerebras_gpt.runtime import resolve_device_dtype

    check_precision(args.quantize)  # a bad value fails before the model loads
    device, dtype = resolve_device_dtype(args.device, args.dtype)
    model, tokenizer = load_model_and_tokenizer(args.model, device=device, dtype=dtype)
    model = apply_quantize(model, args.quantize)
    report: dict = {"model": args.model, "quantize": precision_of(model)}
    if args.data:
        from cerebras_gpt.evaluate.perplexity import evaluate_perplexity

        result = evaluate_perplexity(
            model,
            tokenizer,
            args.data,
            context=args.context,
            stride=args.stride,
            batch_size=args.batch_size,
            split=args.split,
            max_batches=args.max_batches,
            text_key=args.text_key,
            show_progress=not args.no_progress,
        )
        report["perplexity"] = result.to_dict()
        m = result.metrics
        log.info(
            "loss %.4f nats/token | perplexity %.3f | %.4f bits/byte | %d tokens, %d bytes",
            m["loss"],
            m["perplexity"],
            m["bits_per_byte"],
            m["tokens"],
            m["bytes"],
        )
    if args.tasks:
        from cerebras_gpt.evaluate.lm_eval_adapter import CerebrasGPTLM, run_tasks

        lm = CerebrasGPTLM(model=model, tokenizer=tokenizer, batch_size=args.batch_size)
        results = run_tasks(
            lm, args.tasks, args.include_path, args.num_fewshot, args.limit, args.log_samples, args.seed
        )
        from lm_eval.utils import make_table

        log.info("%s", make_table(results))
        keep = ("results", "groups", "configs", "versions", "n-shot", "higher_is_better", "n-samples")
        report["lm_eval"] = {k: results[k] for k in keep if k in results}
        if args.log_samples:
            report["lm_eval"]["samples"] = results.get("samples")
    text = json.dumps(report, indent=2, default=_jsonable)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text + "\n")
    sys.stdout.write(text + "\n")
    return 0


def _jsonable(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


def main(argv: list[str]) -> int:
    return run_command(EvalArgs, argv, "cerebras-gpt eval", run)
