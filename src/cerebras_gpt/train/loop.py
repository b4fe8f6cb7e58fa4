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
  batches forever; ``state_dict``/``load_state_dict``; ``len``). A batch is a `cerebras_gpt.train.batch.Batch`
  (inputs, targets, optional segment_ids of packed documents), a LongTensor (B, T+1) or a tuple
  (inputs (B, T), targets (B, T)) where target -100 is ignored. B is the micro-batch of this rank.
  Default: TokenWindowLoader over ``cfg.data_dir``.
- ``val_batches``: a zero-argument callable returning an iterable of such batches. Default: the ``val``
  split of ``cfg.data_dir`` (``cfg.eval_batches`` batches per rank), or none.

Returns a dict: ``final_loss`` (last step's training loss), ``val_loss``/``val_ppl`` (None without
validation data), ``steps``, ``tokens``, ``skipped_steps`` (NaN/inf losses), ``tokens_per_s``, ``mfu``,
``out_dir``, ``checkpoint`` (the last checkpoint) and ``model_dir`` (``out_dir/model``, an HF directory).

`train` is `Trainer(cfg, ...).fit()` then `Trainer.export()` (train/trainer.py), where setup, the step,
evaluation and checkpoints live; use the `Trainer` to train in parts without setting up again.

Each step: the global batch (``micro_batch x accum_steps x ranks``) is read, every micro-batch's summed
token loss is back-propagated divided by the global count of target tokens (so accumulation and rank count
give the same gradient), gradients are clipped by global norm, and AdamW steps at the scheduled LR. A
non-finite loss skips the update; ``cfg.max_bad_steps`` in a row stop the run. Under torchrun the same
function runs on every rank (DDP or FSDP2); rank 0 alone logs and writes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from torch import nn

from cerebras_gpt.train.batch import Batch
from cerebras_gpt.train.config import TrainConfig
from cerebras_gpt.train.trainer import Trainer, TrainingDiverged, evaluate, split_batch


def train(
    cfg: TrainConfig,
    *,
    model: nn.Module | None = None,
    train_loader: Any = None,
    val_batches: Callable[[], Iterable[Any]] | None = None,
    run_identity: dict[str, Any] | None = None,
    tokenizer: Any = None,
) -> dict[str, Any]:
    """Train as ``cfg`` says (see the module docstring); returns the final metrics.

    ``run_identity``: what else binds the run directory to this run besides model, data and schedule
    (fine-tuning: its record files and task); see train/rundir.py. ``tokenizer``: saved with each
    checkpoint's model (default: the one the prepared data was tokenized with).
    """
    trainer = Trainer(
        cfg,
        model=model,
        train_loader=train_loader,
        val_batches=val_batches,
        run_identity=run_identity,
        tokenizer=tokenizer,
    )
    if trainer.already_complete is not None:
        return trainer.already_complete
    trainer.fit()
    result = trainer.export()
    trainer.unwrap()  # a model passed in comes back usable for inference
    return result


__all__ = ["train", "evaluate", "TrainingDiverged", "split_batch", "TrainConfig", "Trainer", "Batch"]
