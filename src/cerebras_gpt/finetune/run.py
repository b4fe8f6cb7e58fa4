"""`finetune`: full or LoRA fine-tuning through the training loop, early stopping, export, task evaluation.

The run is one `cerebras_gpt.train.trainer.Trainer` with a model loaded from a directory or hub id
(LoRA-wrapped or not), a `FinetuneLoader` over the records and their validation split, so schedule,
accumulation, checkpoints, exact resume, DDP/FSDP2 and sparsity are the training loop's. Early stopping
trains one evaluation interval at a time (``Trainer.fit(until=...)``, continuing in memory, a checkpoint
at the end of each) and stops after ``early_stopping_patience`` evaluations without a lower validation
loss, exporting the best model seen.

Output in ``out_dir``: ``model/`` (a plain HF GPT-2 directory; LoRA merged into the weights),
``adapter/`` with ``--save-adapter`` (PEFT format), ``checkpoints/``, ``metrics.jsonl`` and
``finetune_results.json`` (validation loss, task metrics before and after).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cerebras_gpt import atomic
from cerebras_gpt.finetune.lora import LoRAConfig
from cerebras_gpt.train import rundir
from cerebras_gpt.train.config import TrainConfig
from cerebras_gpt.train.validate import FINETUNE_RANGES

log = logging.getLogger("cerebras_gpt.finetune")

FULL_LR, LORA_LR = 5e-5, 5e-4
STATE_FILE = "early_stopping.json"
RESULTS_FILE = "finetune_results.json"


@dataclass
class FinetuneArgs(TrainConfig):
    """Fine-tune a model (full or LoRA) on prompt/completion, chat or plain-text records.

    Every option of `cerebras-gpt train` applies (schedule, accumulation, checkpoints, resume, devices,
    torchrun DDP/--fsdp, sparsity); --model is the model to start from and --data the records.
    """

    model: str = ""
    """Model directory, training checkpoint or Hugging Face hub id to fine-tune (required)."""
    data: str = ""
    """Training records: .jsonl of {prompt, completion}, {messages: [...]} or {text}; or a .txt file (required)."""
    val_data: str | None = None
    """Validation records (default: a val_fraction split of --data)."""
    val_fraction: float = 0.1
    """Share of --data held out for validation when --val-data is not given (0: no validation)."""
    eval_data: str | None = None
    """Held-out {prompt, completion} records for --task metrics (default: the validation records)."""
    packing: Literal["pad", "pack"] = "pad"
    """pad: one record per row (padded); pack: whole records concatenated into rows of seq_len, each
    record attending only to itself (document masking, positions from 0)."""
    epochs: float = 3.0
    """Passes over the training records when --steps is not given."""
    early_stopping_patience: int = 0
    """Stop after this many evaluations without a lower validation loss and keep the best model (0: off)."""
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    """LoRA adapters (--lora.rank 0: full fine-tuning)."""
    save_adapter: bool = False
    """Also write the LoRA adapters alone, in PEFT format, to out_dir/adapter."""
    adapter: str | None = None
    """With --eval-only: put this PEFT-format adapter directory onto --model before evaluating."""
    task: Literal["none", "classification", "generation"] = "none"
    """Score held-out records before and after: classification (label log-likelihood accuracy) or
    generation (greedy exact match and ROUGE-L)."""
    labels: list[str] = field(default_factory=list)
    """Classification label completions, e.g. ' positive' ' negative' (default: the distinct completions)."""
    max_new_tokens: int | None = None
    """Generation tasks: most tokens per answer (default: the longest reference + 4)."""
    stop: list[str] = field(default_factory=list)
    """Generation tasks: strings that end an answer (EOS always does)."""
    eval_only: bool = False
    """Only score --task on the held-out records (--eval-data, else --data); no training."""
    # Fine-tuning defaults that differ from pretraining's.
    lr: float | None = None
    """Peak learning rate (default 5e-5 full, 5e-4 LoRA)."""
    batch_size: int | None = 16
    """Global batch in rows."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay on matrices."""
    warmup_steps: int | None = None
    """Linear warmup steps (default: 5% of the run)."""
    decay: Literal["linear", "cosine", "constant"] | None = "linear"
    """Decay after warmup to min_lr_ratio x peak."""
    out_dir: str | None = None
    """Run directory: model/, adapter/, checkpoints/, metrics.jsonl, finetune_results.json (default: a new
    runs/<model>-<YYYYmmdd-HHMMSS> per run; pass it again to resume)."""
    tensorboard: bool = False
    """Write TensorBoard event files under out_dir/tensorboard."""

    def check(self) -> None:
        problems = []
        if not self.model:
            problems.append("--model is required (a model directory, training checkpoint or hub id)")
        if not self.data and not (self.eval_only and self.eval_data):
            problems.append("--data is required (a .jsonl or .txt file of records)")
        if self.data_dir is not None or self.init_from is not None or self.model_overrides:
            problems.append(
                "--data-dir/--init-from/--model-overrides are pretraining options; fine-tuning reads "
                "--data and the model as saved in --model"
            )
        if self.mup:
            problems.append("--mup is a pretraining option: a μP model directory is fine-tuned as saved")
        if self.lora.enabled and self.fsdp:
            problems.append("LoRA with --fsdp is not supported (LoRA's optimizer state is small): use DDP")
        if self.lora.enabled and self.sparsity.enabled:
            problems.append("LoRA with sparsity is not supported: the adapters' update is dense")
        from cerebras_gpt.train.validate import problems_in, train_problems

        problems += train_problems(self) + problems_in({k: getattr(self, k) for k in FINETUNE_RANGES}, FINETUNE_RANGES)
        if self.early_stopping_patience and self.fsdp:
            problems.append(
                "early stopping with --fsdp is not supported yet; set --eval-interval and pick a checkpoint"
            )
        if self.adapter and not self.eval_only:
            problems.append("--adapter is for --eval-only; to train LoRA set --lora.rank")
        if problems:
            raise ValueError("; ".join(problems))

    def identity(self) -> dict[str, Any]:
        """What binds a fine-tuning run directory besides model and schedule: the records, task and adapters."""
        files = {
            name: rundir.file_identity(path) if path and Path(path).is_file() else path
            for name, path in (("data", self.data), ("val_data", self.val_data), ("eval_data", self.eval_data))
        }
        return {
            "finetune": dict(
                files,
                val_fraction=self.val_fraction,
                packing=self.packing,
                task=self.task,
                lora=dataclasses.asdict(self.lora) if self.lora.enabled else None,
            )
        }

    def train_config(self, **overrides: Any) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(TrainConfig)}
        values = {f: getattr(self, f) for f in names}
        return TrainConfig(**dict(values, **overrides))


def _evaluate_task(args: FinetuneArgs, model, tokenizer, records: list[dict]) -> dict[str, Any] | None:
    from cerebras_gpt.finetune.tasks import task_metrics

    if args.task == "none" or not records:
        return None
    return task_metrics(args.task, model, tokenizer, records, args.labels or None, args.max_new_tokens, args.stop)


def evaluate_only(args: FinetuneArgs) -> dict[str, Any]:
    """Task metrics of ``args.model`` (plus ``args.adapter``) on the held-out records."""
    from cerebras_gpt.finetune.data import read_records
    from cerebras_gpt.finetune.lora import load_adapter
    from cerebras_gpt.hf import load_model_and_tokenizer
    from cerebras_gpt.train.distributed import resolve_device

    if args.task == "none":
        raise ValueError("--eval-only needs --task classification or generation")
    model, tokenizer = load_model_and_tokenizer(args.model, device=resolve_device(args.device))
    if args.adapter:
        model = load_adapter(model, args.adapter)
    records = read_records(args.eval_data or args.data)
    return {
        "model": args.model,
        "adapter": args.adapter,
        "task": args.task,
        "metrics": _evaluate_task(args, model, tokenizer, records),
    }


def finetune(args: FinetuneArgs) -> dict[str, Any]:
    """Fine-tune as ``args`` say; returns validation loss, task metrics before/after and output paths."""
    import torch

    from cerebras_gpt.finetune.data import (
        FinetuneLoader,
        build_examples,
        pack_examples,
        read_records,
        split_records,
        val_batches,
    )
    from cerebras_gpt.finetune.lora import apply_lora
    from cerebras_gpt.hf import load_model_and_tokenizer
    from cerebras_gpt.train import distributed
    from cerebras_gpt.train.trainer import Trainer

    args.check()
    if args.eval_only:
        return evaluate_only(args)
    device = distributed.resolve_device(args.device)
    info = distributed.setup(device)
    if not args.out_dir:
        args = dataclasses.replace(args, out_dir=distributed.broadcast_from_main(rundir.default_out_dir(args.model)))
    identity = args.identity()
    records = read_records(args.data)
    if args.val_data:
        train_records, val_records = records, read_records(args.val_data)
    else:
        train_records, val_records = split_records(records, args.val_fraction, args.seed)
    eval_records = read_records(args.eval_data) if args.eval_data else val_records
    model, tokenizer = load_model_and_tokenizer(args.model, device=device)  # after the records: bad data fails fast
    block = model.config.block_size

    seq_len = args.seq_len or block
    if seq_len > block:
        raise ValueError(f"seq_len={seq_len} exceeds the model's context ({block}); lower --seq-len")
    train_examples = build_examples(train_records, tokenizer, seq_len)
    val_examples = build_examples(val_records, tokenizer, seq_len) if val_records else []
    if args.seq_len is None and args.packing == "pad":  # rows as long as the longest record, no longer
        seq_len = max(len(e.ids) for e in train_examples + val_examples) - 1
    rows = pack_examples(train_examples, seq_len) if args.packing == "pack" else train_examples
    val_rows = pack_examples(val_examples, seq_len) if args.packing == "pack" else val_examples

    global_batch = args.batch_size or 16
    per_rank = global_batch // info.world_size
    micro = args.micro_batch_size or per_rank
    steps = args.steps or max(1, math.ceil(args.epochs * len(rows) / global_batch))
    steps_per_epoch = max(1, math.ceil(len(rows) / global_batch))
    eval_interval = args.eval_interval or (steps_per_epoch if args.early_stopping_patience else 0)
    lr = args.lr if args.lr is not None else (LORA_LR if args.lora.enabled else FULL_LR)
    warmup = args.warmup_steps if args.warmup_steps is not None else round(0.05 * steps)
    cfg = args.train_config(
        model=args.model,
        seq_len=seq_len,
        steps=steps,
        tokens=None,
        lr=lr,
        batch_size=global_batch,
        warmup_steps=warmup,
        eval_interval=eval_interval,
    )
    if info.is_main:
        log.info(
            "fine-tuning %s%s: %d train rows (%d records), %d val rows, seq_len %d, %d steps of %d rows, lr %g",
            args.model,
            f" with LoRA r={args.lora.rank}" if args.lora.enabled else " (full)",
            len(rows),
            len(train_records),
            len(val_rows),
            seq_len,
            steps,
            global_batch,
            lr,
        )

    before = _evaluate_task(args, model, tokenizer, eval_records) if info.is_main else None
    if before is not None:
        log.info("before: %s", json.dumps({k: v for k, v in before.items() if k != "examples"}))
    if args.lora.enabled:
        torch.manual_seed(args.seed)  # the adapters' random A: the same for the same --seed
        model = apply_lora(model, args.lora)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        if info.is_main:
            log.info(
                "LoRA: %s trainable parameters (%.2f%% of %s)",
                f"{trainable:,}",
                100 * trainable / model.num_params(),
                f"{model.num_params() - trainable:,}",
            )

    packed = args.packing == "pack"  # each record attends only to itself, positions from 0 (train and val alike)
    loader = FinetuneLoader(
        rows, micro, tokenizer.eos_id, seed=args.seed, rank=info.rank, world_size=info.world_size, packed=packed
    )
    val = (
        val_batches(val_rows, micro, tokenizer.eos_id, info.rank, info.world_size, packed=packed) if val_rows else None
    )
    out_dir = Path(args.out_dir)
    from cerebras_gpt.train import checkpoint

    if args.resume == "never" and not args.overwrite and checkpoint.latest_checkpoint(out_dir) is not None:
        # The loop keeps the last K checkpoints by step: stale higher steps would evict this run's own.
        raise ValueError(
            f"{out_dir} holds checkpoints of an earlier run; pass --resume auto to continue it, "
            "a new --out, or --overwrite to replace it"
        )
    best_dir = out_dir / "best"
    state_path = out_dir / STATE_FILE

    if args.early_stopping_patience and val is None and info.is_main:
        log.warning("no validation records: early stopping is off")
    early_stopping = bool(args.early_stopping_patience) and val is not None
    state = {"best_val": None, "best_step": None, "bad_evals": 0}
    if early_stopping and state_path.exists() and cfg.resume == "auto":
        state = json.loads(state_path.read_text())
        if state["bad_evals"] >= args.early_stopping_patience:  # stopped early before
            rundir.bind(cfg, rundir.run_identity(cfg, identity), True, info.is_main)
            finished = _recorded_summary(out_dir)
            if finished is not None:
                return finished
    # One Trainer for the whole run: the model is wrapped (DDP, activation checkpointing, compile) and the
    # sparsifier built once, however many evaluation intervals early stopping trains in turn.
    trainer = Trainer(
        cfg, model=model, train_loader=loader, val_batches=val, run_identity=identity, tokenizer=tokenizer
    )
    stopped_early, best = False, None
    if trainer.already_complete is not None:
        result, best = trainer.already_complete, (state if early_stopping else None)
    elif not early_stopping:
        trainer.fit()
        result = trainer.export()
    else:
        target = eval_interval
        while target <= trainer.step:  # resumed: the next evaluation after the checkpoint's step
            target += eval_interval
        while True:
            result = trainer.fit(until=min(target, steps))
            val_loss = result["val_loss"]
            if state["best_val"] is None or val_loss < state["best_val"]:
                state.update(best_val=val_loss, best_step=result["steps"], bad_evals=0)
                if info.is_main:
                    with atomic.building_dir(best_dir) as tmp:  # the old best/ stays until this one is whole
                        atomic.copy_dir(Path(result["checkpoint"]) / "model", tmp / "model")
                        if args.lora.enabled:
                            with trainer.plain_model():
                                model.save_adapter(tmp / "adapter", base_model=args.model)
            else:
                state["bad_evals"] += 1
            if info.is_main:
                atomic.write_json(state_path, state, indent=None)
                log.info(
                    "step %d: val loss %.4f (best %.4f at step %d, %d evaluations without improvement)",
                    result["steps"],
                    val_loss,
                    state["best_val"],
                    state["best_step"],
                    state["bad_evals"],
                )
            if result["steps"] >= steps:
                break
            if state["bad_evals"] >= args.early_stopping_patience:
                stopped_early = True
                break
            target += eval_interval
        result = trainer.export()
        best = state
    trainer.unwrap()
    distributed.barrier()
    if result.get("already_complete") and _recorded_summary(out_dir) is not None:
        return _recorded_summary(out_dir)

    summary: dict[str, Any] = {
        "model": args.model,
        "lora": dataclasses.asdict(args.lora) if args.lora.enabled else None,
        "steps": result["steps"],
        "train_loss": result["final_loss"],
        "val_loss": result["val_loss"],
        "stopped_early": stopped_early,
        "model_dir": str(out_dir / "model"),
        "before": before,
    }
    if not info.is_main:
        return summary
    model_dir = out_dir / "model"
    if best is not None and best_dir.exists():
        atomic.copy_dir(best_dir / "model", model_dir)
        summary.update(val_loss=best["best_val"], best_step=best["best_step"])
    if args.save_adapter:
        if not args.lora.enabled:
            log.warning("--save-adapter needs LoRA (--lora.rank > 0); only the full model was written")
        else:
            if best is not None and (best_dir / "adapter").exists():
                atomic.copy_dir(best_dir / "adapter", out_dir / "adapter")
            else:
                with atomic.building_dir(out_dir / "adapter") as tmp:
                    model.save_adapter(tmp, base_model=args.model)
            summary["adapter_dir"] = str(out_dir / "adapter")
    if args.task != "none" and eval_records:
        tuned, tokenizer = load_model_and_tokenizer(model_dir, device=device)
        summary["after"] = _evaluate_task(args, tuned, tokenizer, eval_records)
        log.info("after: %s", json.dumps({k: v for k, v in summary["after"].items() if k != "examples"}))
    atomic.write_json(out_dir / RESULTS_FILE, summary)
    return summary


def _recorded_summary(out_dir: Path) -> dict[str, Any] | None:
    """The summary a finished fine-tuning run recorded, reported again instead of training nothing."""
    path = out_dir / RESULTS_FILE
    if not path.exists():
        return None
    summary = json.loads(path.read_text())
    log.info("the fine-tuning run in %s is complete; its recorded results are in %s", out_dir, path)
    return dict(summary, already_complete=True)


__all__ = ["FinetuneArgs", "evaluate_only", "finetune"]
