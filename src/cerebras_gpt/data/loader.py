"""Batches of token windows for training and validation, read from a prepared data directory.

As in the Cerebras ModelZoo pipeline (facts §5), the packed token stream of a split is cut into windows
of ``T + 1`` tokens with stride ``T``: window ``i`` is ``tokens[i*T : i*T + T + 1]``, so inputs are
``window[:-1]`` and targets ``window[1:]``, and consecutive windows share one token. Unlike ModelZoo's
shuffle buffer, training windows are shuffled by a full permutation drawn from ``(seed, epoch)``, which makes
the order exact, reproducible and resumable from two integers. The permutation is computed, not stored (a
keyed Feistel network with cycle walking), so a corpus of 10^8 windows costs no memory per rank.
Data-parallel ranks take interleaved slices of each global batch, so within an epoch every window is read
by exactly one rank, at most once.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from cerebras_gpt.data.shards import TokenStream, read_meta


class WindowSource:
    """Windows ``(T + 1,)`` of one split, addressed by index: ``len()`` windows, ``take(indices)``."""

    def __init__(self, data_dir: str | Path, split: str, seq_len: int) -> None:
        if seq_len < 1:
            raise ValueError(f"seq_len={seq_len} must be at least 1")
        meta = read_meta(data_dir)
        self.seq_len = seq_len
        self.format = meta.get("format", "bin")
        if self.format == "hdf5":
            from cerebras_gpt.data.hdf5 import HDF5Windows

            self._hdf5 = HDF5Windows(data_dir, split, seq_len, meta)
            self.num_windows = len(self._hdf5)
        else:
            self.stream = TokenStream(data_dir, split, meta)
            self.num_windows = max(0, (len(self.stream) - 1) // seq_len)

    def __len__(self) -> int:
        return self.num_windows

    def take(self, indices: np.ndarray) -> torch.Tensor:
        """Windows ``indices`` stacked: a LongTensor of shape ``(len(indices), T + 1)``."""
        if self.format == "hdf5":
            return torch.from_numpy(self._hdf5.take(indices))
        T = self.seq_len
        out = np.empty((len(indices), T + 1), dtype=np.int64)
        for row, i in enumerate(indices):
            out[row] = self.stream.read(int(i) * T, T + 1)
        return torch.from_numpy(out)


_M64 = np.uint64((1 << 64) - 1)


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer (Steele et al., 2014): a bijective 64-bit hash, used as the round function."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


class FeistelPermutation:
    """A pseudo-random permutation of ``range(n)`` from a key, evaluated at any positions in O(1) memory.

    A balanced Feistel network over the smallest even number of bits covering ``n`` is a bijection on that
    power of two; "cycle walking" (re-applying it until the value falls below ``n``) restricts it to a
    bijection on ``range(n)`` (Black & Rogaway, "Ciphers with Arbitrary Finite Domains", 2002).
    """

    ROUNDS = 6

    def __init__(self, n: int, seed: int, epoch: int) -> None:
        self.n = n
        bits = max(2, (max(n - 1, 1)).bit_length())
        self.half = np.uint64((bits + 1) // 2)
        self.mask = np.uint64((1 << int(self.half)) - 1)
        rng = np.random.default_rng([seed, epoch])
        self.keys = rng.integers(0, 2**63, size=self.ROUNDS, dtype=np.uint64)

    def _round_trip(self, x: np.ndarray) -> np.ndarray:
        left, right = x >> self.half, x & self.mask
        for key in self.keys:
            left, right = right, left ^ (_mix(right ^ key) & self.mask)
        return (left << self.half) | right

    def __call__(self, positions: np.ndarray) -> np.ndarray:
        """The permuted values at ``positions`` (int64 array of values in ``range(n)``)."""
        with np.errstate(over="ignore"):
            y = self._round_trip(positions.astype(np.uint64))
            out_of_range = y >= np.uint64(self.n)
            while out_of_range.any():
                y[out_of_range] = self._round_trip(y[out_of_range])
                out_of_range = y >= np.uint64(self.n)
        return y.astype(np.int64)


def _check_ranks(rank: int, world_size: int) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank={rank}, world_size={world_size}: need world_size >= 1 and 0 <= rank < world_size")


class TokenWindowLoader:
    """Endless shuffled training batches ``(B, T + 1)`` over one split, sharded across data-parallel ranks.

    Each epoch permutes all windows by a permutation keyed by ``(seed, epoch)``; the first
    ``len(self) * B * world_size`` windows of it are cut into global batches (drop_last) and global batch
    ``k`` gives rank ``r`` the windows ``perm[(k * world_size + r) * B : ... + B]``. ``iter()`` continues from
    the current position and runs forever, epoch after epoch; ``epoch`` is the epoch of the latest batch.
    ``state_dict()`` is plain ints; loading it resumes exactly at the next batch.

    Args:
        data_dir: a directory written by ``cerebras_gpt.data.prepare.prepare`` (bin or hdf5 format).
        split: ``"train"`` or ``"val"``.
        seq_len: T, the model's context; batches hold ``T + 1`` tokens per row.
        batch_size: B, rows per batch on this rank.
        seed: the shuffle seed (the same on every rank).
        rank, world_size: this process's data-parallel rank and the number of ranks.
    """

    def __init__(
        self,
        data_dir: str | Path,
        split: str = "train",
        *,
        seq_len: int,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        _check_ranks(rank, world_size)
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be at least 1")
        self.windows = WindowSource(data_dir, split, seq_len)
        self.data_dir, self.split = str(data_dir), split
        self.seq_len, self.batch_size, self.seed = seq_len, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.num_windows = len(self.windows)
        self.batches_per_epoch = self.num_windows // (batch_size * world_size)
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"split {split!r} of {str(data_dir)!r} has {len(self.windows)} windows of {seq_len + 1} tokens, "
                f"fewer than one global batch (batch_size {batch_size} x world_size {world_size}); "
                "use a smaller batch size or seq_len, or prepare more data"
            )
        self.epoch = 0
        self._batch = 0  # index within the epoch of the next batch
        self._perm: FeistelPermutation | None = None
        self._perm_epoch = -1

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        return self.batches_per_epoch

    def indices(self, epoch: int, batch: int) -> np.ndarray:
        """Window indices of this rank's batch ``batch`` in epoch ``epoch``; shape ``(B,)``."""
        if self._perm is None or self._perm_epoch != epoch:
            self._perm, self._perm_epoch = FeistelPermutation(self.num_windows, self.seed, epoch), epoch
        start = (batch * self.world_size + self.rank) * self.batch_size
        return self._perm(np.arange(start, start + self.batch_size, dtype=np.int64))

    def __iter__(self) -> Iterator[torch.Tensor]:
        while True:
            if self._batch >= self.batches_per_epoch:
                self.epoch, self._batch = self.epoch + 1, 0
            batch = self.windows.take(self.indices(self.epoch, self._batch))
            self._batch += 1
            yield batch

    def state_dict(self) -> dict:
        """Where the next batch comes from, plus what must match to resume: plain ints."""
        return {
            "epoch": self.epoch,
            "batch": self._batch,
            "seed": self.seed,
            "world_size": self.world_size,
            "batch_size": self.batch_size,
            "seq_len": self.seq_len,
            "num_windows": self.num_windows,
        }

    def load_state_dict(self, state: dict) -> None:
        for key in ("seed", "world_size", "batch_size", "seq_len", "num_windows"):
            if key in state and int(state[key]) != getattr(self, key):
                raise ValueError(
                    f"loader state has {key}={state[key]} but this loader has {key}={getattr(self, key)}; resume "
                    "with the same data, seed, batch size, sequence length and number of ranks"
                )
        self.epoch, self._batch = int(state["epoch"]), int(state["batch"])


def iter_validation(
    data_dir: str | Path,
    seq_len: int,
    batch_size: int,
    rank: int = 0,
    world_size: int = 1,
    max_batches: int | None = None,
    split: str = "val",
) -> Iterator[torch.Tensor]:
    """Every window of ``split`` once, in order, as LongTensors ``(b, T + 1)`` with ``b <= batch_size``.

    Rank ``r`` reads windows ``r, r + world_size, ...``, so the ranks together cover the split exactly once;
    the last batch of a rank may be short. Tokens after the last whole window (fewer than T) are not read.
    ``max_batches`` stops each rank after that many batches.
    """
    _check_ranks(rank, world_size)
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be at least 1")
    windows = WindowSource(data_dir, split, seq_len)
    mine = np.arange(rank, len(windows), world_size)
    for n, start in enumerate(range(0, len(mine), batch_size)):
        if max_batches is not None and n >= max_batches:
            return
        yield windows.take(mine[start : start + batch_size])
