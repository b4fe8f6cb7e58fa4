"""Masks agree on two gloo ranks under torchrun, with DDP and with FSDP2 (DTensor parameters).

This file is also the torchrun worker (run as a script): each rank gets different batches, and
SET, RigL and GMP mask updates depend on weights and gradients; the masks must still agree.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from cerebras_gpt import GPT, GPTConfig
from cerebras_gpt.runtime import is_dtensor, local_tensor
from cerebras_gpt.sparsity import Sparsifier, SparsityConfig, canonical_name

WORKER = Path(__file__)


def worker(wrap: str, algorithm: str, out: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_name("debug-tiny", vocab_size=256))
    if wrap == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(model)
    else:
        from torch.distributed.fsdp import fully_shard

        for block in model.transformer.h:
            fully_shard(block)
        fully_shard(model)
        assert is_dtensor(model.transformer.h[0].mlp.c_fc.weight)
    cfg = SparsityConfig(sparsity=0.75, algorithm=algorithm, update_freq=2, init_method="magnitude", init_sparsity=0.25)
    sp = Sparsifier(cfg, model, 8)
    sp.apply(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(100 + rank)  # different batches per rank
    for step in range(1, 9):
        tokens = torch.randint(0, 256, (2, 17), generator=gen)
        loss = F.cross_entropy(model(tokens[:, :-1]).flatten(0, 1), tokens[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        sp.update(step, model, opt)
        opt.step()
        sp.apply(model, opt)
    # Masks agree: compare every rank's against rank 0's.
    for name, mask in sp.masks.items():
        ref = mask.to(torch.uint8).clone()
        dist.broadcast(ref, 0)
        assert torch.equal(ref.bool(), mask), f"rank {rank}: mask {name} differs from rank 0"
    # Local weights are zero where the (local shard of the) mask says so.
    for name, p in model.named_parameters():
        name = canonical_name(name)
        if name in sp.masks:
            assert not local_tensor(p.detach())[sp._pruned(name, p)].any(), name
    rep = sp.report()
    assert abs(rep["sparsity"] - 0.75) < 1e-6, rep["sparsity"]
    if rank == 0:
        torch.save({n: m for n, m in sp.masks.items()}, out)
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("wrap, algorithm", [("ddp", "set"), ("fsdp", "rigl"), ("fsdp", "gmp")])
def test_masks_agree_across_two_gloo_ranks(tmp_path, wrap, algorithm):
    out = tmp_path / "masks.pt"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        str(_free_port()),
        str(WORKER),
        wrap,
        algorithm,
        str(out),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    masks = torch.load(out)
    assert len(masks) == 8
    for mask in masks.values():
        assert int((~mask).sum()) == round(0.75 * mask.numel())


if __name__ == "__main__":
    worker(*sys.argv[1:4])
