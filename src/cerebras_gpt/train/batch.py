"""`Batch`: what one micro-batch carries from a loader through the training loop to the model.

Loaders may yield a `Batch`, a LongTensor window batch (B, T+1), or a tuple (inputs (B, T), targets
(B, T)); `as_batch` turns each into a `Batch`. ``segment_ids`` (B, T) mark packed documents: the model
gets them as ``GPT.forward(segment_ids=...)``, so each document attends only to itself with positions
from 0. They travel in the batch rather than in a hook on the model, so evaluation, DDP and compiled
blocks see the same call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

IGNORE_INDEX = -100


@dataclass
class Batch:
    """One micro-batch: ``inputs`` (B, T) token ids, ``targets`` (B, T) with -100 ignored, and optional
    ``segment_ids`` (B, T) of packed documents."""

    inputs: torch.Tensor
    targets: torch.Tensor
    segment_ids: torch.Tensor | None = None

    def to(self, device: torch.device) -> Batch:
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return Batch(move(self.inputs), move(self.targets), move(self.segment_ids))

    def model_kwargs(self) -> dict[str, torch.Tensor]:
        """Keyword arguments for ``model(inputs, **kwargs)`` beyond the inputs."""
        return {} if self.segment_ids is None else {"segment_ids": self.segment_ids}

    def target_count(self) -> int:
        return int((self.targets != IGNORE_INDEX).sum())


def as_batch(batch: Any) -> Batch:
    """A `Batch` from a `Batch`, a (B, T+1) window batch or an (inputs, targets) pair."""
    if isinstance(batch, Batch):
        return batch
    if isinstance(batch, (tuple, list)):
        x, y = batch
        return Batch(x, y)
    return Batch(batch[:, :-1], batch[:, 1:])


__all__ = ["Batch", "as_batch"]
