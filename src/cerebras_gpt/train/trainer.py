"""`Trainer`: one training run, set up once, stepped, evaluated, checkpointed and exported.

    trainer = Trainer(cfg)            # model, plan, sparsity, wrapping, optimizer, data, resume
    trainer.fit(until=100)            # train to step 100 (checkpoint at the end)
    trainer.fit()                     # continue to the end of the schedule
    result = trainer.export()         # out_dir/model, the loss plot, results.json

Construction does everything that must happen once per run: the run directory is bound, the model is
built (or taken) and sparsified, `parallelize` wraps it (activation checkpointing, compile, FSDP2/DDP),
the optimizer and the data are set up and a checkpoint is resumed. `fit` may then be called any number
of times; each call continues where the last one stopped, in memory, so ``fit(until=a); fit(until=b)``
takes the same steps as ``fit(until=b)``. Fine-tuning's early stopping drives one Trainer this way.

Each step: the global batch (``micro_batch x accum_steps x ranks``) is read, every micro-batch's summed
token loss is back-propagated divided by the global count of target tokens (so accumulation and rank count
give the same gradient), gradients are clipped by global norm, and AdamW steps at the scheduled LR. A
non-finite loss skips the update; ``cfg.max_bad_steps`` in a row stop the run. Under torchrun the same
code runs on every rank; rank 0 alone logs and writes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cerebras_gpt import atomic
from cerebras_gpt.config import GPTConfig
from cerebras_gpt.extras import have_extra
from cerebras_gpt.runtime import autocast_context, full_tensor
from cerebras_gpt.train import checkpoint, cpu_matmul, distributed, parallelize, report, rundir
from cerebras_gpt.train.batch import Batch, as_batch
from cerebras_gpt.train.config import TrainConfig
from cerebras_gpt.train.loss import loss_from_output, output_for_loss, release_workspace
from cerebras_gpt.train.metrics import MetricsWriter, model_flops_utilization, peak_flops, plot_loss
from cerebras_gpt.train.optim import build_optimizer, set_lr
from cerebras_gpt.train.recipe import Plan, build_model_config, format_plan, resolve
from cerebras_gpt.train.validate import check_numbers

log = logging.getLogger("cerebras_gpt.train")


class TrainingDiverged(RuntimeError):
    """Too many non-finite losses in a row."""


def split_batch(batch: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs (B, T), targets (B, T)) from a `Batch`, a (B, T+1) window batch or an (inputs, targets) pair."""
    b = as_batch(batch)
    return b.inputs.to(device, non_blocking=True), b.targets.to(device, non_blocking=True)


def _find_config(model: nn.Module) -> GPTConfig:
    for candidate in (model, getattr(model, "module", None), getattr(model, "base_model", None)):
        config = getattr(candidate, "config", None)
        if isinstance(config, GPTConfig):
            return config
    raise ValueError(
        "the model passed to train() has no GPTConfig `config` attribute; pass a cerebras_gpt GPT "
        "(optionally wrapped, e.g. by peft)"
    )


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
        raise ValueError(
            f"--resume {cfg.resume!r} is neither a training checkpoint nor a run directory with one; "
            "pass a checkpoints/step_N directory, 'auto' or 'never'"
        )
    return latest


def _fit_micro_batch(plan, cfg: TrainConfig, device: torch.device, info):
    """`micro_batch.fit_plan`, agreed by every rank (they must accumulate the same way)."""
    from cerebras_gpt.train import micro_batch

    fitted, how = micro_batch.fit_plan(plan, cfg.micro_batch_size, device, cfg.dtype)
    chosen = distributed.broadcast_from_main(fitted.micro_batch)
    if how is None and chosen == plan.micro_batch:
        return plan
    if info.is_main:
        log.info(
            "micro-batch %d per rank (%s), %d accumulation steps",
            chosen,
            how,
            plan.global_batch // (plan.world_size * chosen),
        )
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


def _translate_loader_state(state: dict, loader: Any) -> dict:
    """Loader state saved with another rank count: same position in windows, this loader's layout."""
    if not hasattr(loader, "world_size") or "world_size" not in state:
        return state
    if int(state["world_size"]) == loader.world_size and int(state["batch_size"]) == loader.batch_size:
        return state
    windows = int(state["batch"]) * int(state["batch_size"]) * int(state["world_size"])
    per_batch = loader.batch_size * loader.world_size
    if windows % per_batch:
        raise ValueError(
            f"cannot resume the data order: {windows} windows read is not a whole number of "
            f"batches of {per_batch}; keep the global batch size when changing the rank count"
        )
    return dict(state, batch=windows // per_batch, world_size=loader.world_size, batch_size=loader.batch_size)


def evaluate(
    model: nn.Module, batches: Iterable[Any], device: torch.device, dtype: str, max_batches: int | None = None
) -> tuple[float, int]:
    """Mean token loss over ``batches`` (all ranks together) and the token count.

    A batch is a `Batch` (its ``segment_ids`` reach the model), a (B, T+1) window batch or an
    (inputs, targets) pair.
    """
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
            b = as_batch(batch).to(device)
            logits = model(b.inputs, **b.model_kwargs())
            total[0] += F.cross_entropy(
                logits.float().flatten(0, 1), b.targets.flatten(), ignore_index=-100, reduction="sum"
            ).double()
            total[1] += (b.targets != -100).sum()
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
    return lambda: iter_validation(
        cfg.data_dir, plan.seq_len, plan.micro_batch, info.rank, info.world_size, max_batches=cfg.eval_batches
    )


def _agree_past(deadline: float, device: torch.device) -> bool:
    """Whether the wall-time limit has passed, decided by rank 0 for all ranks (they stop together)."""
    flag = torch.tensor([1.0 if time.perf_counter() > deadline else 0.0], device=device)
    if torch.distributed.is_initialized():
        torch.distributed.broadcast(flag, src=0)
    return bool(flag.item())


class Trainer:
    """One training run (see the module docstring).

    Args:
        cfg: a `TrainConfig`; unset fields come from the paper's recipe (train/recipe.py).
        model: an already-built model (e.g. LoRA-wrapped) whose ``config`` is a GPTConfig; the optimizer
            covers its ``requires_grad`` parameters only. Default: a fresh `GPT` from ``cfg.model`` (or
            ``init_from``).
        train_loader: an object like `cerebras_gpt.data.loader.TokenWindowLoader` (``iter()`` yields
            micro-batches forever, see `cerebras_gpt.train.batch`; ``state_dict``/``load_state_dict``).
        val_batches: a zero-argument callable returning an iterable of such batches.
        run_identity: what else binds the run directory to this run (see train/rundir.py).
        tokenizer: saved with each checkpoint's model (default: the prepared data's).

    After construction ``already_complete`` holds the recorded results when the resumed run had finished
    (``fit`` then trains nothing and returns them).
    """

    def __init__(
        self,
        cfg: TrainConfig,
        *,
        model: nn.Module | None = None,
        train_loader: Any = None,
        val_batches: Callable[[], Iterable[Any]] | None = None,
        run_identity: dict[str, Any] | None = None,
        tokenizer: Any = None,
    ) -> None:
        check_numbers(cfg)
        self.device = device = distributed.resolve_device(cfg.device)
        self.info = info = distributed.setup(device)
        cfg = distributed.broadcast_from_main(rundir.with_out_dir(cfg)) if not cfg.out_dir else cfg
        self.cfg = cfg
        self.out_dir = out_dir = Path(cfg.out_dir)
        resume = _resume_path(cfg)
        rundir.bind(cfg, rundir.run_identity(cfg, run_identity), _is_within(resume, out_dir), info.is_main)

        torch.manual_seed(cfg.seed)
        self.raw_model = raw_model = model if model is not None else _build_model(cfg, resume)
        self.config = config = _find_config(raw_model)
        plan = resolve(cfg, info.world_size, model_config=config)
        self.plan = plan = _fit_micro_batch(plan, cfg, device, info)
        raw_model.to(device)
        raw_model.train()

        self.sparsifier = None
        if cfg.sparsity.enabled:
            from cerebras_gpt.sparsity import Sparsifier

            self.sparsifier = Sparsifier(cfg.sparsity, raw_model, plan.total_steps)
            self.sparsifier.apply(raw_model)
        self.model = parallelize.parallelize(
            raw_model,
            info,
            device,
            fsdp=cfg.fsdp,
            activation_checkpointing=cfg.activation_checkpointing,
            compile=cfg.compile,
            cpu_rows=plan.micro_batch * plan.seq_len,
        )
        self.optimizer = build_optimizer(self.model, config, plan.lr, cfg.betas, plan.eps, cfg.weight_decay)
        self._params = [p for g in self.optimizer.param_groups for p in g["params"]]

        if train_loader is None:
            if cfg.data_dir is None:
                raise ValueError("no training data: pass --data-dir (a directory from `cerebras-gpt prepare`)")
            from cerebras_gpt.data.loader import TokenWindowLoader
            from cerebras_gpt.data.verify import verify_prepared

            verify_prepared(cfg.data_dir, config.vocab_size)  # sizes; checksums and token ids once, then cached
            if tokenizer is None:
                from cerebras_gpt.data.prepare import prepared_tokenizer

                tokenizer = prepared_tokenizer(cfg.data_dir)
            train_loader = TokenWindowLoader(
                cfg.data_dir,
                "train",
                seq_len=plan.seq_len,
                batch_size=plan.micro_batch,
                seed=cfg.seed,
                rank=info.rank,
                world_size=info.world_size,
            )
        self.train_loader = train_loader
        self.val_batches = val_batches if val_batches is not None else _default_val(cfg, plan, info)

        self.step, self.tokens, self.skipped, self.bad_run = 0, 0, 0, 0
        self.already_complete: dict[str, Any] | None = None
        if resume is not None:
            state = checkpoint.load(resume, self.model, raw_model, self.optimizer)
            self.step, self.tokens = state["step"], state["tokens"]
            self.skipped, self.bad_run = state["skipped"], state["bad_run"]
            if state.get("loader") is not None:
                train_loader.load_state_dict(_translate_loader_state(state["loader"], train_loader))
            if self.sparsifier is not None and state.get("sparsity") is not None:
                self.sparsifier.load_state_dict(state["sparsity"])
                self.sparsifier.apply(raw_model)
            checkpoint.set_rng_state(state["rng"])
            if info.is_main:
                log.info("resumed from %s at step %d", resume, self.step)
            finished = rundir.recorded_results(out_dir) if self.step >= plan.total_steps else None
            if finished is not None:
                if info.is_main:
                    log.info(
                        "the run in %s is complete (step %d of %d); its recorded results: %s",
                        out_dir,
                        self.step,
                        plan.total_steps,
                        json.dumps({k: v for k, v in finished.items() if k != "plan"}),
                    )
                self.already_complete = dict(finished, already_complete=True)
                return

        run_config = {
            "train_config": cfg.to_dict(),
            "model_config": config.to_dict(),
            "plan": plan.to_dict(),
            "world_size": info.world_size,
        }
        if self.sparsifier is not None:
            run_config["sparsity_report"] = self.sparsifier.report(plan.seq_len)
        self.checkpoints = checkpoint.CheckpointManager(
            out_dir,
            self.model,
            raw_model,
            self.optimizer,
            run_config,
            keep_last=cfg.keep_last,
            sharded=cfg.fsdp,
            is_main=info.is_main,
            tokenizer=tokenizer,
        )
        self.metrics = (
            MetricsWriter(
                out_dir,
                cfg.tensorboard and "tensorboard" in cfg.logger,
                loggers=[name for name in cfg.logger if name != "tensorboard"],
                run_name=out_dir.name,
                run_config=cfg.to_dict(),
            )
            if info.is_main
            else None
        )
        if self.metrics is not None:
            self.metrics.truncate_after(self.step)
        self.peak, peak_source = peak_flops(
            device, torch.bfloat16 if device.type == "cuda" and cfg.dtype != "float32" else torch.float32
        )
        if info.is_main:
            log.info(report.plan_header(format_plan(plan, cfg), out_dir, str(device), self.peak, peak_source))

        self._is_ddp = isinstance(self.model, torch.nn.parallel.DistributedDataParallel)
        self._bar = None
        if info.is_main and cfg.progress:
            from tqdm import tqdm

            self._bar = tqdm(total=plan.total_steps, initial=self.step, unit="step", dynamic_ncols=True)
        self._iterator = None  # made on the first fit: the loader's position is the resumed one by then
        self.last_loss, self.val_loss = float("nan"), None
        self.last_checkpoint, self._saved_step = resume, self.step
        self.tokens_per_s, self.mfu = 0.0, 0.0
        self._t_last, self._tokens_last = time.perf_counter(), self.tokens
        self._deadline = None if cfg.time_limit_minutes is None else time.perf_counter() + 60 * cfg.time_limit_minutes

    # -- one step ---------------------------------------------------------------------------------------

    def _forward(self, batch: Batch):
        try:
            return output_for_loss(self.model, batch.inputs, batch.segment_ids)
        except Exception as e:  # torch.compile failures surface on the first call
            if not parallelize.is_compiled(self.raw_model):
                raise
            log.warning("torch.compile failed (%s); continuing eagerly", e)
            parallelize.remove_compile(self.raw_model)
            return output_for_loss(self.model, batch.inputs, batch.segment_ids)

    def train_step(self, micro: Batch | Any | list[Any]) -> dict[str, float]:
        """One optimizer step over this rank's micro-batches of the global batch (one batch or a list).

        Returns ``loss`` (mean over the global batch's target tokens), ``grad_norm`` (NaN for a skipped
        step) and ``lr``. Raises `TrainingDiverged` after ``cfg.max_bad_steps`` non-finite losses in a row.
        """
        cfg, device, optimizer = self.cfg, self.device, self.optimizer
        micro = [as_batch(b).to(device) for b in (micro if isinstance(micro, list) else [micro])]
        lr = self.plan.lr_at(self.step)  # over tokens: unchanged by a batch switch
        set_lr(optimizer, lr)
        count = torch.tensor([sum(b.target_count() for b in micro)], dtype=torch.float64, device=device)
        distributed.all_reduce_sum(count)
        targets = max(1.0, float(count.item()))  # target tokens in the global batch
        scale = self.info.world_size / targets
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        for i, batch in enumerate(micro):
            last = i == len(micro) - 1
            sync = contextlib.nullcontext() if not self._is_ddp or last else self.model.no_sync()
            with sync:
                with autocast_context(device, cfg.dtype):
                    output = self._forward(batch)
                loss = loss_from_output(output, batch.targets)  # summed over the micro-batch's target tokens
                (loss * scale).backward()
            loss_sum += loss.detach().double()
        distributed.all_reduce_sum(loss_sum)
        step_loss = float(loss_sum.item()) / targets
        grad_norm = float("nan")
        if math.isfinite(step_loss):
            self.bad_run = 0
            norm = torch.nn.utils.clip_grad_norm_(self._params, cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
            grad_norm = float(full_tensor(norm))
            if self.sparsifier is not None:
                self.sparsifier.update(self.step + 1, self.model, optimizer)  # 1-based: the step about to be taken
            optimizer.step()
            if self.sparsifier is not None:
                self.sparsifier.apply(self.model, optimizer)
        else:
            self.skipped += 1
            self.bad_run += 1
            if self.info.is_main:
                log.warning("step %d: loss is %s; update skipped (%d in a row)", self.step, step_loss, self.bad_run)
            if self.bad_run >= cfg.max_bad_steps:
                optimizer.zero_grad(set_to_none=True)
                raise TrainingDiverged(
                    f"loss was NaN/inf for {self.bad_run} steps in a row (at step {self.step}); try a lower --lr, "
                    "a longer --warmup-steps, --grad-clip 1.0, --dtype float32, or resume from an earlier checkpoint"
                )
        optimizer.zero_grad(set_to_none=True)
        self.tokens += self.plan.global_batch_at(self.step) * self.plan.seq_len
        self.step += 1
        self.last_loss = step_loss
        return {"loss": step_loss, "grad_norm": grad_norm, "lr": lr}

    # -- evaluation, checkpoints ---------------------------------------------------------------------------

    def evaluate(self) -> float | None:
        """Validation loss now (None without validation data); kept as ``val_loss``."""
        if self.val_batches is None:
            return None
        self.val_loss, _ = evaluate(self.model, self.val_batches(), self.device, self.cfg.dtype)
        return self.val_loss

    def save_checkpoint(self) -> Path | None:
        """Checkpoint the run at the current step (collective under torchrun)."""
        loader = self.train_loader
        state = {
            "step": self.step,
            "tokens": self.tokens,
            "skipped": self.skipped,
            "bad_run": self.bad_run,
            "loader": loader.state_dict() if hasattr(loader, "state_dict") else None,
            "sparsity": self.sparsifier.state_dict() if self.sparsifier is not None else None,
        }
        with self.plain_model():
            self.last_checkpoint, self._saved_step = self.checkpoints.save(self.step, state), self.step
        return self.last_checkpoint

    def plain_model(self) -> contextlib.AbstractContextManager:
        """A context in which the model's blocks carry no activation-checkpointing wrapper, so module names
        are GPT-2's (what LoRA's ``named_modules``-keyed adapter and merge expect); FSDP2 runs stay as
        they are (their hooks sit on the wrappers; LoRA is not used with FSDP2)."""
        if self.cfg.fsdp or not self.cfg.activation_checkpointing:
            return contextlib.nullcontext(self.raw_model)
        return parallelize.plain_blocks(self.raw_model)

    def _say(self, line: str) -> None:  # above the progress bar, not through it
        if not self.info.is_main:
            return
        if self._bar is not None:
            self._bar.write(line)
        else:
            log.info(line)

    # -- the loop --------------------------------------------------------------------------------------

    def fit(self, until: int | None = None) -> dict[str, Any]:
        """Train from the current step up to ``until`` (default ``cfg.stop_at_step``, else the end of the
        schedule; never past it), then checkpoint; returns `result`. May be called again to continue."""
        if self.already_complete is not None:
            return self.already_complete
        cfg, plan = self.cfg, self.plan
        if until is None:
            until = cfg.stop_at_step
        stop_at = plan.total_steps if until is None else min(until, plan.total_steps)
        if self._iterator is None:
            self._iterator = iter(self.train_loader)
        while self.step < stop_at:
            if self._deadline is not None and _agree_past(self._deadline, self.device):
                break
            micro = [next(self._iterator) for _ in range(plan.accum_steps_at(self.step))]
            out = self.train_step(micro)
            step = self.step
            record: dict[str, Any] | None = None
            if step % cfg.log_interval == 0 or step == stop_at:
                now = time.perf_counter()
                self.tokens_per_s = (self.tokens - self._tokens_last) / max(1e-9, now - self._t_last)
                self._t_last, self._tokens_last = now, self.tokens
                self.mfu = model_flops_utilization(
                    plan.flops_per_token, self.tokens_per_s, self.peak, self.info.world_size
                )
                record = {
                    "step": step,
                    "tokens": self.tokens,
                    "loss": out["loss"],
                    "lr": out["lr"],
                    "grad_norm": out["grad_norm"],
                    "tokens_per_s": self.tokens_per_s,
                    "mfu": self.mfu,
                    "skipped": self.skipped,
                }
            if self.val_batches is not None and (
                (cfg.eval_interval and step % cfg.eval_interval == 0) or step == plan.total_steps
            ):
                val_loss = self.evaluate()
                record = dict(
                    record or {"step": step, "tokens": self.tokens},
                    val_loss=val_loss,
                    val_ppl=math.exp(min(val_loss, 700)),
                )
                self._say(report.eval_line(step, plan.total_steps, val_loss, self.tokens_per_s, self.mfu))
            if record is not None and self.metrics is not None:
                self.metrics.write(record)
            if self._bar is not None:
                self._bar.update(1)
                self._bar.set_postfix(
                    loss=f"{out['loss']:.3f}",
                    tok_s=f"{self.tokens_per_s:,.0f}",
                    mfu=f"{report.shown_mfu(self.mfu):.1%}",
                    refresh=False,
                )
            if cfg.checkpoint_interval and step % cfg.checkpoint_interval == 0 and step < stop_at:
                self.save_checkpoint()
                self._say(report.checkpoint_line(self.last_checkpoint, step))
        release_workspace()  # the loss's reused logits block: not needed until the next fit
        if self._saved_step != self.step or self.last_checkpoint is None:
            self.save_checkpoint()
        return self.result()

    def result(self) -> dict[str, Any]:
        """The run's metrics now: what `cerebras_gpt.train.loop.train` returns."""
        if self.already_complete is not None:
            return self.already_complete
        plan, val_loss, sparsifier = self.plan, self.val_loss, self.sparsifier
        return {
            "final_loss": self.last_loss,
            "val_loss": val_loss,
            "val_ppl": math.exp(min(val_loss, 700)) if val_loss is not None else None,
            "steps": self.step,
            "tokens": self.tokens,
            "skipped_steps": self.skipped,
            "tokens_per_s": self.tokens_per_s,
            "mfu": self.mfu,
            "out_dir": str(self.out_dir),
            "checkpoint": str(self.last_checkpoint),
            "model_dir": str(self.out_dir / "model"),
            "plan": plan.to_dict(),
            **({"sparsity": sparsifier.report(plan.seq_len)} if sparsifier else {}),
        }

    def export(self) -> dict[str, Any]:
        """End the run: ``out_dir/model`` from the last checkpoint, the metrics closed and plotted, and
        ``results.json`` once the schedule is complete; returns `result`. No `fit` after this."""
        if self.already_complete is not None:
            return self.already_complete
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self.last_checkpoint is None:
            self.save_checkpoint()
        result = self.result()
        if self.info.is_main:
            out_dir = self.out_dir
            atomic.copy_dir(Path(self.last_checkpoint) / "model", out_dir / "model")
            self.metrics.close()
            if (
                self.metrics.path.exists()
                and self.metrics.path.stat().st_size
                and have_extra("train", "matplotlib", skipped=f"the loss plot {out_dir / 'loss.png'}")
            ):
                plot_loss(self.metrics.path, out_dir / "loss.png")
            if self.step >= self.plan.total_steps:
                rundir.write_results(out_dir, result)
        distributed.barrier()
        return result

    def unwrap(self) -> nn.Module:
        """The model as passed in (or built), its blocks plain again where that can be undone (activation
        checkpointing and compile; FSDP2 sharding stays), so it can be used for inference."""
        cpu_matmul.remove_onednn_linears(self.raw_model)
        if not self.cfg.fsdp:
            parallelize.remove_compile(self.raw_model)
            parallelize.remove_activation_checkpointing(self.raw_model)
        return self.raw_model


__all__ = ["Trainer", "TrainingDiverged", "evaluate", "split_batch"]
