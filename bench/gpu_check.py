"""One prepared GPU check: proves the CUDA paths and measures them against the peers, within a time budget.

Written to run unattended, once, on a freshly lent H100/H200 (and tested end to end on the CPU, where the
GPU parts are skipped with the reason): one command, one table, one JSON file.

    python bench/gpu_check.py [--budget-min 8] [--out gpu_check.json] [--quick]

Sections, each with its own slice of the budget (time a section leaves unused passes to the next), each
run in its own process with a hard timeout, so a failure or hang is recorded (short) and the check goes on:

1. ``environment``: GPU name and memory, driver and CUDA versions, torch/transformers versions, and
   whether the installed torch is a CUDA build where ``nvidia-smi -L`` lists a GPU (the test ``make setup``
   uses to pick ``torch`` over the CPU-only ``torch==2.13.0``).
2. ``gpu_tests``: the ``cuda``-marked tests (``pytest -m cuda``): pass/fail/skip counts and the failures.
3. ``train``: training step throughput, ours vs transformers ``GPT2LMHeadModel`` of the same shape (bf16
   autocast, SDPA, fused AdamW, per-block ``torch.compile`` for both), at the 111M and 1.3B shapes, seq 2048,
   each at the largest micro-batch that fits (searched downward on out-of-memory); tokens/s and MFU
   against the GPU's bf16 dense peak (datasheet for known GPUs, else a measured large GEMM).
4. ``decode_serve``: greedy decode throughput at batch 1 and 16 vs transformers ``generate()`` (same
   weights, bf16), and ``bench/serve.py`` at 1/16/64 clients on the GPU.
5. ``distributed``: ``torchrun`` training with DDP and FSDP2 at world size 1 (NCCL on CUDA; gloo on CPU),
   and at world size = GPU count where there are several.

On a CPU the measured parts use the debug presets (seconds) and the GPU-only parts say why they were
skipped; ``--quick`` does the same on a GPU (a smoke run of the script itself).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# Share of the budget of each section, in the order they run.
# On an H100/H200 at the default 8 minutes: ~5 s, ~90 s (two compiles), ~210 s (four compiles), ~70 s, ~60 s.
SECTIONS: dict[str, float] = {
    "environment": 0.02,
    "gpu_tests": 0.21,
    "train": 0.44,
    "decode_serve": 0.17,
    "distributed": 0.16,
}
GOALS = {"train_mfu_1.3B": 0.50, "train_speedup": 1.1, "decode_speedup": 1.3}


# ----------------------------------------------------------------------------- helpers
def short_error(exc: BaseException | str, limit: int = 300) -> str:
    """One line, at most ``limit`` characters: what a table cell and a JSON field can hold."""
    text = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def tail(text: str, lines: int = 15) -> str:
    return "\n".join((text or "").strip().splitlines()[-lines:])


def child_env() -> dict[str, str]:
    """The environment for child processes: this checkout's src/ first on the path."""
    path = [str(ROOT / "src")] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
    if "PYTORCH_ALLOC_CONF" not in env and "PYTORCH_CUDA_ALLOC_CONF" not in env:
        # Growable segments: the micro-batch search is not cut short by fragmentation from earlier tries.
        env["PYTORCH_CUDA_ALLOC_CONF"] = "expandable_segments:True"
    return env


class Section:
    """A section's result, written to its JSON file after every change, so a killed section keeps its data."""

    def __init__(self, path: Path, deadline: float) -> None:
        self.path, self.deadline = path, deadline
        self.data: dict[str, Any] = {"status": "ok"}

    def left(self) -> float:
        return self.deadline - time.time()

    def set(self, **values: Any) -> None:
        self.data.update(values)
        self.save()

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=str))
        os.replace(tmp, self.path)


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def no_cuda_reason() -> str:
    import torch

    if torch.version.cuda is None:
        return f"no CUDA device: torch {torch.__version__} is a CPU-only build"
    return "no CUDA device: torch.cuda.is_available() is False"


def free_cuda_memory(reset_compiled: bool = False) -> None:
    import torch

    if reset_compiled:  # compiled graphs of a model that is gone
        torch._dynamo.reset()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


# ----------------------------------------------------------------------------- 1. environment
def nccl_version() -> str | None:
    import torch

    try:
        v = torch.cuda.nccl.version()  # a tuple in recent torch, an int in older ones
    except Exception:  # noqa: BLE001 - a build without NCCL
        return None
    return ".".join(map(str, v)) if isinstance(v, tuple) else str(v)


def section_environment(sec: Section, quick: bool) -> None:
    import torch

    nvidia_smi = shutil.which("nvidia-smi")
    smi_lists_gpu = False
    smi: list[dict[str, str]] = []
    if nvidia_smi:
        try:
            smi_lists_gpu = subprocess.run([nvidia_smi, "-L"], capture_output=True, timeout=30).returncode == 0
            out = subprocess.run(
                [nvidia_smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout
            smi = [
                dict(zip(("name", "driver", "memory"), (f.strip() for f in line.split(","))))
                for line in out.splitlines()
                if line.strip()
            ]
        except (OSError, subprocess.TimeoutExpired) as e:
            sec.set(nvidia_smi_error=short_error(e))
    cuda_build = torch.version.cuda is not None
    try:
        import transformers

        transformers_version = transformers.__version__
    except ImportError:
        transformers_version = None
    sec.set(
        python=platform.python_version(),
        platform=platform.platform(),
        cpu_count=os.cpu_count(),
        torch=torch.__version__,
        torch_cuda_build=cuda_build,
        torch_cuda_version=torch.version.cuda,
        transformers=transformers_version,
        nvidia_smi=nvidia_smi,
        nvidia_smi_lists_gpu=smi_lists_gpu,
        gpus_nvidia_smi=smi,
        driver=smi[0]["driver"] if smi else None,
        make_setup_installs="torch (CUDA build)" if smi_lists_gpu else "torch==2.13.0 (CPU build)",
    )
    if torch.cuda.is_available():
        from cerebras_gpt.train.metrics import peak_flops

        device = torch.device("cuda", 0)
        props = torch.cuda.get_device_properties(device)
        peak, source = peak_flops(device, torch.bfloat16)
        sec.set(
            cuda_available=True,
            gpu_count=torch.cuda.device_count(),
            gpu=props.name,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            capability=f"{props.major}.{props.minor}",
            bf16_supported=torch.cuda.is_bf16_supported(),
            cudnn=torch.backends.cudnn.version(),
            nccl=nccl_version(),
            bf16_peak_tflops=peak / 1e12,
            peak_source=source,
        )
    else:
        sec.set(cuda_available=False, gpu_count=0, gpu_skipped=no_cuda_reason())
    if smi_lists_gpu and not cuda_build:
        sec.set(
            status="failed",
            reason=f"nvidia-smi lists a GPU but torch {torch.__version__} is a CPU build: "
            "make setup's CUDA branch did not install the CUDA torch; run make setup "
            "again, or pip install --force-reinstall torch from an index with CUDA builds",
        )
    elif smi_lists_gpu and not torch.cuda.is_available():
        sec.set(
            status="failed",
            reason=f"torch {torch.__version__} is a CUDA {torch.version.cuda} build but sees "
            "no GPU: check the driver (nvidia-smi) against the CUDA version",
        )
    elif not smi_lists_gpu:
        sec.set(reason="no NVIDIA GPU (nvidia-smi lists none): make setup installs the CPU build, as expected")


# ----------------------------------------------------------------------------- 2. gpu_tests
def cuda_test_files() -> list[str]:
    """Test files that hold ``cuda``-marked tests (collecting only these keeps the run short)."""
    return sorted(
        str(p.relative_to(ROOT))
        for p in (ROOT / "tests").rglob("test_*.py")
        if "mark.cuda" in p.read_text(encoding="utf-8")
    )


def section_gpu_tests(sec: Section, quick: bool) -> None:
    files = cuda_test_files()
    if not files:
        sec.set(status="failed", reason="no test file under tests/ carries @pytest.mark.cuda")
        return
    with tempfile.TemporaryDirectory() as d:
        report = Path(d) / "junit.xml"
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            *files,
            "-m",
            "cuda",
            "-q",
            "-p",
            "no:cacheprovider",
            "-rs",
            f"--junitxml={report}",
        ]
        sec.set(command=" ".join(cmd[1:]), files=files)
        timeout = max(10.0, sec.left() - 5)
        try:
            proc = subprocess.run(cmd, cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
            sec.set(status="failed", reason=f"pytest ran past its {timeout:.0f} s slice", output_tail=tail(out))
            return
        sec.set(returncode=proc.returncode, output_tail=tail(proc.stdout + proc.stderr, 25))
        if not report.exists():
            sec.set(
                status="failed",
                reason=short_error(
                    f"pytest wrote no report (rc {proc.returncode}): {tail(proc.stdout + proc.stderr, 3)}"
                ),
            )
            return
        counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
        failures, skip_reasons = [], set()
        for case in ET.parse(report).getroot().iter("testcase"):
            name = f"{case.get('classname', '')}::{case.get('name', '')}"
            if case.find("failure") is not None or case.find("error") is not None:
                kind = "failed" if case.find("failure") is not None else "errors"
                counts[kind] += 1
                node = case.find("failure") if kind == "failed" else case.find("error")
                failures.append(f"{name}: {short_error(node.get('message') or node.text or '', 200)}")
            elif case.find("skipped") is not None:
                counts["skipped"] += 1
                skip_reasons.add(short_error(case.find("skipped").get("message") or "", 150))
            else:
                counts["passed"] += 1
    sec.set(**counts, failures=failures, skip_reasons=sorted(skip_reasons))
    if counts["failed"] or counts["errors"]:
        sec.set(status="failed", reason=f"{counts['failed'] + counts['errors']} cuda test(s) failed")
    elif not cuda_available():
        sec.set(status="skipped", reason=f"{no_cuda_reason()}: all {counts['skipped']} cuda tests skipped")
    elif counts["passed"] == 0:
        sec.set(status="failed", reason="a CUDA device is present but no cuda test passed")


# ----------------------------------------------------------------------------- 3. train
def hf_model_from(config, device, dtype=None):
    """transformers' GPT2LMHeadModel of the same shape as our ``config`` (random init), SDPA attention."""
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config

    from cerebras_gpt.hf import config_to_hf

    fields = config_to_hf(config, tie_word_embeddings=True, dtype=torch.float32)
    fields.pop("cerebras_gpt")
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(GPT2Config(**fields), attn_implementation="sdpa")
    return model if dtype is None else model.to(dtype)


def build_trainer(impl: str, preset: str, device, compile_blocks: bool) -> tuple[tuple[Any, Any], Callable, Any]:
    """((model, optimizer), one training step on a batch (B, T+1), our GPTConfig) for ours/transformers."""
    import torch
    import torch.nn.functional as F

    from cerebras_gpt import GPT, GPTConfig
    from cerebras_gpt.train.optim import build_optimizer

    torch.manual_seed(0)
    config = GPTConfig.from_name(preset)
    cuda = device.type == "cuda"
    if impl == "ours":
        with torch.device(device):
            model = GPT(config)
        optimizer = build_optimizer(model, config, 1e-4, (0.9, 0.95), 1e-8, 0.1)  # fused on CUDA
        blocks = model.transformer.h
    else:
        model = hf_model_from(config, device)
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, fused=True if cuda else None
        )
        blocks = model.transformer.h
    model.train()
    if compile_blocks:  # per-block: one compiled graph serves every layer, so compiling takes seconds
        for block in blocks:
            block.compile()
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else contextlib.nullcontext

    def step(batch) -> None:
        optimizer.zero_grad(set_to_none=True)  # a step cut short by an OOM may have left some behind
        x, y = batch[:, :-1], batch[:, 1:]
        with autocast():
            logits = model(x) if impl == "ours" else model(input_ids=x).logits
        F.cross_entropy(logits.float().flatten(0, 1), y.flatten()).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return (model, optimizer), step, config


def time_steps(step, batch, warmup: int, steps: int, device) -> float:
    """Seconds per step (mean over ``steps`` after ``warmup``)."""
    import torch

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        step(batch)
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step(batch)
    sync()
    return (time.perf_counter() - start) / steps


def fits(step, batch, device) -> tuple[bool, str | None]:
    """Whether steps run at this batch; other errors are raised. Memory is freed after an OOM.

    Two steps: AdamW's moments exist from the first step's end on, so only the second shows the peak.
    """
    oom = None
    try:
        step(batch)
        step(batch)
        if device.type == "cuda":
            import torch

            torch.cuda.synchronize()
    except Exception as e:  # noqa: BLE001 - OOM is told apart below; anything else propagates
        if not is_oom(e):
            raise
        oom = short_error(e, 120)
    # Outside the except block: the traceback (and the activations its frames hold) is gone.
    free_cuda_memory()
    return oom is None, oom


def bench_train_impl(
    impl: str,
    preset: str,
    seq: int,
    candidates: list[int],
    device,
    compile_blocks: bool,
    warmup: int,
    steps: int,
    peak: float,
) -> dict[str, Any]:
    """Tokens/s and MFU of ``impl`` at the largest micro-batch of ``candidates`` (descending) that fits."""
    import torch

    trainer, step, config = build_trainer(impl, preset, device, compile_blocks=False)
    gen = torch.Generator().manual_seed(0)
    tried: list[dict[str, Any]] = []
    fitting = None
    for i, b in enumerate(candidates):  # eager search downward (no recompiles per size)
        batch = torch.randint(0, config.vocab_size, (b, seq + 1), generator=gen).to(device)
        ok, oom = fits(step, batch, device)
        tried.append({"micro_batch": b, "fits": ok, **({"error": oom} if oom else {})})
        del batch
        if ok:
            fitting = i
            break
    if fitting is None:
        raise RuntimeError(f"no micro-batch in {candidates} fits at seq {seq}")
    row: dict[str, Any] = {"search": tried, "compiled": False}
    blocks = trainer[0].transformer.h
    if compile_blocks:
        for block in blocks:
            block.compile()
    for b in candidates[fitting:]:  # compiled memory may differ from eager: step down again on OOM
        batch = torch.randint(0, config.vocab_size, (b, seq + 1), generator=gen).to(device)
        oom = None
        try:
            if compile_blocks and not row["compiled"] and "compile_error" not in row:
                compile_start = time.perf_counter()
                try:
                    step(batch)  # the compile happens here
                    row.update(compiled=True, compile_s=time.perf_counter() - compile_start)
                except Exception as e:  # noqa: BLE001 - recorded; the impl is then timed eagerly
                    if is_oom(e):
                        raise
                    row["compile_error"] = short_error(e, 200)
                    trainer[1].zero_grad(set_to_none=True)  # a failed step may have left gradients behind
                    for block in blocks:  # back to eager: nn.Module.compile is undone by dropping the compiled call
                        block._compiled_call_impl = None
            seconds = time_steps(step, batch, warmup, steps, device)
        except Exception as e:  # noqa: BLE001 - OOM steps down, anything else propagates
            if not is_oom(e):
                raise
            oom = short_error(e, 120)
        if oom is not None:
            trainer[1].zero_grad(set_to_none=True)
            del batch
            free_cuda_memory()
            tried.append({"micro_batch": b, "fits": False, "compiled": row["compiled"], "error": oom})
            continue
        tok_s = b * seq / seconds
        row.update(micro_batch=b, step_s=seconds, tokens_per_s=tok_s, mfu=config.flops_per_token(seq) * tok_s / peak)
        if device.type == "cuda":
            row["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        return row
    raise RuntimeError(f"out of memory at every micro-batch from {candidates[fitting]} down: {tried[-1]}")


def section_train(sec: Section, quick: bool) -> None:
    import torch

    from cerebras_gpt.train.metrics import peak_flops

    cuda = cuda_available()
    device = torch.device("cuda" if cuda else "cpu")
    peak, source = peak_flops(device, torch.bfloat16 if cuda else torch.float32)
    sec.set(
        device=str(device),
        precision="bf16 autocast" if cuda else "fp32",
        peak_tflops=peak / 1e12,
        peak_source=source,
        shapes={},
    )
    if cuda and not quick:
        shapes = [
            ("Cerebras-GPT-111M", 2048, [64, 48, 32, 24, 16, 8, 4, 2, 1], 2, 6),
            ("Cerebras-GPT-1.3B", 2048, [32, 24, 16, 12, 8, 6, 4, 2, 1], 2, 4),
        ]
    else:
        shapes = [("debug-tiny", 64, [8, 4], 1, 3)] if cuda else [("debug-tiny", 64, [4], 1, 2)]
        sec.set(
            reason=(
                "--quick: debug shape only"
                if cuda
                else f"{no_cuda_reason()}: the 111M and 1.3B shapes at seq 2048 (bf16, compile) need a GPU; "
                "measured the debug shape in fp32 instead"
            )
        )
        if not cuda:
            sec.set(gpu_skipped=sec.data["reason"])
    compile_blocks = cuda  # inductor on the CPU takes minutes; the CUDA path is what this check proves
    results: dict[str, Any] = {}
    for preset, seq, candidates, warmup, steps in shapes:
        key = f"{preset}@{seq}"
        results[key] = {}
        for impl in ("ours", "transformers"):
            if sec.left() < (30 if cuda and not quick else 3):
                results[key][impl] = {"status": "skipped", "reason": "out of time in this section's slice"}
                sec.set(shapes=results, status="partial")
                continue
            try:
                row = bench_train_impl(impl, preset, seq, candidates, device, compile_blocks, warmup, steps, peak)
                results[key][impl] = {"status": "ok", **row}
            except Exception as e:  # noqa: BLE001 - recorded, the next shape still runs
                results[key][impl] = {
                    "status": "failed",
                    "reason": short_error(e),
                    "traceback": tail(traceback.format_exc(), 6),
                }
                sec.set(status="partial")
            free_cuda_memory(reset_compiled=True)  # the model, its optimizer and its graphs go before the next
            if (
                results[key].get("ours", {}).get("status") == "ok"
                and results[key].get("transformers", {}).get("status") == "ok"
            ):
                results[key]["speedup"] = (
                    results[key]["ours"]["tokens_per_s"] / results[key]["transformers"]["tokens_per_s"]
                )
            sec.set(shapes=results)


# ----------------------------------------------------------------------------- 4. decode and serve
def section_decode_serve(sec: Section, quick: bool) -> None:
    import torch

    from cerebras_gpt import GPT, GPTConfig
    from cerebras_gpt.generation import generate_ids

    cuda = cuda_available()
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    full = cuda and not quick
    preset = "Cerebras-GPT-111M" if full else "debug-tiny"
    new_tokens, prompt_tokens, repeats = (128, 32, 3) if full else (16, 8, 2)
    sec.set(
        device=str(device),
        dtype=str(dtype).removeprefix("torch."),
        preset=preset,
        new_tokens=new_tokens,
        prompt_tokens=prompt_tokens,
        decode={},
        serve=None,
    )
    if not full:
        sec.set(
            reason=(
                "--quick: debug shape only"
                if cuda
                else f"{no_cuda_reason()}: decode and serving measured on the CPU, debug shape, fp32"
            )
        )
    if not cuda:
        sec.set(gpu_skipped=sec.data["reason"])
    from transformers import GPT2LMHeadModel

    with tempfile.TemporaryDirectory() as d:
        torch.manual_seed(0)
        GPT(GPTConfig.from_name(preset)).save_pretrained(d)
        ours = GPT.from_pretrained(d, device=device, dtype=dtype)
        theirs = GPT2LMHeadModel.from_pretrained(d, dtype=dtype, attn_implementation="sdpa").to(device).eval()

        def run_ours(prompts):
            out = generate_ids(ours, prompts.tolist(), max_new_tokens=new_tokens, temperature=0, stop_at_eos=False)
            return out

        def run_theirs(prompts):
            with torch.inference_mode():
                out = theirs.generate(
                    prompts,
                    attention_mask=torch.ones_like(prompts),
                    max_new_tokens=new_tokens,
                    min_new_tokens=new_tokens,
                    do_sample=False,
                    use_cache=True,
                    pad_token_id=50256,
                )
            return out[:, prompts.shape[1] :].tolist()

        results: dict[str, Any] = {}
        for batch in (1, 16):
            if sec.left() < 20:
                results[str(batch)] = {"status": "skipped", "reason": "out of time in this section's slice"}
                sec.set(decode=results, status="partial")
                continue
            try:
                gen = torch.Generator().manual_seed(batch)
                prompts = torch.randint(0, 50257, (batch, prompt_tokens), generator=gen).to(device)
                a, b = run_ours(prompts), run_theirs(prompts)  # warm-up, and the tokens compared
                # bf16 rounding differs between the two implementations, so greedy paths may part late on:
                # the share of identical tokens is recorded rather than demanded.
                same = sum(x == y for ra, rb in zip(a, b) for x, y in zip(ra, rb)) / max(1, batch * new_tokens)
                times: dict[str, list[float]] = {"ours": [], "transformers": []}
                for _ in range(repeats):
                    for name, fn in (("ours", run_ours), ("transformers", run_theirs)):
                        if cuda:
                            torch.cuda.synchronize()
                        start = time.perf_counter()
                        fn(prompts)
                        if cuda:
                            torch.cuda.synchronize()
                        times[name].append(batch * new_tokens / (time.perf_counter() - start))
                med = {k: statistics.median(v) for k, v in times.items()}
                results[str(batch)] = {
                    "status": "ok",
                    "ours_tokens_per_s": med["ours"],
                    "transformers_tokens_per_s": med["transformers"],
                    "speedup": med["ours"] / med["transformers"],
                    "same_tokens": same,
                }
            except Exception as e:  # noqa: BLE001 - recorded; serving still runs
                results[str(batch)] = {"status": "failed", "reason": short_error(e)}
                sec.set(status="partial")
            sec.set(decode=results)
        ours = theirs = None  # free both models before the next section
        free_cuda_memory()

    # The serving benchmark, as its own script (a server process and streaming clients).
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "serve.json"
        requests, max_tokens = (64, 24) if full else (64, 4)
        cmd = [
            sys.executable,
            str(ROOT / "bench" / "serve.py"),
            "--preset",
            preset,
            "--concurrency",
            "1",
            "16",
            "64",
            "--requests",
            str(requests),
            "--rounds",
            "1",
            "--prompt-tokens",
            "32" if full else "8",
            "--max-tokens",
            str(max_tokens),
            "--no-record",
            "--device",
            str(device),
            "--json",
            str(out),
        ]
        timeout = sec.left() - 3
        if timeout < 15:
            sec.set(serve={"status": "skipped", "reason": "out of time in this section's slice"}, status="partial")
            return
        try:
            proc = subprocess.run(cmd, cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            sec.set(serve={"status": "failed", "reason": f"bench/serve.py ran past {timeout:.0f} s"}, status="partial")
            return
        if proc.returncode != 0 or not out.exists():
            sec.set(
                serve={
                    "status": "failed",
                    "reason": short_error(f"bench/serve.py exited {proc.returncode}: {tail(proc.stderr, 3)}"),
                },
                status="partial",
            )
            return
        serve = json.loads(out.read_text())
        sec.set(serve={"status": "ok", "command": " ".join(cmd[1:]), **serve})


# ----------------------------------------------------------------------------- 5. distributed
def losses_of(out_dir: Path) -> dict[int, float]:
    path = out_dir / "metrics.jsonl"
    if not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def section_distributed(sec: Section, quick: bool) -> None:
    import torch

    from cerebras_gpt.data.prepare import prepare

    cuda = cuda_available()
    gpus = torch.cuda.device_count() if cuda else 0
    full = cuda and not quick
    backend = "nccl" if cuda else "gloo"
    sec.set(backend=backend, gpu_count=gpus, runs={})
    if not cuda:
        sec.set(reason=f"{no_cuda_reason()}: NCCL skipped; the same torchrun path ran with gloo on the CPU")
        sec.set(gpu_skipped=sec.data["reason"])
    model, seq, per_rank, steps = ("Cerebras-GPT-111M", 256, 8, 4) if full else ("debug-tiny", 32, 2, 2)
    worlds = [1] + ([gpus] if gpus > 1 else [])
    if cuda and gpus <= 1:
        sec.set(multi_gpu="skipped: one GPU (two NCCL ranks cannot share one GPU)")
    runs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as d:
        data = Path(d) / "data"
        prepare(["builtin:pydoc"], data, val_fraction=0.05, workers=1, progress=False)
        for world in worlds:
            for mode in ("ddp", "fsdp"):
                key = f"{mode}@{world}"
                timeout = sec.left() - 3
                if timeout < 20:
                    runs[key] = {"status": "skipped", "reason": "out of time in this section's slice"}
                    sec.set(runs=runs, status="partial")
                    continue
                out = Path(d) / key.replace("@", "_")
                cmd = [
                    sys.executable,
                    "-m",
                    "torch.distributed.run",
                    "--standalone",
                    "--nproc-per-node",
                    str(world),
                    "-m",
                    "cerebras_gpt",
                    "train",
                    "--model",
                    model,
                    "--data-dir",
                    str(data),
                    "--out",
                    str(out),
                    "--seq-len",
                    str(seq),
                    "--batch-size",
                    str(per_rank * world),
                    "--steps",
                    str(steps),
                    "--warmup-steps",
                    "1",
                    "--eval-batches",
                    "1",
                    "--no-progress",
                    "--no-tensorboard",
                    "--device",
                    "cuda" if cuda else "cpu",
                    *(["--fsdp"] if mode == "fsdp" else []),
                ]
                env = dict(child_env(), OMP_NUM_THREADS="1", NCCL_DEBUG="INFO" if cuda else "WARN")
                start = time.perf_counter()
                try:
                    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
                except subprocess.TimeoutExpired:
                    runs[key] = {"status": "failed", "reason": f"torchrun ran past {timeout:.0f} s"}
                    sec.set(runs=runs, status="partial")
                    continue
                losses = losses_of(out)
                row = {
                    "world_size": world,
                    "seconds": time.perf_counter() - start,
                    "losses": losses,
                    "nccl_used": "NCCL INFO" in proc.stderr + proc.stdout if cuda else False,
                }
                if proc.returncode != 0 or len(losses) != steps:
                    row.update(status="failed", reason=short_error(f"exit {proc.returncode}: {tail(proc.stderr, 4)}"))
                    sec.set(status="partial")
                else:
                    row["status"] = "ok"
                    if cuda and not row["nccl_used"]:
                        row["reason"] = "trained, but NCCL_DEBUG=INFO printed no NCCL line"
                runs[key] = row
                sec.set(runs=runs)
    for world in worlds:
        ddp, fsdp = runs.get(f"ddp@{world}", {}), runs.get(f"fsdp@{world}", {})
        if ddp.get("status") == fsdp.get("status") == "ok":
            first = min(ddp["losses"])
            runs[f"fsdp@{world}"]["first_loss_minus_ddp"] = fsdp["losses"][first] - ddp["losses"][first]
    sec.set(runs=runs)
    if runs and all(r.get("status") == "failed" for r in runs.values()):
        sec.set(status="failed", reason=next(iter(runs.values()))["reason"])


SECTION_FUNCTIONS: dict[str, Callable[[Section, bool], None]] = {
    "environment": section_environment,
    "gpu_tests": section_gpu_tests,
    "train": section_train,
    "decode_serve": section_decode_serve,
    "distributed": section_distributed,
}


def run_section_here(name: str, result: Path, deadline: float, quick: bool) -> int:
    """The child side: run one section, recording an exception as the section's failure."""
    sec = Section(result, deadline)
    sec.save()
    try:
        SECTION_FUNCTIONS[name](sec, quick)
    except Exception as e:  # noqa: BLE001 - the parent reads the failure from the file
        sec.set(status="failed", reason=short_error(e), traceback=tail(traceback.format_exc(), 8))
    return 0


# ----------------------------------------------------------------------------- the parent: budget, table, JSON
def run_section(name: str, deadline: float, quick: bool, workdir: Path) -> dict[str, Any]:
    result = workdir / f"{name}.json"
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--section",
        name,
        "--result",
        str(result),
        "--deadline",
        repr(deadline),
        *(["--quick"] if quick else []),
    ]
    start = time.time()
    timeout = max(1.0, deadline - start) + 5  # the section's own deadline comes first; this is the backstop
    note = None
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            note = short_error(f"the section's process exited {proc.returncode}: {tail(proc.stderr, 3)}")
    except subprocess.TimeoutExpired:
        note = f"killed at the end of its {timeout:.0f} s slice"
    data = json.loads(result.read_text()) if result.exists() else {"status": "failed"}
    if note is not None:  # what the section recorded before it died or was killed is kept
        data["killed"] = note
        data.setdefault("reason", note)
        if data.get("status") == "ok":
            data["status"] = "partial"
    data["seconds"] = round(time.time() - start, 1)
    return data


def fmt(value: Any, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


def table_rows(results: dict[str, Any]) -> list[tuple[str, str, str, str, str, str]]:
    """(section, item, ours, peer, ours/peer or result, note) rows of the printed table."""
    rows = []
    env = results.get("environment", {})
    rows.append(
        (
            "environment",
            env.get("gpu") or "no GPU",
            f"torch {env.get('torch')}",
            f"CUDA {env.get('torch_cuda_version')}, driver {env.get('driver')}",
            env.get("status", "-"),
            env.get("reason") or f"peak {fmt(env.get('bf16_peak_tflops'))} TFLOP/s ({env.get('peak_source')})",
        )
    )
    tests = results.get("gpu_tests", {})
    rows.append(
        (
            "gpu_tests",
            "pytest -m cuda",
            f"{tests.get('passed', 0)} passed",
            f"{tests.get('failed', 0)} failed, {tests.get('skipped', 0)} skipped",
            tests.get("status", "-"),
            tests.get("reason") or "; ".join(tests.get("failures", []))[:80],
        )
    )
    train = results.get("train", {})
    for shape, r in (train.get("shapes") or {}).items():
        o, t = r.get("ours", {}), r.get("transformers", {})

        def cell(x):
            if x.get("status") != "ok":
                return f"{x.get('status', '-')}: {x.get('reason', '')}"[:60]
            return f"{x['tokens_per_s']:,.0f} tok/s, MFU {x['mfu']:.1%}, mb {x['micro_batch']}"

        rows.append(
            (
                "train",
                shape,
                cell(o),
                cell(t),
                fmt(r.get("speedup"), ".2f") + "x" if r.get("speedup") else "-",
                "compiled" if o.get("compiled") else (o.get("compile_error") or "eager")[:60],
            )
        )
    if not train.get("shapes"):
        rows.append(("train", "-", "-", "-", train.get("status", "-"), train.get("reason") or ""))
    ds = results.get("decode_serve", {})
    for batch, r in (ds.get("decode") or {}).items():
        if r.get("status") == "ok":
            rows.append(
                (
                    "decode",
                    f"batch {batch}",
                    f"{r['ours_tokens_per_s']:,.1f} tok/s",
                    f"{r['transformers_tokens_per_s']:,.1f} tok/s",
                    f"{r['speedup']:.2f}x",
                    f"{r['same_tokens']:.0%} same tokens",
                )
            )
        else:
            rows.append(("decode", f"batch {batch}", "-", "-", r.get("status", "-"), r.get("reason", "")[:60]))
    serve = ds.get("serve") or {}
    if serve.get("status") == "ok":
        for c, lv in serve["levels"].items():
            rows.append(
                (
                    "serve",
                    f"{c} clients",
                    f"{lv['tokens_per_s']:,.1f} tok/s",
                    f"{serve['transformers_sequential_tokens_per_s']:,.1f} tok/s (one at a time)",
                    f"{lv['tokens_per_s'] / serve['transformers_sequential_tokens_per_s']:.2f}x",
                    f"{lv['failed']} failed, TTFT p50 {fmt(lv['ttft_p50_s'], '.3f')} s",
                )
            )
    else:
        rows.append(
            (
                "serve",
                "1/16/64 clients",
                "-",
                "-",
                serve.get("status", ds.get("status", "-")),
                (serve.get("reason") or ds.get("reason") or "")[:80],
            )
        )
    dist = results.get("distributed", {})
    for key, r in (dist.get("runs") or {}).items():
        losses = r.get("losses") or {}
        rows.append(
            (
                "distributed",
                f"{key} ({dist.get('backend')})",
                f"loss {fmt(losses[max(losses)], '.4f')}" if losses else "-",
                "-",
                r.get("status", "-"),
                (r.get("reason") or f"{r.get('seconds', 0):.0f} s")[:80],
            )
        )
    if not dist.get("runs"):
        rows.append(("distributed", "-", "-", "-", dist.get("status", "-"), dist.get("reason") or ""))
    return rows


def goals(results: dict[str, Any]) -> dict[str, Any]:
    """The issue's goals, judged where the figures exist (None: not measured in this run)."""
    shapes = (results.get("train") or {}).get("shapes") or {}
    big = shapes.get("Cerebras-GPT-1.3B@2048", {}).get("ours", {})
    speedups = [shapes[k].get("speedup") for k in ("Cerebras-GPT-111M@2048", "Cerebras-GPT-1.3B@2048") if k in shapes]
    decode = (results.get("decode_serve") or {}).get("decode") or {}
    decode_speedups = [r.get("speedup") for r in decode.values()]
    full = (results.get("decode_serve") or {}).get("preset") == "Cerebras-GPT-111M"

    def judged(values, goal):
        if not values or any(v is None for v in values):
            return None
        return all(v >= goal for v in values)

    return {
        "train_mfu_1.3B_ge_50pct": judged(
            [big.get("mfu")] if big.get("status") == "ok" else [], GOALS["train_mfu_1.3B"]
        ),
        "train_ge_1.1x_transformers_both_shapes": judged(
            speedups if len(speedups) == 2 else [], GOALS["train_speedup"]
        ),
        "decode_ge_1.3x_transformers": judged(decode_speedups if full else [], GOALS["decode_speedup"]),
    }


def print_table(rows) -> None:
    headers = ("section", "item", "ours", "peer", "result", "note")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = " | ".join(h.ljust(w) for h, w in zip(headers, widths))
    print(line)
    print("-+-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(c.ljust(w) for c, w in zip(r, widths)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget-min", type=float, default=8.0, help="overall wall-time budget in minutes")
    parser.add_argument("--out", default="gpu_check.json", help="where to write the JSON result")
    parser.add_argument("--quick", action="store_true", help="debug shapes only (a smoke run; always so on a CPU)")
    parser.add_argument(
        "--sections",
        nargs="+",
        default=list(SECTIONS),
        choices=list(SECTIONS),
        help="run only these sections (default: all)",
    )
    parser.add_argument("--section", choices=list(SECTIONS), help=argparse.SUPPRESS)  # child process
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.section:
        sys.path.insert(0, str(ROOT / "src"))
        return run_section_here(args.section, Path(args.result), args.deadline, args.quick)
    if args.budget_min <= 0:
        parser.error(f"--budget-min {args.budget_min} must be positive (minutes), e.g. --budget-min 8")

    start = time.time()
    budget = 60 * args.budget_min
    total_share = sum(SECTIONS[s] for s in args.sections)
    results: dict[str, Any] = {
        "command": " ".join(
            [Path(sys.argv[0]).name if argv is None else "gpu_check.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "budget_s": budget,
        "quick": args.quick,
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start)),
    }
    out = Path(args.out)
    share_so_far = 0.0
    with tempfile.TemporaryDirectory() as d:
        for name in args.sections:
            share_so_far += SECTIONS[name] / total_share
            deadline = min(start + budget * share_so_far, start + budget)  # unused time passes on
            print(f"[gpu_check] {name}: until +{deadline - start:.0f} s of {budget:.0f} s", flush=True)
            results[name] = run_section(name, deadline, args.quick, Path(d))
            status = results[name].get("status")
            reason = results[name].get("reason")
            print(
                f"[gpu_check] {name}: {status} in {results[name]['seconds']} s" + (f" ({reason})" if reason else ""),
                flush=True,
            )
            out.write_text(json.dumps(results, indent=2, default=str) + "\n")  # partial results survive a crash
    results["goals"] = goals(results)
    results["seconds"] = round(time.time() - start, 1)
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print()
    print_table(table_rows(results))
    print(f"\ngoals: {json.dumps(results['goals'])}")
    print(f"total {results['seconds']} s of a {budget:.0f} s budget; JSON: {out}")
    return 0 if all(results[s].get("status") in ("ok", "skipped", "partial") for s in args.sections) else 1


if __name__ == "__main__":
    sys.exit(main())
