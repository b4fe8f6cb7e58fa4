"""The CUDA paths: bf16 autocast, SDPA flash/efficient kernels, compiled training step, resume, KV-cache decoding.

Every test is marked ``cuda`` and skipped with the reason where there is no CUDA device (conftest.py);
`python bench/gpu_check.py` runs them on a GPU with ``pytest -m cuda``.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from cerebras_gpt import GPT, GPTConfig

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available())"),
]


def _model(name: str = "debug-medium", seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig.from_name(name)).to("cuda")


def _tokens(batch: int, seq: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 50257, (batch, seq), generator=torch.Generator().manual_seed(seed)).to("cuda")


def test_bf16_autocast_logits_close_to_fp32():
    model = _model().eval()
    x = _tokens(2, 256)
    with torch.no_grad():
        want = model(x)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            got = model(x)
    assert got.dtype == torch.bfloat16 and want.dtype == torch.float32
    # bf16 keeps 8 bits of mantissa (0.4% per rounding); six layers of them stay within a few percent.
    err = float((got.float() - want).norm() / want.norm())
    assert err < 0.05, f"bf16 logits differ from fp32 by {err:.3f} (relative norm)"


@pytest.mark.parametrize("backend", ["FLASH_ATTENTION", "EFFICIENT_ATTENTION"])
def test_sdpa_fused_kernels_run_and_match_math(backend):
    """Forcing each fused kernel fails loudly if it cannot run our attention call (shape, dtype, causal)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model = _model().to(torch.bfloat16).train()  # dropout is 0 in the presets: train() changes nothing else
    x = _tokens(2, 512)
    outputs = {}
    for name in ("MATH", backend):
        model.zero_grad(set_to_none=True)
        with sdpa_kernel(getattr(SDPBackend, name)):
            logits = model(x)
            F.cross_entropy(logits.float().flatten(0, 1)[:-1], x.flatten()[1:]).backward()
        outputs[name] = (logits.detach().float(), model.transformer.h[0].attn.c_attn.weight.grad.float().clone())
    (math_logits, math_grad), (fused_logits, fused_grad) = outputs["MATH"], outputs[backend]
    logits_err = float((fused_logits - math_logits).norm() / math_logits.norm())
    grad_err = float((fused_grad - math_grad).norm() / math_grad.norm())
    assert logits_err < 2e-2 and grad_err < 5e-2, f"{backend}: logits {logits_err:.2e}, grads {grad_err:.2e}"


def test_compiled_training_step_matches_eager():
    eager = _model("debug-small").train()
    compiled_model = copy.deepcopy(eager)
    compiled = torch.compile(compiled_model)
    x = _tokens(4, 128)
    losses = []
    for net in (eager, compiled):
        logits = net(x)
        loss = F.cross_entropy(logits.flatten(0, 1)[:-1], x.flatten()[1:])
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-4, atol=1e-5)
    for (name, p), q in zip(eager.named_parameters(), compiled_model.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-3, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}")


def test_compiled_train_loop_runs(tmp_path, pydoc_data, caplog):
    """`train(compile=True)` on CUDA: compiles (no eager fallback) and learns."""
    from cerebras_gpt.train.config import TrainConfig
    from cerebras_gpt.train.loop import train

    caplog.set_level("WARNING", logger="cerebras_gpt.train")
    result = train(
        TrainConfig(
            model="debug-small",
            data_dir=str(pydoc_data),
            steps=8,
            batch_size=8,
            seq_len=128,
            out_dir=str(tmp_path),
            compile=True,
            progress=False,
            tensorboard=False,
            eval_batches=2,
            warmup_steps=2,
            lr=3e-3,
        )
    )
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert result["steps"] == 8 and losses[-1] < losses[0]
    assert 0 < result["mfu"] < 1  # against the GPU's bf16 peak
    assert "torch.compile failed" not in caplog.text


@pytest.fixture(scope="module")
def pydoc_data(tmp_path_factory) -> Path:
    """A prepared corpus that needs no files beside the project (the device machine may have none)."""
    from cerebras_gpt.data.prepare import prepare

    out = tmp_path_factory.mktemp("pydoc")
    prepare(["builtin:pydoc"], out, val_fraction=0.05, workers=1, progress=False)
    return out


def test_resume_on_gpu_matches_uninterrupted_run(tmp_path, pydoc_data):
    """Stop at step 3, resume to 6 (bf16 autocast, fused AdamW, CUDA RNG): the same losses as one run.

    The math SDPA kernel is forced: the fused kernels' backward accumulates with atomics, so two runs of
    the same step may differ in the last bits, which is not what this test is about.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from cerebras_gpt.train.config import TrainConfig
    from cerebras_gpt.train.loop import train

    def cfg(out, **kw):
        return TrainConfig(
            model="debug-tiny",
            data_dir=str(pydoc_data),
            steps=6,
            batch_size=4,
            seq_len=64,
            out_dir=str(out),
            checkpoint_interval=3,
            progress=False,
            tensorboard=False,
            eval_batches=2,
            warmup_steps=2,
            device="cuda",
            **kw,
        )

    def losses(out):
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        return {r["step"]: r["loss"] for r in rows if "loss" in r}

    with sdpa_kernel(SDPBackend.MATH):
        full = train(cfg(tmp_path / "full"))
        first = train(cfg(tmp_path / "split", stop_at_step=3))
        second = train(cfg(tmp_path / "split"))
    assert first["steps"] == 3 and second["steps"] == 6 and second["tokens"] == full["tokens"]
    want, got = losses(tmp_path / "full"), losses(tmp_path / "split")
    assert sorted(got) == sorted(want) == [1, 2, 3, 4, 5, 6]
    for step in want:
        assert got[step] == pytest.approx(want[step], rel=1e-5), f"step {step}"
    state = torch.load(Path(second["checkpoint"]) / "train_state.pt", map_location="cpu", weights_only=False)
    assert "cuda" in state["rng"]  # the CUDA generators are saved with the rest


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cache_decoding_matches_no_cache(dtype):
    from cerebras_gpt.generation import generate_ids

    model = _model("debug-small").to(dtype).eval()
    prompts = _tokens(3, 12).tolist()
    prompts[1] = prompts[1][:7]  # ragged rows: per-row positions and the cache mask
    cached = generate_ids(model, prompts, max_new_tokens=16, temperature=0, stop_at_eos=False)
    for prompt, tokens in zip(prompts, cached):
        seq = list(prompt)
        with torch.no_grad():
            for want in tokens:
                logits = model(torch.tensor([seq], device="cuda"))[0, -1].float()
                top2 = logits.topk(2).values
                # A tie within bf16 rounding may go either way; otherwise the argmax must agree.
                if float(top2[0] - top2[1]) > (1e-4 if dtype == torch.float32 else 1e-1):
                    assert int(logits.argmax()) == want
                seq.append(want)


def test_compiled_decoding_as_a_cuda_graph_gives_the_eager_tokens():
    """`compile=True` on CUDA (torch.compile's reduce-overhead mode: one CUDA graph a step) decodes the
    tokens the eager step decodes, ragged rows included, twice (the graph replayed), without failing over."""
    from cerebras_gpt import compiled_decode
    from cerebras_gpt.generation import generate_ids

    model = _model("debug-small").eval()
    prompts = _tokens(3, 12).tolist()
    prompts[1] = prompts[1][:7]
    eager = generate_ids(model, prompts, max_new_tokens=16, temperature=0, stop_at_eos=False)
    for _ in range(2):
        assert generate_ids(model, prompts, max_new_tokens=16, temperature=0, stop_at_eos=False, compile=True) == eager
    assert model not in compiled_decode._failed
    (step,) = compiled_decode._entry(model).steps.values()
    assert step.on_cuda
