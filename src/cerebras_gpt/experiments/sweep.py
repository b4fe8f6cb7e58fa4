"""Hyperparameter sweeps on Optuna: grid, random or TPE search over run settings, each trial a `train` run.

A sweep starts from one training configuration (a `cerebras-gpt train` YAML and/or fixed ``KEY=VALUE``
settings) and varies dotted keys of it (``lr``, ``model_overrides.n_embd``, ``mup``, ...):

- grid search: ``KEY=V1,V2,...`` for each key; every combination is a trial (the Cartesian product);
- random search: ``KEY=loguniform:LOW:HIGH``, ``KEY=uniform:LOW:HIGH``, ``KEY=intuniform:LOW:HIGH`` or
  ``KEY=choice:A,B,C``, sampled ``trials`` times from ``seed`` (the same trials on every run).

- TPE (``--sampler tpe``): Optuna's Bayesian search over the same ``--random`` distributions (``--grid`` axes
  become categorical ones) for ``trials`` trials, each proposal informed by the finished ones.

The trials live in an Optuna study: SQLite in ``OUT/study.db`` by default, or any database URL
(``--storage postgresql://...``) so that workers on several machines share one sweep. Grid and random
trials are planned up front and queued in the study (``enqueue_trial``), so every worker started with the
same command takes the next queued trial, and the sweep ends when every planned trial is done, once.
A running trial sends a heartbeat; a worker killed mid-trial (SIGKILL, a lost machine) leaves a trial
whose heartbeat stops, and after the grace period (three heartbeats) the next worker marks it failed and
queues it again with the same settings (`RetryHeartbeatStaleTrialCallback`).

Each trial trains into ``OUT/trials/<id>/`` through `cerebras_gpt.train.train` and adds one line to
``OUT/results.jsonl`` when it ends (settings, final metrics, status, seconds); ``results.csv`` and
``best.json`` (the trial with the best ``metric``) are rewritten from it after every trial. A trial's id
is a hash of its settings, so the retried trial resumes from its own last checkpoint (the trainer resumes
from its output directory), and a trial already recorded as finished is never trained again. Nothing
already recorded is rewritten.

With μP this is how the paper tuned its hyperparameters: sweep η_base, σ_base and the multipliers on a
small proxy (width 256, 40M parameters) and reuse the best values at every width; ``plot_curves`` draws
the learning-rate-transfer picture (final loss against LR, one line per width).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import itertools
import json
import logging
import math
import os
import socket
import threading
import time
import types
import typing
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cerebras_gpt import atomic, jsonl
from cerebras_gpt.extras import require_extra

log = logging.getLogger(__name__)

RESULTS = "results.jsonl"
TABLE = "results.csv"
BEST = "best.json"
SPEC = "sweep.json"
STUDY_DB = "study.db"
DISTRIBUTIONS = ("loguniform", "uniform", "intuniform", "choice")
SAMPLERS = ("auto", "grid", "random", "tpe")
MAX_REPEATED_PROPOSALS = 20


@dataclass
class SweepConfig:
    """A sweep: the base run, what varies, and how trials are chosen and judged."""

    out: str = "runs/sweep"
    """Sweep directory: trials/<id>/ (each trial's run), results.jsonl, results.csv, best.json."""
    base: str | None = None
    """A `cerebras-gpt train` YAML config every trial starts from."""
    set: list[str] = field(default_factory=list)
    """Fixed settings for every trial, KEY=VALUE (dotted keys into the train config, e.g. steps=200)."""
    grid: list[str] = field(default_factory=list)
    """Grid axes, KEY=V1,V2,...: every combination is one trial."""
    random: list[str] = field(default_factory=list)
    """Random axes, KEY=loguniform:LO:HI | uniform:LO:HI | intuniform:LO:HI | choice:A,B,...; crossed with --grid."""
    trials: int = 0
    """Random search: trials to sample (each crossed with the grid); 0 without --random."""
    seed: int = 0
    """Seed of the random search (the same seed gives the same trials, which is what makes it resumable)."""
    metric: str = "val_loss"
    """The final metric of train() that ranks trials."""
    mode: typing.Literal["min", "max"] = "min"
    """Whether a lower or a higher metric is better."""
    max_trials: int | None = None
    """Run at most this many new trials in this invocation (the rest on the next run)."""
    retry_failed: bool = False
    """Run again trials recorded as failed (diverged, or an error) instead of skipping them."""
    sampler: typing.Literal["auto", "grid", "random", "tpe"] = "auto"
    """How trials are chosen: grid (--grid), random (--random, seeded), tpe (Optuna's TPE over --random,
    --grid axes as choices); auto = random with --random axes, else grid."""
    storage: str | None = None
    """Optuna storage URL of the study (default sqlite:///OUT/study.db); a shared database lets workers on
    several machines run one sweep."""
    study: str | None = None
    """Name of the Optuna study in the storage (default: the name of the OUT directory)."""
    heartbeat: int = 10
    """Seconds between a running trial's heartbeats; a trial silent for three of them is retried."""

    @property
    def chosen_sampler(self) -> str:
        return self.sampler if self.sampler != "auto" else ("random" if self.random else "grid")

    def validate(self) -> None:
        """Raise one ValueError listing every problem (run_sweep calls it; a default config is empty)."""
        problems = []
        if self.random and self.trials < 1:
            problems.append(f"--random needs --trials N >= 1 (got trials={self.trials})")
        if self.trials and not self.random:
            problems.append(f"trials={self.trials} needs --random axes to sample")
        if not self.grid and not self.random:
            problems.append("nothing to sweep: give --grid KEY=V1,V2,... and/or --random KEY=DIST --trials N")
        if self.sampler == "grid" and self.random:
            problems.append("--sampler grid takes --grid axes only; use --sampler random or tpe for --random")
        if self.sampler in ("random", "tpe") and not self.random:
            problems.append(f"--sampler {self.sampler} needs --random axes (and --trials N)")
        if self.heartbeat < 1:
            problems.append(f"heartbeat={self.heartbeat} must be >= 1 second")
        if self.max_trials is not None and self.max_trials < 0:
            problems.append(f"max_trials={self.max_trials} must be >= 0")
        if problems:
            raise ValueError("invalid sweep: " + "; ".join(problems))


# ----------------------------------------------------------------------------- settings
def parse_value(text: str) -> Any:
    """A scalar from the command line or YAML: bool, None, int, float, else the string."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text.strip()


def _split_key(item: str, flag: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise ValueError(f"{flag} {item!r} must look like KEY=VALUE (e.g. lr=1e-3 or model_overrides.n_embd=64,128)")
    return key.strip().replace("-", "_"), value.strip()


def parse_settings(items: list[str]) -> dict[str, Any]:
    """``["KEY=VALUE", ...]`` -> {key: value}."""
    return {k: parse_value(v) for k, v in (_split_key(item, "--set") for item in items)}


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """``["KEY=V1,V2", ...]`` -> {key: [v1, v2]}; a key may appear once."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, values = _split_key(item, "--grid")
        if key in grid:
            raise ValueError(f"--grid key {key!r} appears twice; list all its values in one KEY=V1,V2,...")
        grid[key] = [parse_value(v) for v in values.split(",") if v.strip()]
    return grid


def parse_random(items: list[str]) -> dict[str, tuple[str, list[Any]]]:
    """``["KEY=DIST:ARGS", ...]`` -> {key: (dist, args)}."""
    space: dict[str, tuple[str, list[Any]]] = {}
    for item in items:
        key, spec = _split_key(item, "--random")
        dist, _, args = spec.partition(":")
        if dist not in DISTRIBUTIONS:
            raise ValueError(f"--random {item!r}: unknown distribution {dist!r}; use one of {list(DISTRIBUTIONS)}")
        if dist == "choice":
            values = [parse_value(v) for v in args.split(",") if v.strip()]
            if not values:
                raise ValueError(f"--random {item!r}: choice needs values, e.g. {key}=choice:8,16,32")
            space[key] = (dist, values)
            continue
        bounds = [parse_value(v) for v in args.split(":")]
        if (
            len(bounds) != 2
            or not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds)
            or not bounds[0] < bounds[1]
            or (dist == "loguniform" and bounds[0] <= 0)
        ):
            raise ValueError(
                f"--random {item!r}: {dist} needs LOW:HIGH with LOW < HIGH"
                + (" and LOW > 0" if dist == "loguniform" else "")
                + f", e.g. {key}={dist}:1e-4:1e-2"
            )
        space[key] = (dist, bounds)
    return space


def _sample(dist: str, args: list[Any], rng: np.random.Generator) -> Any:
    if dist == "choice":
        return args[int(rng.integers(len(args)))]
    lo, hi = args
    if dist == "loguniform":
        return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    if dist == "intuniform":
        return int(rng.integers(int(lo), int(hi) + 1))
    return float(rng.uniform(lo, hi))


def trial_settings(cfg: SweepConfig) -> list[dict[str, Any]]:
    """Every trial's varying settings, in order: the grid's product, each crossed with the random samples."""
    grid = parse_grid(cfg.grid)
    points = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())] or [{}]
    space = parse_random(cfg.random)
    if not space:
        return points
    rng = np.random.default_rng(cfg.seed)
    samples = [{k: _sample(d, a, rng) for k, (d, a) in space.items()} for _ in range(cfg.trials)]
    return [{**p, **s} for s in samples for p in points]


def trial_id(settings: dict[str, Any]) -> str:
    """A short stable id from the settings (sorted keys), readable where it can be."""
    blob = json.dumps(settings, sort_keys=True, default=str)
    digest = hashlib.sha1(blob.encode()).hexdigest()[:8]
    readable = "_".join(f"{k.rsplit('.', 1)[-1]}{_short(v)}" for k, v in sorted(settings.items()))
    readable = "".join(c if c.isalnum() or c in "-_.+" else "-" for c in readable)[:60]
    return f"{readable}-{digest}" if readable else digest


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


# ----------------------------------------------------------------------------- overrides
def apply_overrides(obj: Any, settings: dict[str, Any], where: str = "train config") -> Any:
    """A copy of dataclass ``obj`` with dotted ``settings`` applied: ``model.n_embd`` sets a field of a nested
    dataclass, ``model_overrides.n_embd`` a key of a mapping field.

    Values are checked against the field's type where it is a plain scalar (an int where a float is
    expected becomes a float); an unknown key is a ValueError listing the valid ones.
    """
    nested: dict[str, dict[str, Any]] = {}
    direct: dict[str, Any] = {}
    fields = {f.name: f for f in dataclasses.fields(obj)}
    hints = typing.get_type_hints(type(obj))
    for key, value in settings.items():
        head, _, rest = key.partition(".")
        if head not in fields:
            raise ValueError(f"unknown setting {key!r} for the {where}; valid keys are {sorted(fields)}")
        if rest and isinstance(getattr(obj, head), dict):  # a mapping field, e.g. model_overrides.n_embd
            direct.setdefault(head, dict(getattr(obj, head)))[rest] = value
        elif rest:
            if not dataclasses.is_dataclass(getattr(obj, head)):
                raise ValueError(f"setting {key!r}: {head!r} is not a section of the {where}")
            nested.setdefault(head, {})[rest] = value
        else:
            direct[head] = _coerce(value, hints.get(head), key)
    for head, sub in nested.items():
        direct[head] = apply_overrides(getattr(obj, head), sub, f"{where} [{head}]")
    return dataclasses.replace(obj, **direct)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """``value`` fitted to a scalar field type: int -> float where a float is expected; clear errors for
    a non-bool where a bool is expected and text where a number is. Other types pass through."""
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    allowed = set(typing.get_args(hint)) if union else {hint}
    if value is None:
        if type(None) in allowed:
            return None
        raise ValueError(f"setting {key!r} cannot be None")
    if allowed <= {bool, type(None)} and not isinstance(value, bool):
        raise ValueError(f"setting {key!r} must be true or false, got {value!r}")
    if allowed & {int, float} and not allowed & {str, bool} and isinstance(value, str):
        raise ValueError(f"setting {key!r} must be a number, got {value!r}")
    if float in allowed and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if allowed <= {int, type(None)} and isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"setting {key!r} must be an integer, got {value!r}")
        return int(value)
    return value


# ----------------------------------------------------------------------------- the record
def read_results(out: str | Path) -> list[dict[str, Any]]:
    """The finished trials of a sweep directory, in the order they finished."""
    path = Path(out) / RESULTS
    if not path.exists():
        return []
    rows = []
    lines = path.read_bytes().splitlines()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(jsonl.parse_line(line, f"{path}:{n}"))
        except jsonl.JSONLError as e:
            # Only the last line can be torn (a kill mid-append); anything else is damage worth stopping on.
            if n != len(lines):
                raise ValueError(f"{e.where}: {e.reason}; fix or remove that line") from None
            log.warning("%s: ignoring a torn last line (an interrupted append); that trial runs again", path)
    return rows


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def best_trial(rows: list[dict[str, Any]], metric: str, mode: str = "min") -> dict[str, Any] | None:
    """The finished trial with the best finite ``metric``; None when there is none."""
    ok = [r for r in rows if r.get("status") == "ok" and _finite(r.get("metrics", {}).get(metric))]
    if not ok:
        return None
    key = lambda r: float(r["metrics"][metric])  # noqa: E731
    return min(ok, key=key) if mode == "min" else max(ok, key=key)


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def write_table(out: str | Path, rows: list[dict[str, Any]], metric: str, mode: str) -> Path:
    """``results.csv``: one row per trial (settings then metrics), best first; and ``best.json``."""
    out = Path(out)
    setting_keys = sorted({k for r in rows for k in r["settings"]})
    metric_keys = sorted({k for r in rows for k in r.get("metrics", {})})
    if metric in metric_keys:
        metric_keys.remove(metric)
        metric_keys.insert(0, metric)

    def rank(r: dict[str, Any]) -> tuple[int, float]:
        value = r.get("metrics", {}).get(metric)
        if r.get("status") != "ok" or not _finite(value):
            return (1, 0.0)
        return (0, float(value) if mode == "min" else -float(value))

    path = out / TABLE
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["trial", "status", *setting_keys, *metric_keys, "seconds"])
        for r in sorted(rows, key=rank):
            writer.writerow(
                [
                    r["trial"],
                    r["status"],
                    *(r["settings"].get(k, "") for k in setting_keys),
                    *(r.get("metrics", {}).get(k, "") for k in metric_keys),
                    f"{r.get('seconds', 0):.1f}",
                ]
            )
    tmp.replace(path)
    best = best_trial(rows, metric, mode)
    atomic.write_text(
        out / BEST, json.dumps({"metric": metric, "mode": mode, "best": best}, indent=2, default=_jsonable) + "\n"
    )
    return path


# ----------------------------------------------------------------------------- running
TrialFn = Callable[[dict[str, Any], Path], dict[str, Any]]


def train_trial_fn(cfg: SweepConfig) -> TrialFn:
    """The default trial: `cerebras_gpt.train.train` on the base config with the trial's settings."""
    from cerebras_gpt.config_io import from_mapping, load_yaml
    from cerebras_gpt.train.config import TrainConfig
    from cerebras_gpt.train.loop import train

    base = from_mapping(TrainConfig, load_yaml(cfg.base), cfg.base) if cfg.base else TrainConfig()
    base = apply_overrides(base, parse_settings(cfg.set))

    def run(settings: dict[str, Any], trial_dir: Path) -> dict[str, Any]:
        run_cfg = apply_overrides(base, {**settings, "out_dir": str(trial_dir)})
        result = dict(train(run_cfg))
        # A trial killed after its last checkpoint but before it was recorded "resumes" with no step left
        # to run, and train() then has no fresh validation: take the final figures from its metrics.jsonl.
        for key, value in _recorded_final_metrics(trial_dir).items():
            if result.get(key) is None or not _finite(result.get(key)):
                result[key] = value
        return result

    return run


def _recorded_final_metrics(run_dir: Path) -> dict[str, Any]:
    """``final_loss`` and the last ``val_loss``/``val_ppl`` a train run wrote to its metrics.jsonl."""
    path = Path(run_dir) / "metrics.jsonl"
    found: dict[str, Any] = {}
    if not path.exists():
        return found
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "loss" in record:
            found["final_loss"] = record["loss"]
        for key in ("val_loss", "val_ppl"):
            if key in record:
                found[key] = record[key]
    return found


@dataclass
class SweepResult:
    """What a sweep invocation did and the state of the whole sweep after it."""

    rows: list[dict[str, Any]]
    """Every recorded trial (earlier invocations included)."""
    ran: list[str]
    """Ids of the trials run by this invocation."""
    skipped: list[str]
    """Ids of the trials already recorded, not run again."""
    pending: list[str]
    """Ids of the trials still to run (after --max-trials)."""
    best: dict[str, Any] | None


def run_sweep(cfg: SweepConfig, trial_fn: TrialFn | None = None, progress: bool = True) -> SweepResult:
    """Run the trials of ``cfg`` still to do in its study; see the module docstring."""
    from tqdm.auto import tqdm

    cfg.validate()
    require_extra("sweep", "optuna", feature="sweeps")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    spec = {
        "set": cfg.set,
        "grid": cfg.grid,
        "random": cfg.random,
        "trials": cfg.trials,
        "seed": cfg.seed,
        "base": cfg.base,
        "metric": cfg.metric,
        "mode": cfg.mode,
        "sampler": cfg.chosen_sampler,
    }
    atomic.write_text(out / SPEC, json.dumps(spec, indent=2) + "\n")
    study = open_study(cfg)
    distributions = _distributions(cfg)
    planned = None if cfg.chosen_sampler == "tpe" else [(trial_id(s), s) for s in trial_settings(cfg)]
    if planned is not None and len({t for t, _ in planned}) != len(planned):
        raise ValueError("two trials have the same settings; list each grid value once")
    total = len(planned) if planned is not None else cfg.trials
    recorded = {r["trial"]: r for r in read_results(out)}
    done_before = _done(study, recorded, cfg)
    if planned is not None:
        _enqueue_missing(study, planned, done_before, out)
    skipped = [t for t, _ in planned if t in done_before] if planned is not None else sorted(done_before)
    if done_before:
        log.info("sweep %s: %d of %d trials already done", out, len(done_before), total)
    trial_fn = trial_fn or train_trial_fn(cfg)
    ran: list[str] = []
    repeats = 0  # proposals in a row of settings already done (TPE on a small discrete space)
    bar = tqdm(total=total, initial=min(total, len(done_before)), desc="sweep", unit="trial", disable=not progress)
    while cfg.max_trials is None or len(ran) < cfg.max_trials:
        _fail_stale(study, out, own_storage=cfg.storage is None)
        done = _done(study, recorded, cfg)
        if len(done) >= total:
            break
        trial = _next_trial(study, distributions, planned is not None, out)
        if trial is None:  # every planned trial is done or running in another worker
            break
        settings = dict(trial.params)
        tid = trial_id(settings)
        if tid in done:  # another worker finished these settings, or results.jsonl already holds them
            _tell_recorded(study, trial, recorded.get(tid), cfg)
            repeats += 1
            if repeats >= MAX_REPEATED_PROPOSALS:
                log.warning(
                    "sweep %s: the last %d proposals were all settings already done; the search space "
                    "has few left (%d of %d trials done): stopping",
                    out,
                    repeats,
                    len(done),
                    total,
                )
                break
            continue
        repeats = 0
        bar.set_postfix_str(tid[:40])
        row = _run_trial(study, trial, tid, settings, trial_fn, out, cfg)
        recorded[tid] = row
        ran.append(tid)
        bar.update(1)
    bar.close()
    rows = read_results(out)
    # The last record of a trial wins (a failed trial that was retried).
    latest = {r["trial"]: r for r in rows}
    rows = [latest[t] for t in dict.fromkeys(r["trial"] for r in rows)]
    write_table(out, rows, cfg.metric, cfg.mode)
    done = _done(study, {r["trial"]: r for r in rows}, cfg)
    pending = [t for t, _ in planned if t not in done] if planned is not None else []
    return SweepResult(rows, ran, skipped, pending, best_trial(rows, cfg.metric, cfg.mode))


# ----------------------------------------------------------------------------- the Optuna study
def open_study(cfg: SweepConfig):
    """The sweep's Optuna study (created on first use): ``cfg.storage`` or SQLite in ``OUT/study.db``, with
    heartbeats and stale trials queued again with their settings."""
    import optuna
    from filelock import FileLock
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = cfg.storage or f"sqlite:///{(Path(cfg.out) / STUDY_DB).resolve()}"
    # SQLite: wait for another worker's write instead of failing at once ("database is locked").
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    # Workers started together would race to create the tables and the study: one at a time (on this
    # machine; workers elsewhere start against a database that already exists).
    with FileLock(str(Path(cfg.out) / "study.lock")), warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats are "experimental"
        storage = RDBStorage(
            url,
            engine_kwargs=engine,
            heartbeat_interval=cfg.heartbeat,
            grace_period=3 * cfg.heartbeat,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3),
        )
        sampler = {"tpe": lambda: optuna.samplers.TPESampler(seed=cfg.seed)}.get(
            cfg.chosen_sampler, lambda: optuna.samplers.RandomSampler(seed=cfg.seed)
        )()
        direction = "minimize" if cfg.mode == "min" else "maximize"
        return optuna.create_study(
            storage=storage,
            study_name=cfg.study or Path(cfg.out).resolve().name,
            sampler=sampler,
            direction=direction,
            load_if_exists=True,
        )


def _distributions(cfg: SweepConfig) -> dict[str, Any]:
    """Optuna distributions of the varied keys: grid axes as categorical, random axes as their kind."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out: dict[str, Any] = {k: CategoricalDistribution(v) for k, v in parse_grid(cfg.grid).items()}
    for key, (dist, args) in parse_random(cfg.random).items():
        if dist == "choice":
            out[key] = CategoricalDistribution(args)
        elif dist == "intuniform":
            out[key] = IntDistribution(int(args[0]), int(args[1]))
        else:
            out[key] = FloatDistribution(float(args[0]), float(args[1]), log=dist == "loguniform")
    return out


def _done(study, recorded: dict[str, dict[str, Any]], cfg: SweepConfig) -> set[str]:
    """Ids of the trials that need no more running: finished in the study or recorded in results.jsonl
    (failed ones too, unless --retry-failed)."""
    from optuna.trial import TrialState

    done = {t for t, r in recorded.items() if r.get("status") == "ok" or not cfg.retry_failed}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)):
        if t.state == TrialState.COMPLETE or ("diverged" in t.user_attrs and not cfg.retry_failed):
            done.add(trial_id(t.params))
    return done


def _enqueue_missing(study, planned: list[tuple[str, dict[str, Any]]], done: set[str], out: Path) -> None:
    """Queue the planned trials not done, queued or running yet (under a lock: workers start together)."""
    from filelock import FileLock
    from optuna.trial import TrialState

    with FileLock(str(out / "study.lock")):
        active = {
            trial_id(t.system_attrs.get("fixed_params", t.params))
            for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING))
        }
        for tid, settings in planned:
            if tid not in done and tid not in active:
                study.enqueue_trial(settings)


def _next_trial(study, distributions: dict[str, Any], planned_only: bool, out: Path):
    """The next trial to run: a queued one (planned, or a stale one queued again), else for TPE a new
    proposal; None when a planned sweep has nothing queued."""
    from filelock import FileLock
    from optuna.trial import TrialState

    with FileLock(str(out / "study.lock")), warnings.catch_warnings():
        # Optuna warns that heartbeats are meant for study.optimize; this loop sends its own.
        warnings.simplefilter("ignore")
        waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        if planned_only and not waiting:
            return None
        trial = study.ask(fixed_distributions=distributions)
        # Who runs it, written before the lock is released: `_fail_stale` (under the same lock) then never
        # sees a running trial of a live worker on this machine without its name.
        trial.set_user_attr("worker", {"host": socket.gethostname(), "pid": os.getpid()})
        study._storage.record_heartbeat(trial._trial_id)
        return trial


def _fail_stale(study, out: Path, own_storage: bool) -> None:
    """Fail (and so queue again) running trials whose worker is gone: at once when it was a process on this
    machine that no longer exists (or, in the sweep's own SQLite study, one killed before it could write
    its name), else when its heartbeat is older than the grace period."""
    from filelock import FileLock
    from optuna.storages import fail_stale_trials
    from optuna.trial import TrialState

    storage = study._storage
    with FileLock(str(out / "study.lock")):
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            worker = t.user_attrs.get("worker")
            gone = (
                own_storage
                if worker is None
                else worker.get("host") == socket.gethostname() and not _process_exists(worker.get("pid", -1))
            )
            if gone and storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                storage.get_heartbeat_stale_trial_callback()(study, storage.get_trial(t._trial_id))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fail_stale_trials is marked experimental
        fail_stale_trials(study)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return pid > 0


def _tell_recorded(study, trial, row: dict[str, Any] | None, cfg: SweepConfig) -> None:
    """Close a trial whose settings are already done without training them again."""
    from optuna.trial import TrialState

    value = (row or {}).get("metrics", {}).get(cfg.metric)
    trial.set_user_attr("duplicate_of_recorded_trial", True)
    if row is not None and row.get("status") == "ok" and _finite(value):
        study.tell(trial, float(value))
    else:
        study.tell(trial, state=TrialState.FAIL)


class _Heartbeat:
    """Records a running trial's heartbeat every ``interval`` seconds from a thread, until closed."""

    def __init__(self, study, trial, interval: int) -> None:
        self._stop = threading.Event()
        storage, trial_id_ = study._storage, trial._trial_id

        def beat() -> None:
            while not self._stop.wait(interval):
                storage.record_heartbeat(trial_id_)

        storage.record_heartbeat(trial_id_)
        self._thread = threading.Thread(target=beat, name="sweep-heartbeat", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def _run_trial(
    study, trial, tid: str, settings: dict[str, Any], trial_fn: TrialFn, out: Path, cfg: SweepConfig
) -> dict[str, Any]:
    """Train one trial with heartbeats, tell the study, and record it in results.jsonl."""
    from optuna.trial import TrialState

    start = time.time()
    heartbeat = _Heartbeat(study, trial, cfg.heartbeat)
    try:
        metrics, status, error = trial_fn(settings, out / "trials" / tid), "ok", None
        # Numbers only (train() also returns paths and its plan; those stay in the trial's directory).
        metrics = {
            k: v for k, v in metrics.items() if v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
        }
        value = metrics.get(cfg.metric)
        if value is None:
            raise ValueError(
                f"train() returned no {cfg.metric!r} (it returned {sorted(metrics)}); choose --metric among them"
            )
        if not _finite(value):
            status, error = "failed", f"{cfg.metric} is {value} (diverged)"
    except (ValueError, FileNotFoundError) as e:
        # A bad setting or missing data is the user's to fix: stop, nothing recorded for it (the trial
        # is failed in the study without the "diverged" mark, so the next run plans it again).
        heartbeat.close()
        trial.set_user_attr("error", f"{type(e).__name__}: {e}")
        study.tell(trial, state=TrialState.FAIL)
        raise
    except (RuntimeError, FloatingPointError, ArithmeticError) as e:  # divergence, OOM: record, go on
        metrics, status, error = {}, "failed", f"{type(e).__name__}: {e}"
    except BaseException:  # Ctrl-C: the trial is failed in the study and planned again next time
        heartbeat.close()
        study.tell(trial, state=TrialState.FAIL)
        raise
    heartbeat.close()
    row = {
        "trial": tid,
        "settings": settings,
        "status": status,
        "metrics": metrics,
        "seconds": round(time.time() - start, 2),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if error:
        row["error"] = error
        log.warning("trial %s failed: %s", tid, error)
    jsonl.append(out / RESULTS, row, default=_jsonable)  # after a torn line, on a fresh one
    write_table(out, _latest_rows(out), cfg.metric, cfg.mode)
    if status == "ok":
        study.tell(trial, float(metrics[cfg.metric]))
    else:
        trial.set_user_attr("diverged", error)
        study.tell(trial, state=TrialState.FAIL)
    return row


def _latest_rows(out: Path) -> list[dict[str, Any]]:
    latest = {r["trial"]: r for r in read_results(out)}
    return list(latest.values())


# ----------------------------------------------------------------------------- transfer plot
def curves(rows: list[dict[str, Any]], x: str, series: str, metric: str) -> dict[Any, list[tuple[float, float]]]:
    """{series value: sorted [(x, metric)]} over finished trials; failed trials count as +inf (diverged)."""
    out: dict[Any, list[tuple[float, float]]] = {}
    for r in rows:
        s = r["settings"]
        if x not in s or series not in s:
            continue
        value = r.get("metrics", {}).get(metric)
        y = float(value) if r.get("status") == "ok" and _finite(value) else math.inf
        out.setdefault(s[series], []).append((float(s[x]), y))
    return {k: sorted(v) for k, v in sorted(out.items(), key=lambda kv: kv[0])}


def best_index(points: list[tuple[float, float]]) -> int:
    """Index (along sorted x) of the lowest metric."""
    return int(np.argmin([y for _, y in points]))


def plot_curves(
    panels: dict[str, list[dict[str, Any]]], x: str, series: str, metric: str, path: str | Path, title: str = ""
) -> Path:
    """One panel per sweep (e.g. μP and SP): ``metric`` against ``x`` (log axis), one line per ``series``
    value, the best point of each line marked."""
    require_extra("train", "matplotlib", feature="the sweep plot")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4), squeeze=False, sharey=True)
    finite = [
        y
        for rows in panels.values()
        for pts in curves(rows, x, series, metric).values()
        for _, y in pts
        if math.isfinite(y)
    ]
    for ax, (name, rows) in zip(axes[0], panels.items()):
        lines = curves(rows, x, series, metric)
        colors = plt.cm.plasma(np.linspace(0, 0.85, max(1, len(lines))))
        for color, (value, pts) in zip(colors, lines.items()):
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            ax.plot(xs, ys, marker="o", color=color, label=f"{series.rsplit('.', 1)[-1]}={value}")
            b = best_index(pts)
            ax.plot([xs[b]], [ys[b]], marker="*", ms=14, color=color, markeredgecolor="black")
        ax.set_xscale("log", base=2)
        ax.set_xlabel(x)
        ax.set_title(name)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel(metric)
    if finite:
        lo, hi = min(finite), max(finite)
        axes[0][0].set_ylim(lo - 0.05 * (hi - lo + 1e-9), hi + 0.05 * (hi - lo + 1e-9))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


__all__ = [
    "SweepConfig",
    "SweepResult",
    "run_sweep",
    "trial_settings",
    "trial_id",
    "apply_overrides",
    "read_results",
    "write_table",
    "best_trial",
    "curves",
    "best_index",
    "plot_curves",
    "parse_value",
]
