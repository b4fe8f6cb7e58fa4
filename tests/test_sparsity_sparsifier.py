"""Sparsifier against a hand-written AdamW loop: exact sparsity, zero state, schedules, resume, FLOPs."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from cerebras_gpt import GPT, GPTConfig
from cerebras_gpt.sparsity import (
    Sparsifier,
    SparsityConfig,
    drop_fraction_at,
    gmp_sparsity,
    measure_sparsity,
)

STEPS = 12


def _batch(step: int, config: GPTConfig) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 + step)
    return torch.randint(0, 512, (2, 33), generator=g)  # a small slice of the vocab learns fast


def _setup(cfg: SparsityConfig, total: int = STEPS, seed: int = 0):
    torch.manual_seed(seed)
    model = GPT(GPTConfig.from_name("debug-tiny", vocab_size=512))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)
    sp = Sparsifier(cfg, model, total)
    sp.apply(model)
    return model, opt, sp


def _train(model, opt, sp, start: int, stop: int, check=None) -> list[float]:
    """Steps start+1..stop in the order the training loop uses; ``check(step)`` after each."""
    losses = []
    for step in range(start + 1, stop + 1):
        tokens = _batch(step, model.config)
        logits = model(tokens[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        sp.update(step, model, opt)
        opt.step()
        sp.apply(model, opt)
        losses.append(loss.item())
        if check is not None:
            check(step)
    return losses


def _assert_masked_zero(model, opt, sp) -> None:
    params = dict(model.named_parameters())
    for name, mask in sp.masks.items():
        p = params[name]
        assert torch.equal(p.detach()[~mask], torch.zeros_like(p[~mask])), name
        for key in ("exp_avg", "exp_avg_sq"):
            if p in opt.state:
                assert not opt.state[p][key][~mask].any(), f"{name} {key}"


@pytest.mark.parametrize("algorithm", ["static", "set", "rigl"])
@pytest.mark.parametrize("scope", ["per_param", "global"])
def test_exact_sparsity_and_zero_state_through_training(algorithm, scope):
    cfg = SparsityConfig(sparsity=0.75, algorithm=algorithm, scope=scope, update_freq=3, drop_fraction=0.3)
    model, opt, sp = _setup(cfg)
    sizes = {n: m.numel() for n, m in sp.masks.items()}
    total = sum(sizes.values())

    def check(step):
        _assert_masked_zero(model, opt, sp)
        counts = {n: int((~m).sum()) for n, m in sp.masks.items()}
        if scope == "per_param":
            assert counts == {n: round(0.75 * sizes[n]) for n in sizes}
        else:
            assert sum(counts.values()) == round(0.75 * total)

    before = {n: m.clone() for n, m in sp.masks.items()}
    _train(model, opt, sp, 0, STEPS, check)
    moved = any(not torch.equal(before[n], sp.masks[n]) for n in before)
    assert moved == (algorithm != "static")
    # Every selected matrix really is that sparse in the weights themselves.
    if scope == "per_param":
        for name, s in measure_sparsity(model).items():
            assert s >= 0.75 - 1e-9, name
    rep = sp.report()
    assert rep["sparsity"] == pytest.approx(0.75, abs=1e-6)


def test_selection_defaults_and_unwrapped_names():
    model, _, sp = _setup(SparsityConfig(sparsity=0.5))
    assert sorted(sp.masks) == sorted(
        f"transformer.h.{i}.{m}.weight"
        for i in range(2)
        for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
    )
    # A DDP-style wrapper prefixes names with `module.`; the same masks are found.
    wrapper = torch.nn.Module()
    wrapper.module = model
    sp.apply(wrapper)


def test_per_param_targets():
    cfg = SparsityConfig(sparsity=0.5, param_sparsity={"*mlp.c_fc.weight": 0.9})
    _, _, sp = _setup(cfg)
    for name, m in sp.masks.items():
        want = 0.9 if name.endswith("mlp.c_fc.weight") else 0.5
        assert int((~m).sum()) == round(want * m.numel())


def test_magnitude_init_prunes_smallest():
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_name("debug-tiny", vocab_size=512))
    w = model.transformer.h[0].mlp.c_fc.weight.detach().clone()
    sp = Sparsifier(SparsityConfig(sparsity=0.6, init_method="magnitude"), model, 10)
    mask = sp.masks["transformer.h.0.mlp.c_fc.weight"]
    assert w.abs()[mask].min() >= w.abs()[~mask].max()


def test_gmp_follows_cubic_schedule():
    cfg = SparsityConfig(sparsity=0.8, algorithm="gmp", init_sparsity=0.2, begin_step=2, end_step=10, update_freq=2)
    model, opt, sp = _setup(cfg, total=STEPS)
    name = "transformer.h.1.mlp.c_proj.weight"
    n = sp.masks[name].numel()
    assert int((~sp.masks[name]).sum()) == round(0.2 * n)
    seen = {}

    def check(step):
        _assert_masked_zero(model, opt, sp)
        seen[step] = int((~sp.masks[name]).sum())

    previous = {}
    _train(model, opt, sp, 0, STEPS, check)
    for step in range(1, STEPS + 1):
        due = 2 <= step <= 10 and step % 2 == 0
        if due:
            assert seen[step] == round(gmp_sparsity(step, 0.2, 0.8, 2, 10) * n), step
        previous[step] = seen[step]
    assert seen[1] == round(0.2 * n) and seen[11] == seen[12] == round(0.8 * n)
    # Pruned stays pruned: zero counts never fall.
    assert all(previous[s] <= previous[s + 1] for s in range(1, STEPS))
    assert gmp_sparsity(2, 0.2, 0.8, 2, 10) == pytest.approx(0.2) and gmp_sparsity(
        10, 0.2, 0.8, 2, 10
    ) == pytest.approx(0.8)
    assert gmp_sparsity(6, 0.2, 0.8, 2, 10) == pytest.approx(0.8 - 0.6 * 0.5**3)


def test_drop_fraction_schedule():
    assert drop_fraction_at(0, 0.3, 100, "cosine") == pytest.approx(0.3)
    assert drop_fraction_at(50, 0.3, 100, "cosine") == pytest.approx(0.15)
    assert drop_fraction_at(100, 0.3, 100, "cosine") == pytest.approx(0.0, abs=1e-12)
    assert drop_fraction_at(70, 0.3, 100, "constant") == 0.3


def _one_update(algorithm: str, grad_fn, seed: int = 0):
    """One drop/grow update on a model whose gradient we choose; returns (old, new masks, weights)."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig.from_name("debug-tiny", vocab_size=512))
    cfg = SparsityConfig(
        sparsity=0.75,
        algorithm=algorithm,
        update_freq=1,
        drop_fraction=0.25,
        drop_fraction_schedule="constant",
        param_filter=["*mlp.c_fc.weight"],
    )
    sp = Sparsifier(cfg, model, 100)
    sp.apply(model)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    p = model.transformer.h[0].mlp.c_fc.weight
    old = sp.masks["transformer.h.0.mlp.c_fc.weight"].clone()
    p.grad = grad_fn(old)
    weight_before = p.detach().clone()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    assert sp.update(1, model, opt)
    return old, sp.masks["transformer.h.0.mlp.c_fc.weight"], weight_before, p


def test_rigl_regrows_where_gradient_is_largest():
    g = torch.Generator().manual_seed(5)
    holder = {}

    def grad_fn(mask):
        grad = torch.rand(mask.shape, generator=g) * 1e-3
        # Large gradients on a chosen set of masked entries: RigL must regrow exactly those.
        masked = (~mask).flatten().nonzero().flatten()
        chosen = masked[torch.randperm(masked.numel(), generator=g)[: round(0.25 * int(mask.sum()))]]
        flat = grad.flatten()
        flat[chosen] = 10.0
        holder["chosen"] = chosen
        return flat.view(mask.shape)

    old, new, before, p = _one_update("rigl", grad_fn)
    k = round(0.25 * int(old.sum()))
    grown = (new & ~old).flatten().nonzero().flatten()
    assert sorted(grown.tolist()) == sorted(holder["chosen"].tolist())
    assert int(new.sum()) == int(old.sum())
    # Dropped are the smallest active magnitudes.
    dropped = old & ~new
    assert int(dropped.sum()) == k
    assert before.abs()[dropped].max() <= before.abs()[old & new].min()
    # Regrown weights start at zero, and the masked gradient is zero.
    assert not p.detach()[new & ~old].any()
    assert not p.grad[~new].any()


def test_set_regrows_at_random_not_by_gradient():
    holder = {}

    def grad_fn(mask):
        grad = torch.zeros(mask.shape)
        masked = (~mask).flatten().nonzero().flatten()[: round(0.25 * int(mask.sum()))]
        grad.view(-1)[masked] = 10.0
        holder["chosen"] = set(masked.tolist())
        return grad

    old, new, _, p = _one_update("set", grad_fn)
    grown = set((new & ~old).flatten().nonzero().flatten().tolist())
    assert int(new.sum()) == int(old.sum()) and len(grown) > 0
    # Random regrowth (the just-dropped are candidates too) rarely lands on the large gradients.
    assert len(grown & holder["chosen"]) < len(grown) // 2
    assert not p.detach()[new & ~old].any()


@pytest.mark.parametrize("algorithm", ["static", "gmp", "set", "rigl"])
def test_resume_is_exact(algorithm):
    cfg = SparsityConfig(sparsity=0.75, algorithm=algorithm, update_freq=2, end_step=8, init_sparsity=0.25)
    model, opt, sp = _setup(cfg)
    full_losses = _train(model, opt, sp, 0, STEPS)
    final_masks = {n: m.clone() for n, m in sp.masks.items()}

    model2, opt2, sp2 = _setup(cfg)
    _train(model2, opt2, sp2, 0, 5)
    saved = (copy.deepcopy(model2.state_dict()), copy.deepcopy(opt2.state_dict()), sp2.state_dict())
    # A fresh process: new objects, different init, then the checkpoint.
    model3, opt3, sp3 = _setup(cfg, seed=123)
    model3.load_state_dict(saved[0])
    opt3.load_state_dict(saved[1])
    sp3.load_state_dict(saved[2])
    sp3.apply(model3)
    resumed = _train(model3, opt3, sp3, 5, STEPS)
    assert resumed == full_losses[5:]
    for name, m in final_masks.items():
        assert torch.equal(sp3.masks[name], m), name
    assert torch.equal(model3.transformer.h[1].mlp.c_fc.weight, model.transformer.h[1].mlp.c_fc.weight)


def test_state_dict_rejects_other_model():
    _, _, sp = _setup(SparsityConfig(sparsity=0.5))
    state = sp.state_dict()
    _, _, other = _setup(SparsityConfig(sparsity=0.5, param_filter=["*mlp.c_fc.weight"]))
    with pytest.raises(ValueError, match="param_filter"):
        other.load_state_dict(state)


def test_densify_trains_the_zeros():
    model, opt, sp = _setup(SparsityConfig(sparsity=0.75))
    _train(model, opt, sp, 0, 4)
    zero_before = {n: (p.detach() == 0) for n, p in model.named_parameters() if n in sp.masks}
    # Phase 2: same model, a densify config: no masks, the optimizer updates every weight.
    dense = Sparsifier(SparsityConfig(sparsity=0.75, densify=True), model, STEPS)
    assert not dense.enabled and dense.state_dict() == {"enabled": False}
    dense.load_state_dict(sp.state_dict())  # ignored
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    _train(model, opt, dense, 4, 8)
    for name, p in model.named_parameters():
        if name in zero_before:
            assert (p.detach()[zero_before[name]] != 0).float().mean() > 0.9, name


def test_report_counts_flops_as_cerebras():
    model, _, sp = _setup(SparsityConfig(sparsity=0.5))
    rep = sp.report(seq_len=128)
    zeros = sum(v["params"] - v["nonzero"] for v in rep["layers"].values())
    assert rep["flops_saved_per_token"] == 6 * zeros
    assert rep["dense_flops_per_token"] == model.config.flops_per_token(128)
    assert all(v["sparsity"] == pytest.approx(0.5, abs=1e-3) for v in rep["layers"].values())
    # SPDF (arXiv 2303.10464): 75% sparse GPT-3 XL (1.3B) pre-training takes 2.5x fewer FLOPs.
    with torch.device("meta"):
        big = GPT(GPTConfig.from_name("cerebras-gpt-1.3b"), init_weights=False)
    # Only the counting matters here; masks of the meta model are built from shapes.
    zeros = sum(
        round(0.75 * p.numel())
        for n, p in big.named_parameters()
        if n.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight"))
    )
    dense = big.config.flops_per_token(2048)
    assert dense / (dense - 6 * zeros) == pytest.approx(2.5, abs=0.05)


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(sparsity=1.0), "sparsity=1.0"),
        (dict(sparsity=0.5, algorithm="magic"), "algorithm"),
        (dict(sparsity=0.5, scope="global", param_sparsity={"*c_fc*": 0.9}), "per_param"),
        (dict(sparsity=0.5, algorithm="gmp", init_sparsity=0.7), "GMP only prunes"),
        (dict(sparsity=0.5, update_freq=0), "update_freq"),
    ],
)
def test_config_errors_name_the_value(bad, match):
    with pytest.raises(ValueError, match=match):
        SparsityConfig(**bad)


def test_filter_errors():
    model = GPT(GPTConfig.from_name("debug-tiny", vocab_size=512))
    with pytest.raises(ValueError, match="matches no parameter"):
        Sparsifier(SparsityConfig(sparsity=0.5, param_filter=["*nothing*"]), model, 10)
    with pytest.raises(ValueError, match="2-D weights only"):
        Sparsifier(SparsityConfig(sparsity=0.5, param_filter=["*ln_1*"]), model, 10)


def test_off_is_a_no_op():
    model, opt, sp = _setup(SparsityConfig())
    assert not sp.enabled and sp.report()["sparsity"] == 0.0
    before = copy.deepcopy(model.state_dict())
    sp.apply(model, opt)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert math.isclose(sum(measure_sparsity(model).values()), 0.0)


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "configs" / "sparsity").glob("*.yaml")))
def test_shipped_configs_are_valid(path):
    import yaml

    section = yaml.safe_load(path.read_text())["sparsity"]
    cfg = SparsityConfig(**section)
    assert cfg.enabled != cfg.densify


@pytest.mark.parametrize("algorithm", ["static", "gmp", "set", "rigl"])
def test_q_k_v_each_at_target_inside_packed_c_attn(algorithm):
    # The ModelZoo sparsifies proj_q/k/v_dense_layer as three weights (facts §5), so each of Q, K and V holds
    # the target inside our packed c_attn, and SET/RigL cannot move density between them.
    cfg = SparsityConfig(
        sparsity=0.6,
        algorithm=algorithm,
        update_freq=2,
        stop_step=10,
        end_step=8,
        init_method="magnitude" if algorithm == "gmp" else "random",
        drop_fraction=0.5,
        drop_fraction_schedule="constant",
    )
    model, opt, sp = _setup(cfg)
    with torch.no_grad():  # scale Q up so a mask over the whole c_attn would keep mostly Q
        for block in model.transformer.h:
            block.attn.c_attn.weight[: model.config.n_embd] *= 50.0

    def check(step):
        for layer in range(model.config.n_layer):
            mask = sp.masks[f"transformer.h.{layer}.attn.c_attn.weight"]
            assert mask.shape[0] == 3 * model.config.n_embd
            # GMP: the schedule's sparsity at the last mask update (its initial sparsity before any).
            target = sp.sparsity_at(max(sp.last_update_step, 0), f"transformer.h.{layer}.attn.c_attn.weight")
            for part in mask.chunk(3, 0):  # Q, K, V
                assert 1 - part.float().mean().item() == pytest.approx(target, abs=1 / part.numel())

    check(0)
    _train(model, opt, sp, 0, 8, check)
    assert sp.last_update_step > 0 or algorithm == "static"


def test_modelzoo_stop_step_and_half_period():
    model = GPT(GPTConfig.from_name("debug-tiny", vocab_size=512))
    # The ModelZoo's sparse GPT-3 configs: update stop and drop-fraction half_period 3,584 = 75% of 4,778 steps
    # rounded up (int(0.75 * 4778) = 3583 would be one short).
    sp = Sparsifier(SparsityConfig(sparsity=0.5, algorithm="rigl"), model, 4778)
    assert sp.stop_step == 3584 and sp.half_period == 3584
    sp = Sparsifier(SparsityConfig(sparsity=0.5, algorithm="set", drop_fraction_half_period=1000), model, 4778)
    assert sp.stop_step == 3584 and sp.half_period == 1000
    with pytest.raises(ValueError, match="drop_fraction_half_period=0"):
        SparsityConfig(sparsity=0.5, drop_fraction_half_period=0)
