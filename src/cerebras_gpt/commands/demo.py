"""`cerebras-gpt demo`: the main job end to end: prepare the built-in corpus, train, evaluate, save, generate."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Annotated

import tyro

from cerebras_gpt.commands import run_command

log = logging.getLogger("cerebras_gpt.demo")


@dataclasses.dataclass
class DemoArgs:
    """Prepare the built-in corpus (Python's own documentation), train a small preset with the paper's recipe for a
    few minutes, report validation perplexity, save a model directory and generate a sample from it."""

    out_dir: Annotated[str, tyro.conf.arg(name="out")] = "runs/demo"
    """Where the prepared data (data/), the run (checkpoints/, metrics.jsonl, loss.png) and model/ go."""
    model: str = "debug-small"
    """Preset to train (see `cerebras-gpt info`)."""
    minutes: float = 4.0
    """Wall-time budget for training."""
    steps: int = 400
    """Planned optimizer steps (the LR schedule spans them; training stops early at the time budget)."""
    batch_size: int = 8
    """Global batch in sequences."""
    seq_len: int = 128
    """Tokens per sequence."""
    prompt: str = "The Python standard library"
    """Prompt for the generated sample."""
    device: str = "auto"
    """cpu, cuda, or auto."""


def run(args: DemoArgs) -> int:
    import torch

    from cerebras_gpt.data.loader import iter_validation
    from cerebras_gpt.data.prepare import prepare
    from cerebras_gpt.generation import generate
    from cerebras_gpt.hf import load_model_and_tokenizer
    from cerebras_gpt.train.config import TrainConfig
    from cerebras_gpt.train.loop import evaluate, train

    out = Path(args.out_dir)
    t0 = time.perf_counter()
    log.info("1/4 preparing the built-in corpus (builtin:pydoc) into %s", out / "data")
    prepare(["builtin:pydoc"], out / "data", val_fraction=0.02, seq_len=args.seq_len)
    log.info("2/4 training %s for up to %.1f minutes (Ctrl-C is safe: rerun to resume)", args.model, args.minutes)
    cfg = TrainConfig(
        model=args.model,
        data_dir=str(out / "data"),
        steps=args.steps,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        out_dir=str(out),
        time_limit_minutes=args.minutes,
        eval_interval=100,
        eval_batches=10,
        checkpoint_interval=100,
        device=args.device,
        lr=1e-3,
    )
    result = train(cfg)
    log.info(
        "    %d steps, %s tokens, final training loss %.3f",
        result["steps"],
        f"{result['tokens']:,}",
        result["final_loss"],
    )
    log.info("3/4 validation perplexity of %s", result["model_dir"])
    model, tokenizer = load_model_and_tokenizer(
        result["model_dir"],
        device=args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"),
    )
    device = next(model.parameters()).device
    val_loss, count = evaluate(model, iter_validation(out / "data", args.seq_len, args.batch_size), device, "float32")
    print(f"validation loss {val_loss:.3f} nats/token, perplexity {math.exp(val_loss):.1f} over {count:,} tokens")
    log.info("4/4 sample from the saved model directory")
    text = generate(model, tokenizer, args.prompt, max_new_tokens=60, temperature=0.8, top_k=40, seed=0)
    print(f"\n{args.prompt}{text}\n")
    print(
        f"model directory: {result['model_dir']} (loads with transformers.AutoModelForCausalLM); loss curve: "
        f"{out / 'loss.png'}; total {(time.perf_counter() - t0) / 60:.1f} min"
    )
    return 0


def main(argv: list[str]) -> int:
    return run_command(DemoArgs, argv, "cerebras-gpt demo", run)
