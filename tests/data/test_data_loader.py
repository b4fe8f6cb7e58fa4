"""The token-window loader: exact coverage across ranks, deterministic shuffling, mid-epoch resume,
and the validation iterator."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cerebras_gpt.data.loader import TokenWindowLoader, iter_validation
from cerebras_gpt.data.prepare import prepare

T, B = 32, 4


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("pydoc")
    prepare(["builtin:pydoc"], out, val_fraction=0.1, workers=1, progress=False, shard_tokens=20_000)
    return out


def _stream(data_dir, split):
    meta = json.loads((data_dir / "meta.json").read_text())
    return np.concatenate(
        [np.fromfile(data_dir / s["file"], dtype=meta["dtype"]) for s in meta["splits"][split]["shards"]]
    ).astype(np.int64)


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_each_window_once_per_epoch_across_ranks(prepared, world_size):
    stream = _stream(prepared, "train")
    n_windows = (len(stream) - 1) // T
    loaders = [
        TokenWindowLoader(prepared, "train", seq_len=T, batch_size=B, seed=3, rank=r, world_size=world_size)
        for r in range(world_size)
    ]
    assert all(len(lo) == n_windows // (B * world_size) for lo in loaders)
    seen = []
    for lo in loaders:
        it = iter(lo)
        for k in range(len(lo)):
            batch = next(it)
            assert batch.shape == (B, T + 1) and batch.dtype == torch.long
            idx = lo.indices(0, k)
            expected = np.stack([stream[i * T : i * T + T + 1] for i in idx])
            assert torch.equal(batch, torch.from_numpy(expected))
            seen += idx.tolist()
    assert len(seen) == len(set(seen)) == len(loaders[0]) * B * world_size  # no overlap, no repeat
    assert n_windows - len(seen) < B * world_size  # drop_last drops less than one global batch
    assert all(0 <= i < n_windows for i in seen)


def test_windows_cross_shard_boundaries(prepared):
    meta = json.loads((prepared / "meta.json").read_text())
    assert len(meta["splits"]["train"]["shards"]) > 1  # the fixture's small shards make several
    stream = _stream(prepared, "train")
    batches = list(iter_validation(prepared, T, 7, split="train"))
    got = torch.cat(batches)
    n = (len(stream) - 1) // T
    assert got.shape == (n, T + 1)
    assert torch.equal(got, torch.from_numpy(np.stack([stream[i * T : i * T + T + 1] for i in range(n)])))


def test_epochs_reshuffle_deterministically(prepared):
    a = TokenWindowLoader(prepared, seq_len=T, batch_size=B, seed=0)
    b = TokenWindowLoader(prepared, seq_len=T, batch_size=B, seed=0)
    c = TokenWindowLoader(prepared, seq_len=T, batch_size=B, seed=1)
    assert not np.array_equal(a.indices(0, 0), a.indices(1, 0))
    assert np.array_equal(a.indices(1, 5), b.indices(1, 5))
    assert not np.array_equal(a.indices(0, 0), c.indices(0, 0))
    it = iter(a)
    for _ in range(len(a)):
        next(it)
    assert a.epoch == 0
    first_of_epoch1 = next(it)
    assert a.epoch == 1
    assert torch.equal(first_of_epoch1, b.windows.take(b.indices(1, 0)))


@pytest.mark.parametrize("world_size", [1, 2])
def test_resume_mid_epoch_gives_the_same_batches(prepared, world_size):
    for rank in range(world_size):
        kw = dict(seq_len=T, batch_size=B, seed=7, rank=rank, world_size=world_size)
        ref = TokenWindowLoader(prepared, **kw)
        steps = len(ref) + len(ref) // 2 + 3  # crosses into the second epoch after the resume point
        it = iter(ref)
        expected = [next(it) for _ in range(steps)]
        first = TokenWindowLoader(prepared, **kw)
        it = iter(first)
        head = [next(it) for _ in range(len(ref) // 2)]
        state = json.loads(json.dumps(first.state_dict()))  # plain ints survive JSON
        resumed = TokenWindowLoader(prepared, **kw)
        resumed.load_state_dict(state)
        it = iter(resumed)
        tail = [next(it) for _ in range(steps - len(head))]
        assert all(torch.equal(x, y) for x, y in zip(head + tail, expected))


def test_resume_with_other_settings_is_refused(prepared):
    state = TokenWindowLoader(prepared, seq_len=T, batch_size=B).state_dict()
    other = TokenWindowLoader(prepared, seq_len=T, batch_size=B * 2)
    with pytest.raises(ValueError, match="batch_size"):
        other.load_state_dict(state)


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_validation_covers_split_once(prepared, world_size):
    stream = _stream(prepared, "val")
    n = (len(stream) - 1) // T
    rows = []
    for rank in range(world_size):
        batches = list(iter_validation(prepared, T, 3, rank=rank, world_size=world_size))
        assert all(b.shape[0] == 3 for b in batches[:-1]) and 1 <= batches[-1].shape[0] <= 3
        rows += [r for b in batches for r in b]
    assert len(rows) == n
    got = sorted(tuple(r.tolist()) for r in rows)
    assert got == sorted(tuple(stream[i * T : i * T + T + 1].tolist()) for i in range(n))
    assert len(list(iter_validation(prepared, T, 3, max_batches=2))) == 2


def test_too_little_data_is_a_clear_error(prepared):
    with pytest.raises(ValueError, match="fewer than one global batch"):
        TokenWindowLoader(prepared, "val", seq_len=1024, batch_size=64)
    with pytest.raises(ValueError, match="not a prepared data directory"):
        TokenWindowLoader(prepared / "nope", seq_len=T, batch_size=B)
    with pytest.raises(ValueError, match="no split"):
        TokenWindowLoader(prepared, "test", seq_len=T, batch_size=B)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64, 1000, 4097])
def test_feistel_permutation_is_a_bijection(n):
    from cerebras_gpt.data.loader import FeistelPermutation

    perms = [FeistelPermutation(n, seed, epoch)(np.arange(n)) for seed, epoch in ((0, 0), (0, 1), (1, 0))]
    assert all(sorted(p.tolist()) == list(range(n)) for p in perms)
    if n >= 64:  # different keys give different orders, none of them the identity
        assert not np.array_equal(perms[0], perms[1]) and not np.array_equal(perms[0], perms[2])
        assert not np.array_equal(perms[0], np.arange(n))
