"""The training loop: `train(cfg, *, model=None, train_loader=None, val_batches=None) -> dict`.

API (what sweeps, scaling ladders, sparsity and fine-tuning build on)::

    from cerebras_gpt.train.config import TrainConfig
    from cerebras_gpt.train.loop import train

    result = train(TrainConfig(model="debug-tiny", data_dir="data/pydoc", steps=200, batch_size=16,
                               seq_len=128, out_dir="runs/tiny"))
    result["final_loss"], result["val_loss"], result["val_ppl"], result["steps"], result["tokens"]

- ``cfg``: a `TrainConfig`; unset fields come from the paper's recipe (train/recipe.py).
- ``model``: an already-built model (e.g. LoRA-wrapped) whose ``config`` is a GPTConfig; the optimizer
  covers its ``requires_grad`` parameters only. Default: a fresh `GPT` from ``cfg.model`` (or ``init_from``).
- ``train_loader``: any object like `cerebras_gpt.data.loader.TokenWindowLoader` (``iter()`` yields
  batches forever; ``state_dict``/``load_state_dict``; ``len``). A batch is a LongTensor (B, T+1) or a
  tuple (inputs (B, T), targets (B, T)) where target -100 is ignored. B is the micro-batch of this rank.
  Default: TokenWindowLoader over ``cfg.data_dir``.
- ``val_batches``: a zero-argument callable returning an iterable of such batches. Default: the ``val``
  split of ``cfg.data_dir`` (``cfg.eval_batches`` batches per rank), or none.

Returns a dict: ``final_loss`` (last step's training loss), ``val_loss``/``val_ppl`` (None without
validation data), ``steps``, ``tokens``, ``skipped_steps`` (NaN/inf losses), ``tokens_per_s``, ``mfu``,
``out_dir``, ``checkpoint`` (the last checkpoint) and ``model_dir`` (``out_dir/model``, an HF directory).

Each step: the global batch (``micro_batch x accum_steps x ranks``) is read, every micro-batch's summed
token loss is back-propagated divided by the global count of target tokens (so accumulation and rank count
give the same gradient), gradients are clipped by global norm, and AdamW steps at the scheduled LR. A
non-finite loss skips the update; ``cfg.max_bad_steps`` in a row stop the run. Under torchrun the same
function runs on every rank (DDP or FSDP2); rank 0 alone logs and writes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from cerebras_gpt import atomic
from cerebras_gpt.config import GPTConfig
from cerebras_gpt.extras import have_extra
from cerebras_gpt.runtime import autocast_context
from cerebras_gpt.train import checkpoint, distributed, rundir
from cerebras_gpt.train.config import TrainConfig
from cerebras_gpt.train.loss import loss_from_output, output_for_loss
from cerebras_gpt.train.metrics import MetricsWriter, model_flops_utilization, peak_flops, plot_loss
from cerebras_gpt.train.optim import build_optimizer, set_lr
from cerebras_gpt.train import report
from cerebras_gpt.train.recipe import Plan, build_model_config, format_plan, resolve
from cerebras_gpt.train.validate import check_numbers

log = logging.getLogger("cerebras_gpt.train")

Batch = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


class TrainingDiverged(RuntimeError):
    """Too many non-finite losses in a row."""


def split_batch(batch: Batch, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs (B, T), targets (B, T)) from a (B, T+1) window batch or an (inputs, targets) pair."""
    if isinstance(batch, (tuple, list)):
        x, y = batch
    else:
        x, y = batch[:, :-1], batch[:, 1:]
    return x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def _find_config(model: nn.Module) -> GPTConfig:
    for candidate in (model, getattr(model, "module", None), getattr(model, "base_model", None)):
        config = getattr(candidate, "config", None)
        if isinstance(config, GPTConfig):
            return config
    raise ValueError("the model passed to train() has no GPTConfig `config` attribute; pass a cerebras_gpt GPT "
                     "(optionally wrapped, e.g. by peft)")


def _resume_path(cfg: TrainConfig) -> Path | None:
    if cfg.resume == "never":
        return None
    if cfg.resume == "auto":  # a damaged latest checkpoint is skipped (with a warning) for the one before
        return checkpoint.latest_valid_checkpoint(cfg.out_dir)
    path = Path(cfg.resume)
    if checkpoint.is_checkpoint(path):
        return path
    latest = checkpoint.latest_valid_checkpoint(path)
    if latest is None:
        raise ValueError(f"--resume {cfg.resume!r} is neither a training checkpoint nor a run directory with one; "
                         "pass a checkpoints/step_N directory, 'auto' or 'never'")
    return latest


def _fit_micro_batch(plan, cfg: TrainConfig, device: torch.device, info):
    """`micro_batch.fit_plan`, agreed by every rank (they must accumulate the same way)."""
    from cerebras_gpt.train import micro_batch

    fitted, how = micro_batch.fit_plan(plan, cfg.micro_batch_size, device, cfg.dtype)
    chosen = distributed.broadcast_from_main(fitted.micro_batch)
    if how is None and chosen == plan.micro_batch:
        return plan
    if info.is_main:
        log.info("micro-batch %d per rank (%s), %d accumulation steps", chosen, how, plan.global_batch //
                 (plan.world_size * chosen))
    return micro_batch.with_micro_batch(plan, chosen)


def _is_within(path: Path | None, directory: Path) -> bool:
    return path is not None and Path(path).resolve().is_relative_to(directory.resolve())


def _build_model(cfg: TrainConfig, resume: Path | None) -> nn.Module:
    from cerebras_gpt.model import GPT

    if resume is not None:  # the architecture the checkpoint was trained with
        return GPT(GPTConfig.from_dict(checkpoint.read_run_config(resume)["model_config"]))
    if cfg.init_from is None:
        return GPT(build_model_config(cfg))
    if checkpoint.is_checkpoint(cfg.init_from):
        model = GPT(GPTConfig.from_dict(checkpoint.read_run_config(cfg.init_from)["model_config"]))
        checkpoint.load(cfg.init_from, model, model, None)
        return model
    from cerebras_gpt.hf import load_pretrained

    return load_pretrained(cfg.init_from)


def _apply_activation_checkpointing(model: nn.Module) -> None:
    from torch.utils.checkpoint import checkpoint as ckpt

    for block in model.transformer.h:
        forward = block.forward
        block.forward = lambda *args, _f=forward: ckpt(_f, *args, use_reentrant=False)


def _translate_loader_state(state: dict, loader: Any) -> dict:
    """Loader state saved with another rank count: same position in windows, this loader's layout."""
    if not hasattr(loader, "world_size") or "world_size" not in state:
        return state
    if int(state["world_size"]) == loader.world_size and int(state["batch_size"]) == loader.batch_size:
        return state
    windows = int(state["batch"]) * int(state["batch_size"]) * int(state["world_size"])
    per_batch = loader.batch_size * loader.world_size
    if windows % per_batch:
        raise ValueError(f"cannot resume the data order: {windows} windows read is not a whole number of "
                         f"batches of {per_batch}; keep the global batch size when changing the rank count")
    return dict(state, batch=windows // per_batch, world_size=loader.world_size, batch_size=loader.batch_size)


def evaluate(model: nn.Module, batches: Iterable[Batch], device: torch.device, dtype: str,
             max_batches: int | None = None) -> tuple[float, int]:
    """Mean token loss over ``batches`` (all ranks together) and the token count."""
    was_training = model.training
    model.eval()
    local = list(batches) if max_batches is None else [b for b, _ in zip(batches, range(max_batches))]
    # FSDP2 forwards are collective: every rank runs the same number of batches.
    n = torch.tensor([len(local)], dtype=torch.float64)
    if torch.distributed.is_initialized():
        n = n.to(device)
        torch.distributed.all_reduce(n, op=torch.distributed.ReduceOp.MIN)
    total = torch.zeros(2, dtype=torch.float64, device=device)
    with torch.no_grad(), autocast_context(device, dtype):
        for batch in local[: int(n.item())]:
            x, y = split_batch(batch, device)
            logits = model(x)
            total[0] += F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=-100,
                                        reduction="sum").double()
            total[1] += (y != -100).sum()
    distributed.all_reduce_sum(total)
    model.train(was_training)
    count = int(total[1].item())
    return (float(total[0] / total[1]) if count else float("nan")), count


def _default_val(cfg: TrainConfig, plan: Plan, info: distributed.DistInfo) -> Callable[[], Iterable] | None:
    if cfg.data_dir is None:
        return None
    from cerebras_gpt.data.loader import WindowSource, iter_validation

    try:
        windows = len(WindowSource(cfg.data_dir, "val", plan.seq_len))
    except (FileNotFoundError, ValueError, KeyError):
        log.warning("no val split in %s: no validation", cfg.data_dir)
        return None
    warning = report.val_split_warning(cfg.data_dir, windows, plan.seq_len)
    if warning is not None and info.is_main:
        log.warning(warning)
    if windows == 0:
        return None
    return lambda: iter_validation(cfg.data_dir, plan.seq_len, plan.micro_batch, info.rank, info.world_size,
                                   max_batches=cfg.eval_batches)


def _agree_past(deadline: float, device: torch.device) -> bool:
    """Whether the wall-time limit has passed, decided by rank 0 for all ranks (they stop together)."""
    flag = torch.tensor([1.0 if time.perf_counter() > deadline else 0.0], device=device)
    if torch.distributed.is_initialized():
        torch.distributed.broadcast(flag, src=0)
    return bool(flag.item())


def train(cfg: TrainConfig, *, model: nn.Module | None = None, train_loader: Any = None,
          val_batches: Callable[[], Iterable[Batch]] | None = None,
          run_identity: dict[str, Any] | None = None, tokenizer: Any = None) -> dict[str, Any]:
    """Train as ``cfg`` says (see the module docstring); returns the final metrics.

    ``run_identity``: what else binds the run directory to this run besides model, data and schedule
    (fine-tuning: its record files and task); see train/rundir.py. ``tokenizer``: saved with each
    checkpoint's model (default: the one the prepared data was tokenized with).
    """
    check_numbers(cfg)
    device = distributed.resolve_device(cfg.device)
    info = distributed.setup(device)
    cfg = distributed.broadcast_from_main(rundir.with_out_dir(cfg)) if not cfg.out_dir else cfg
    out_dir = Path(cfg.out_dir)
    resume = _resume_path(cfg)
    rundir.bind(cfg, rundir.run_identity(cfg, run_identity), _is_within(resume, out_dir), info.is_main)

    torch.manual_seed(cfg.seed)
    raw_model = model if model is not None else _build_model(cfg, resume)
    config = _find_config(raw_model)
    plan = resolve(cfg, info.world_size, model_config=config)
    plan = _fit_micro_batch(plan, cfg, device, info)
    raw_model.to(device)
    raw_model.train()

    sparsifier = None
    if cfg.sparsity.enabled:
        from cerebras_gpt.sparsity import Sparsifier

        sparsifier = Sparsifier(cfg.sparsity, raw_model, plan.total_steps)
        sparsifier.apply(raw_model)
    if cfg.activation_checkpointing:
        _apply_activation_checkpointing(raw_model)
    wrapped = distributed.wrap(raw_model, info, device, cfg.fsdp)
    optimizer = build_optimizer(wrapped, config, plan.lr, cfg.betas, plan.eps, cfg.weight_decay)
    params = [p for g in optimizer.param_groups for p in g["params"]]

    if train_loader is None:
        if cfg.data_dir is None:
            raise ValueError("no training data: pass --data-dir (a directory from `cerebras-gpt prepare`)")
        from cerebras_gpt.data.loader import TokenWindowLoader
        from cerebras_gpt.data.verify import verify_prepared

        verify_prepared(cfg.data_dir, config.vocab_size)  # sizes; checksums and token ids once, then cached
        if tokenizer is None:
            from cerebras_gpt.data.prepare import prepared_tokenizer

            tokenizer = prepared_tokenizer(cfg.data_dir)
        train_loader = TokenWindowLoader(cfg.data_dir, "train", seq_len=plan.seq_len, batch_size=plan.micro_batch,
                                         seed=cfg.seed, rank=info.rank, world_size=info.world_size)
    if val_batches is None:
        val_batches = _default_val(cfg, plan, info)

    step, tokens, skipped, bad_run = 0, 0, 0, 0
    if resume is not None:
        state = checkpoint.load(resume, wrapped, raw_model, optimizer)
        step, tokens, skipped, bad_run = state["step"], state["tokens"], state["skipped"], state["bad_run"]
        if state.get("loader") is not None:
            train_loader.load_state_dict(_translate_loader_state(state["loader"], train_loader))
        if sparsifier is not None and state.get("sparsity") is not None:
            sparsifier.load_state_dict(state["sparsity"])
            sparsifier.apply(raw_model)
        checkpoint.set_rng_state(state["rng"])
        if info.is_main:
            log.info("resumed from %s at step %d", resume, step)
        finished = rundir.recorded_results(out_dir) if step >= plan.total_steps else None
        if finished is not None:
            if info.is_main:
                log.info("the run in %s is complete (step %d of %d); its recorded results: %s", out_dir, step,
                         plan.total_steps, json.dumps({k: v for k, v in finished.items() if k != "plan"}))
            return dict(finished, already_complete=True)

    run_config = {"train_config": cfg.to_dict(), "model_config": config.to_dict(), "plan": plan.to_dict(),
                  "world_size": info.world_size}
    if sparsifier is not None:
        run_config["sparsity_report"] = sparsifier.report(plan.seq_len)
    metrics = (MetricsWriter(out_dir, cfg.tensorboard and "tensorboard" in cfg.logger,
                             loggers=[name for name in cfg.logger if name != "tensorboard"],
                             run_name=out_dir.name, run_config=cfg.to_dict()) if info.is_main else None)
    if metrics is not None:
        metrics.truncate_after(step)
    peak, peak_source = peak_flops(device, torch.bfloat16 if device.type == "cuda" and cfg.dtype != "float32"
                                   else torch.float32)
    if info.is_main:
        log.info(report.plan_header(format_plan(plan, cfg), out_dir, str(device), peak, peak_source))

    forward = wrapped
    if cfg.compile:
        forward = torch.compile(wrapped)
    is_ddp = isinstance(wrapped, torch.nn.parallel.DistributedDataParallel)
    bar = None
    if info.is_main and cfg.progress:
        from tqdm import tqdm

        bar = tqdm(total=plan.total_steps, initial=step, unit="step", dynamic_ncols=True)

    def say(line: str) -> None:  # above the progress bar, not through it
        if not info.is_main:
            return
        if bar is not None:
            bar.write(line)
        else:
            log.info(line)

    def save_checkpoint() -> Path | None:
        state = {"step": step, "tokens": tokens, "skipped": skipped, "bad_run": bad_run,
                 "loader": train_loader.state_dict() if hasattr(train_loader, "state_dict") else None,
                 "sparsity": sparsifier.state_dict() if sparsifier is not None else None}
        return checkpoint.save(out_dir, step, wrapped, raw_model, optimizer, state, run_config, cfg.keep_last,
                               sharded=cfg.fsdp, is_main=info.is_main, tokenizer=tokenizer)

    iterator = iter(train_loader)
    last_loss, val_loss, last_ckpt, saved_step = float("nan"), None, resume, step
    tok_s, mfu = 0.0, 0.0
    t_last, tokens_last = time.perf_counter(), tokens
    stop_at = plan.total_steps if cfg.stop_at_step is None else min(cfg.stop_at_step, plan.total_steps)
    deadline = None if cfg.time_limit_minutes is None else time.perf_counter() + 60 * cfg.time_limit_minutes
    while step < stop_at:
        if deadline is not None and _agree_past(deadline, device):
            break
        lr = plan.lr_at(step)  # over tokens: unchanged by a batch switch
        set_lr(optimizer, lr)
        micro = [split_batch(next(iterator), device) for _ in range(plan.accum_steps_at(step))]
        count = torch.tensor([sum(int((y != -100).sum()) for _, y in micro)], dtype=torch.float64, device=device)
        distributed.all_reduce_sum(count)
        scale = info.world_size / max(1.0, float(count.item()))
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        for i, (x, y) in enumerate(micro):
            sync = contextlib.nullcontext() if not is_ddp or i == len(micro) - 1 else wrapped.no_sync()
            with sync:
                with autocast_context(device, cfg.dtype):
                    try:
                        output = output_for_loss(forward, x)
                    except Exception as e:  # torch.compile failures surface on the first call
                        if forward is wrapped:
                            raise
                        log.warning("torch.compile failed (%s); continuing eagerly", e)
                        forward = wrapped
                        output = output_for_loss(forward, x)
                loss = loss_from_output(output, y)  # summed over the micro-batch's target tokens
                (loss * scale).backward()
            loss_sum += loss.detach().double()
        distributed.all_reduce_sum(loss_sum)
        step_loss = float(loss_sum.item()) / max(1.0, float(count.item()))
        grad_norm = float("nan")
        if math.isfinite(step_loss):
            bad_run = 0
            norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
            grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
            if sparsifier is not None:
                sparsifier.update(step + 1, wrapped, optimizer)  # 1-based: the step about to be taken
            optimizer.step()
            if sparsifier is not None:
                sparsifier.apply(wrapped, optimizer)
        else:
            skipped += 1
            bad_run += 1
            if info.is_main:
                log.warning("step %d: loss is %s; update skipped (%d in a row)", step, step_loss, bad_run)
            if bad_run >= cfg.max_bad_steps:
                optimizer.zero_grad(set_to_none=True)
                raise TrainingDiverged(
                    f"loss was NaN/inf for {bad_run} steps in a row (at step {step}); try a lower --lr, a longer "
                    "--warmup-steps, --grad-clip 1.0, --dtype float32, or resume from an earlier checkpoint")
        optimizer.zero_grad(set_to_none=True)
        tokens += plan.global_batch_at(step) * plan.seq_len
        step += 1
        last_loss = step_loss

        record: dict[str, Any] | None = None
        if step % cfg.log_interval == 0 or step == stop_at:
            now = time.perf_counter()
            tok_s = (tokens - tokens_last) / max(1e-9, now - t_last)
            t_last, tokens_last = now, tokens
            mfu = model_flops_utilization(plan.flops_per_token, tok_s, peak, info.world_size)
            record = {"step": step, "tokens": tokens, "loss": step_loss, "lr": lr, "grad_norm": grad_norm,
                      "tokens_per_s": tok_s, "mfu": mfu, "skipped": skipped}
        if val_batches is not None and ((cfg.eval_interval and step % cfg.eval_interval == 0)
                                        or step == plan.total_steps):
            val_loss, _ = evaluate(wrapped, val_batches(), device, cfg.dtype)
            record = dict(record or {"step": step, "tokens": tokens}, val_loss=val_loss,
                          val_ppl=math.exp(min(val_loss, 700)))
            say(report.eval_line(step, plan.total_steps, val_loss, tok_s, mfu))
        if record is not None and metrics is not None:
            metrics.write(record)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.3f}", tok_s=f"{tok_s:,.0f}", mfu=f"{report.shown_mfu(mfu):.1%}", refresh=False)
        if cfg.checkpoint_interval and step % cfg.checkpoint_interval == 0 and step < stop_at:
            last_ckpt, saved_step = save_checkpoint(), step
            say(report.checkpoint_line(last_ckpt, step))
    if bar is not None:
        bar.close()
    if saved_step != step or last_ckpt is None:
        last_ckpt = save_checkpoint()
    model_dir = out_dir / "model"
    result = {"final_loss": last_loss, "val_loss": val_loss,
              "val_ppl": math.exp(min(val_loss, 700)) if val_loss is not None else None,
              "steps": step, "tokens": tokens, "skipped_steps": skipped, "tokens_per_s": tok_s, "mfu": mfu,
              "out_dir": str(out_dir), "checkpoint": str(last_ckpt), "model_dir": str(model_dir),
              "plan": plan.to_dict(), **({"sparsity": sparsifier.report(plan.seq_len)} if sparsifier else {})}
    if info.is_main:
        atomic.copy_dir(Path(last_ckpt) / "model", model_dir)
        metrics.close()
        if (metrics.path.exists() and metrics.path.stat().st_size
                and have_extra("train", "matplotlib", skipped=f"the loss plot {out_dir / 'loss.png'}")):
            plot_loss(metrics.path, out_dir / "loss.png")
        if step >= plan.total_steps:
            rundir.write_results(out_dir, result)
    distributed.barrier()
    return result


__all__ = ["train", "evaluate", "TrainingDiverged", "split_batch", "TrainConfig"]
