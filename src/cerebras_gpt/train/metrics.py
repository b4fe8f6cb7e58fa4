"""Run metrics: JSONL records, TensorBoard scalars, the loss-curve PNG, and the device's matmul peak for MFU
(a GPU's datasheet figure, or this machine's measured one, cached per machine)."""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from cerebras_gpt import atomic, jsonl
from cerebras_gpt.extras import have_extra

log = logging.getLogger("cerebras_gpt.train")


# The CPU peak is measured on one square matmul this large: at n=1024 two AVX2 cores ran at 55-65% of
# what n=2048-3072 reach, so MFU against a small GEMM read 108-112% (issue #21). A big GPU needs 8192.
CPU_PEAK_GEMM_N = 3072
CUDA_PEAK_GEMM_N = 8192
PEAK_REPEATS = 5


def measure_peak_flops(
    device: torch.device, dtype: torch.dtype = torch.float32, n: int | None = None, repeats: int = PEAK_REPEATS
) -> float:
    """Measured dense matmul FLOP/s of ``device`` in ``dtype``: an n x n x n matmul on all of torch's
    threads, two warm-up calls, then the best of ``repeats`` (load from other processes only ever slows
    a call down, so the fastest one is the machine's). On a CPU in float32 both BLAS that training may use
    are timed, torch's and oneDNN's (`train.cpu_matmul`), and the faster one is the peak."""
    n = n or (CUDA_PEAK_GEMM_N if device.type == "cuda" else CPU_PEAK_GEMM_N)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    kernels = [lambda: a @ b]
    if device.type == "cpu" and dtype == torch.float32:
        from cerebras_gpt.train.cpu_matmul import onednn_available, onednn_nt

        if onednn_available():
            kernels.append(lambda: onednn_nt(a, b))
    best = float("inf")
    for matmul in kernels:
        for _ in range(2):
            matmul()
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            matmul()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def _step_of(line: str) -> float:
    """The step of a JSONL record; a line cut short by a crash counts as past every step (it is dropped)."""
    try:
        return json.loads(line).get("step", 0)
    except ValueError:
        return float("inf")


# Dense bf16 tensor-core peaks (FLOP/s) from NVIDIA's datasheets, by a substring of the device name;
# the first match wins, so the more specific names come first. MFU on these GPUs is against the datasheet,
# as is usual; elsewhere against the measured matmul peak.
BF16_DENSE_PEAKS: tuple[tuple[str, float], ...] = (
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),  # SXM
    ("A100", 312e12),
)


def datasheet_peak_flops(device_name: str) -> float | None:
    """The bf16 dense peak of a GPU named ``device_name`` (e.g. "NVIDIA H100 80GB HBM3"), or None if unknown."""
    for key, flops in BF16_DENSE_PEAKS:
        if key.lower() in device_name.lower():
            return flops
    return None


def peak_cache_path() -> Path:
    """Where measured peaks are kept: ``$XDG_CACHE_HOME/cerebras_gpt/peak_flops.json`` (default ~/.cache)."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "cerebras_gpt" / "peak_flops.json"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def peak_key(device: torch.device, dtype: torch.dtype) -> str:
    """What a measured peak depends on: the processor, the thread count (CPU), torch and the dtype."""
    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    else:
        where = f"{_cpu_model()}, {torch.get_num_threads()} threads"
    return f"{device.type}: {where}, torch {torch.__version__}, {str(dtype).removeprefix('torch.')}"


def read_json_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):  # absent or damaged: measured again and rewritten
        return {}
    return data if isinstance(data, dict) else {}


def measured_peak(device: torch.device, dtype: torch.dtype, refresh: bool = False) -> tuple[float, str]:
    """(FLOP/s, how it was measured) of this machine, measured once and then read from `peak_cache_path`.

    ``refresh`` measures again; the cache keeps the higher of the old and new figures, since a busy
    machine can only under-measure a peak, and an under-measured peak is what makes MFU read over 100%.
    """
    path, key = peak_cache_path(), peak_key(device, dtype)
    entry = read_json_cache(path).get(key)
    cached = isinstance(entry, dict) and isinstance(entry.get("flops"), (int, float))
    if refresh or not cached:
        n = CUDA_PEAK_GEMM_N if device.type == "cuda" else CPU_PEAK_GEMM_N
        fresh = {
            "flops": measure_peak_flops(device, dtype, n=n, repeats=PEAK_REPEATS),
            "gemm": n,
            "repeats": PEAK_REPEATS,
            "measured": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        if not cached or fresh["flops"] > entry["flops"]:
            entry = fresh
        try:  # re-read: another process may have added its own machine's entry meanwhile
            atomic.write_json(path, dict(read_json_cache(path), **{key: entry}))
        except OSError as e:  # a read-only home: the figure is still right for this run
            log.debug("cannot cache the measured peak in %s: %s", path, e)
    how = (
        f"measured: best of {entry.get('repeats', '?')} {entry.get('gemm', '?')}^3 matmuls on {key}, "
        f"{entry.get('measured', '?')}; cached in {path} (delete it to measure again)"
    )
    return float(entry["flops"]), how


def peak_flops(device: torch.device, dtype: torch.dtype, refresh: bool = False) -> tuple[float, str]:
    """(FLOP/s, source): the datasheet bf16 peak of a known CUDA GPU, else this machine's measured and
    cached matmul peak (`measured_peak`)."""
    if device.type == "cuda" and dtype == torch.bfloat16:
        name = torch.cuda.get_device_name(device)
        known = datasheet_peak_flops(name)
        if known is not None:
            return known, f"datasheet bf16 dense peak of {name}"
    return measured_peak(device, dtype, refresh=refresh)


def model_flops_utilization(flops_per_token: float, tokens_per_s: float, peak: float, world_size: int = 1) -> float:
    """MFU of a run: the FLOPs the model needs per token (the plan's ``flops_per_token``, the formula
    of `GPTConfig.flops_per_token` that `--dry-run` shows) x tokens/s, over the peak of all ranks.

    At most 1.0: more means the peak was under-measured (a busy machine when it was measured), not a
    run faster than the hardware; `measured_peak(refresh=True)` measures it again.
    """
    return min(1.0, max(0.0, flops_per_token * tokens_per_s / (peak * world_size)))


# The columns of metrics.csv: a training record fills the first ones, an evaluation adds val_*.
CSV_COLUMNS = ("step", "tokens", "loss", "lr", "grad_norm", "tokens_per_s", "mfu", "skipped", "val_loss", "val_ppl")


class MetricsWriter:
    """Appends records to ``out_dir/metrics.jsonl`` (always: resume and plots read it) and to the chosen
    loggers: TensorBoard, ``metrics.csv`` and Weights & Biases (rank 0 only)."""

    def __init__(
        self,
        out_dir: str | Path,
        tensorboard: bool = True,
        loggers: list[str] = (),
        run_name: str | None = None,
        run_config: dict[str, Any] | None = None,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.out_dir / "metrics.jsonl"
        self.csv_path = self.out_dir / "metrics.csv" if "csv" in loggers else None
        self._tb = self._wandb = None
        if tensorboard and have_extra("train", "tensorboard", skipped="TensorBoard event files"):
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.out_dir / "tensorboard"))
        if "wandb" in loggers:
            from cerebras_gpt.extras import require_extra

            require_extra("wandb", "wandb", feature="--logger wandb")
            import wandb

            # resume="allow" with the run directory's name as id: a resumed run continues the same W&B run.
            self._wandb = wandb.init(
                project="cerebras-gpt",
                name=run_name,
                id=run_name,
                resume="allow",
                dir=str(self.out_dir),
                config=run_config,
            )

    def truncate_after(self, step: int) -> None:
        """Drop records past ``step`` (written by a run that died after its last checkpoint)."""
        if not self.path.exists():
            return
        lines = [line for line in self.path.read_text().splitlines() if line.strip()]
        kept = [line for line in lines if _step_of(line) <= step]
        if len(kept) != len(lines):  # a new file swapped in whole: the old one is never half rewritten
            atomic.write_text(self.path, "".join(line + "\n" for line in kept))
        if self.csv_path is not None:  # derived from the JSONL, so it is truncated with it
            atomic.write_text(self.csv_path, _csv_text([json.loads(line) for line in kept]))

    def _append_csv(self, record: dict[str, Any]) -> None:
        new = not self.csv_path.exists()
        with self.csv_path.open("a") as f:
            f.write(_csv_text([record], header=new))

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.csv_path is not None:
            self._append_csv(record)
        scalars = {k: v for k, v in record.items() if k != "step" and isinstance(v, (int, float))}
        if self._tb is not None:
            for key, value in scalars.items():
                self._tb.add_scalar(key, value, record.get("step", 0))
        if self._wandb is not None:
            self._wandb.log(scalars, step=record.get("step", 0))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def _csv_text(records: list[dict[str, Any]], header: bool = True) -> str:
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    if header:
        writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Every record of a run's ``metrics.jsonl``, in order (a bad line is named by ``path:line``)."""
    return jsonl.read(path)


def plot_loss(metrics_path: str | Path, out_png: str | Path) -> Path:
    """Training (and validation) loss against tokens, from a metrics JSONL, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    train = [(r["tokens"], r["loss"]) for r in records if "loss" in r]
    val = [(r["tokens"], r["val_loss"]) for r in records if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train), label="train", lw=1)
    if val:
        ax.plot(*zip(*val), "o-", label="validation")
    ax.set_xlabel("tokens")
    ax.set_ylabel("cross-entropy (nats)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
    return Path(out_png)
