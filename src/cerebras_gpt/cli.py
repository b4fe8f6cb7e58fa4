"""The `cerebras-gpt` command: a table from subcommand to the module that runs it.

Each subcommand lives in `cerebras_gpt/commands/<name>.py` as ``main(argv) -> int`` and is imported
only when called, so `cerebras-gpt info` does not pay for the server's or trainer's imports.
"""

from __future__ import annotations

import importlib
import sys

# name -> (module under cerebras_gpt.commands, one-line summary)
COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("info", "Table of the presets: shapes, parameters, FLOPs, compute-optimal tokens, paper LR/batch"),
    "generate": ("generate", "Generate text from a model directory or hub id"),
    "prepare": ("prepare", "Tokenize and pack corpora into token shards (or ModelZoo HDF5)"),
    "train": ("train", "Pretrain with the Cerebras-GPT recipe (μP, sparsity, torchrun DDP/FSDP2, resume)"),
    "finetune": ("finetune", "Fine-tune (full or LoRA) on prompt/completion, chat or text data"),
    "eval": ("eval", "Loss, perplexity and bits per byte on text or shards; lm-eval harness tasks"),
    "sweep": ("sweep", "Grid or random search over run settings, each trial a train run"),
    "scaling": ("scaling", "Compute-optimal planning, model-size ladders and scaling-law fits"),
    "mup-check": ("mup_check", "μP coordinate check: activation size against width, μP vs SP"),
    "serve": ("serve", "OpenAI-compatible HTTP server with continuous batching and a playground page"),
    "export": ("export", "Export a model or checkpoint: Hugging Face (vLLM/TGI), GGUF (llama.cpp), sparse storage"),
    "demo": ("demo", "The main job end to end: prepare, train, evaluate, generate"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items())
    return (
        f"usage: cerebras-gpt <command> [options]   (cerebras-gpt <command> --help for its options)\n\n"
        f"commands:\n{rows}\n\n"
        "Errors are one line (exit code 2); --debug or CEREBRAS_GPT_DEBUG=1 shows their traceback.\n"
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from cerebras_gpt import __version__

        print(__version__)
        return 0
    if argv[0] == "--debug":  # `cerebras-gpt --debug CMD ...`: tracebacks for CMD's expected failures too
        argv = argv[1:] + ["--debug"]
    name = argv[0]
    if name not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(name, list(COMMANDS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        print(f"cerebras-gpt: unknown command {name!r}{hint}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"cerebras_gpt.commands.{COMMANDS[name][0]}")
    return module.main(argv[1:]) or 0


if __name__ == "__main__":
    raise SystemExit(main())
