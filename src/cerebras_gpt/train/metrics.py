"""Run metrics: JSONL records, TensorBoard scalars, the loss-curve PNG, and the device's matmul peak for MFU."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from cerebras_gpt import atomic
from cerebras_gpt.extras import have_extra


def measure_peak_flops(device: torch.device, dtype: torch.dtype = torch.float32, n: int = 1024,
                       seconds: float = 0.3) -> float:
    """Measured dense matmul FLOP/s of ``device`` in ``dtype`` (n x n x n, best of a short loop).

    MFU is reported against this measured peak rather than a datasheet figure, as the CPUs here have none.
    """
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    best = float("inf")
    deadline = time.perf_counter() + seconds
    while True:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - t0)
        if time.perf_counter() > deadline:
            break
    return 2 * n ** 3 / best


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


def peak_flops(device: torch.device, dtype: torch.dtype) -> tuple[float, str]:
    """(FLOP/s, source): the datasheet bf16 peak of a known CUDA GPU, else the measured matmul peak."""
    if device.type == "cuda" and dtype == torch.bfloat16:
        known = datasheet_peak_flops(torch.cuda.get_device_name(device))
        if known is not None:
            return known, "datasheet"
        # A small matmul leaves a big GPU's tensor cores idle: measure at a size that fills them.
        return measure_peak_flops(device, dtype, n=8192, seconds=1.0), "measured"
    return measure_peak_flops(device, dtype), "measured"


# The columns of metrics.csv: a training record fills the first ones, an evaluation adds val_*.
CSV_COLUMNS = ("step", "tokens", "loss", "lr", "grad_norm", "tokens_per_s", "mfu", "skipped", "val_loss", "val_ppl")


class MetricsWriter:
    """Appends records to ``out_dir/metrics.jsonl`` (always: resume and plots read it) and to the chosen
    loggers: TensorBoard, ``metrics.csv`` and Weights & Biases (rank 0 only)."""

    def __init__(self, out_dir: str | Path, tensorboard: bool = True, loggers: list[str] = (),
                 run_name: str | None = None, run_config: dict[str, Any] | None = None) -> None:
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
            self._wandb = wandb.init(project="cerebras-gpt", name=run_name, id=run_name, resume="allow",
                                     dir=str(self.out_dir), config=run_config)

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
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


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
