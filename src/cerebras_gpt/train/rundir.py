"""A run directory bound to its run: its identity recorded, compared on resume, its results kept.

``out_dir/run.json`` records what makes a run that run: the model (preset, overrides, μP, init), the data
(path and the checksums in its meta.json; fine-tuning adds its record files' checksums and task) and the
schedule (budget, batch, sequence length, learning rate, warmup, decay, seed). Resuming into a directory
whose record differs is refused with both values named, so a changed ``--model`` never silently trains
the old one. ``out_dir/results.json`` holds the result of the finished run: running it again reports
those results instead of training nothing and reporting NaN.

Without ``--out`` each run gets its own directory, ``runs/<model>-<YYYYmmdd-HHMMSS>``.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import logging
import math
import re
import shutil
from pathlib import Path
from typing import Any

from cerebras_gpt import atomic
from cerebras_gpt.train import checkpoint, distributed

log = logging.getLogger("cerebras_gpt.train")

RUN_FILE = "run.json"
RESULTS_FILE = "results.json"
# What a run writes into its directory, removed by --overwrite (and nothing else there).
RUN_OUTPUTS = (
    "checkpoints",
    "model",
    "best",
    "adapter",
    "tensorboard",
    "metrics.jsonl",
    "loss.png",
    RUN_FILE,
    RESULTS_FILE,
    "early_stopping.json",
    "finetune_results.json",
)
SCHEDULE_FIELDS = (
    "steps",
    "tokens",
    "tokens_per_param",
    "batch_size",
    "seq_len",
    "lr",
    "warmup_steps",
    "decay",
    "min_lr_ratio",
    "seed",
)
START_OVER = "--resume never --overwrite"


def default_out_dir(model: str, root: str | Path = "runs") -> str:
    """``runs/<model>-<YYYYmmdd-HHMMSS>`` (a numbered suffix if that exists): a new directory per run."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(model.rstrip("/")).name or "model")
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    candidate = Path(root) / f"{name}-{stamp}"
    n = 1
    while candidate.exists():
        n += 1
        candidate = Path(root) / f"{name}-{stamp}-{n}"
    return str(candidate)


def file_identity(path: str | Path) -> dict[str, Any]:
    """A data file's identity: its resolved path and sha256."""
    path = Path(path)
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 24):
            h.update(block)
    return {"path": str(path.resolve()), "sha256": h.hexdigest()}


def data_identity(data_dir: str | Path | None) -> dict[str, Any] | None:
    """A prepared directory's identity: its resolved path and the checksums its meta.json lists."""
    if data_dir is None:
        return None
    from cerebras_gpt.data.shards import read_meta

    meta = read_meta(data_dir)
    sums = {s["file"]: s.get("sha256") for split in meta.get("splits", {}).values() for s in split.get("shards", [])}
    return {
        "path": str(Path(data_dir).resolve()),
        "checksum": hashlib.sha256(json.dumps(sums, sort_keys=True).encode()).hexdigest(),
    }


def run_identity(cfg: Any, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a resume of ``cfg`` (a TrainConfig) must match: model, data, schedule (and ``extra``, e.g. a task)."""
    identity = {
        "model": cfg.model,
        "model_overrides": dict(cfg.model_overrides),
        "mup": cfg.mup,
        "init_from": cfg.init_from,
        "data": data_identity(cfg.data_dir),
        "schedule": {name: getattr(cfg, name) for name in SCHEDULE_FIELDS},
    }
    if extra:
        identity.update(extra)
    return json.loads(json.dumps(identity, default=str))


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            out += _differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [f"{prefix.rstrip('.')} {old!r} there, {new!r} now"]


def _recorded_identity(out_dir: Path) -> dict[str, Any] | None:
    path = out_dir / RUN_FILE
    if path.exists():
        try:
            return json.loads(path.read_text())["identity"]
        except (ValueError, KeyError) as e:
            raise ValueError(
                f"{path}: unreadable ({e}); move the run directory aside or start over with {START_OVER}"
            ) from None
    latest = checkpoint.latest_checkpoint(out_dir)  # a run directory from before run.json: its model at least
    if latest is not None and (latest / "run_config.json").exists():
        train_config = checkpoint.read_run_config(latest).get("train_config", {})
        return {"model": train_config.get("model"), "model_overrides": train_config.get("model_overrides", {})}
    return None


def has_run(out_dir: str | Path) -> bool:
    out_dir = Path(out_dir)
    return (out_dir / RUN_FILE).exists() or checkpoint.latest_checkpoint(out_dir) is not None


def start_over(out_dir: str | Path) -> None:
    """Remove what an earlier run wrote into ``out_dir`` (--overwrite); other files are left alone."""
    out_dir = Path(out_dir)
    for name in RUN_OUTPUTS:
        path = out_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    log.info("--overwrite: removed the earlier run's outputs from %s", out_dir)


def bind(cfg: Any, identity: dict[str, Any], resumes_here: bool, is_main: bool) -> None:
    """Bind ``cfg.out_dir`` to this run, before anything is written to it.

    Args:
        identity: `run_identity` of this run.
        resumes_here: this invocation continues a checkpoint of ``cfg.out_dir``.

    Raises ValueError when the directory holds another run (naming both values and the fix), or holds a run
    and this one would start afresh without ``--overwrite``.
    """
    out_dir = Path(cfg.out_dir)
    recorded = _recorded_identity(out_dir)
    if cfg.resume == "never" and recorded is not None:
        if not getattr(cfg, "overwrite", False):
            raise ValueError(
                f"{out_dir} already holds a run and --resume never would start a new one in it; "
                "pass --resume auto to continue it, another --out, or --overwrite to replace it"
            )
        if is_main:
            start_over(out_dir)
        recorded = None
    if recorded is not None and (resumes_here or cfg.resume == "auto"):
        differences = _differences({k: recorded.get(k) for k in recorded}, {k: identity.get(k) for k in recorded})
        if differences:
            raise ValueError(
                f"{out_dir} holds a different run ({'; '.join(differences[:4])}); pass another "
                f"--out, or {START_OVER} to replace it"
            )
    if is_main and not (out_dir / RUN_FILE).exists():
        atomic.write_json(out_dir / RUN_FILE, {"identity": identity})
    distributed.barrier()  # under torchrun: no rank reads the directory while rank 0 starts it over


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def write_results(out_dir: str | Path, result: dict[str, Any]) -> None:
    """Record a finished run's result in ``out_dir/results.json``."""
    atomic.write_json(Path(out_dir) / RESULTS_FILE, {k: _finite(v) for k, v in result.items()})


def recorded_results(out_dir: str | Path) -> dict[str, Any] | None:
    path = Path(out_dir) / RESULTS_FILE
    try:
        return json.loads(path.read_text()) if path.exists() else None
    except ValueError:
        return None


def with_out_dir(cfg: Any) -> Any:
    """``cfg`` with its out_dir set (a fresh per-run directory when none was given)."""
    if cfg.out_dir:
        return cfg
    return dataclasses.replace(cfg, out_dir=default_out_dir(cfg.model))


__all__ = [
    "RESULTS_FILE",
    "RUN_FILE",
    "bind",
    "data_identity",
    "default_out_dir",
    "file_identity",
    "has_run",
    "recorded_results",
    "run_identity",
    "start_over",
    "with_out_dir",
    "write_results",
]
