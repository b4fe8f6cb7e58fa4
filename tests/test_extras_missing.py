"""A core-only install: every optional package blocked at import (a `sys.meta_path` finder installed
before the CLI starts), the way `pip install cerebras-gpt` without extras leaves them. Features that
need an extra stop with one line naming `pip install 'cerebras-gpt[EXTRA]'`, no traceback; TensorBoard
and plots are skipped with a warning while the run itself succeeds."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from cerebras_gpt import GPT, GPTConfig

# What the extras in pyproject.toml install (and what they pull in that our code could import).
OPTIONAL = [
    "fastapi",
    "uvicorn",
    "starlette",
    "prometheus_client",
    "zstandard",
    "pyarrow",
    "h5py",
    "datasets",
    "lm_eval",
    "scipy",
    "matplotlib",
    "tensorboard",
    "gguf",
    "peft",
    "transformers",
    "rouge_score",
    "openai",
    "httpx",
    "playwright",
    "schemathesis",
    "hypothesis",
    "optuna",
    "sqlalchemy",
    "alembic",
]


# Every finder on sys.meta_path is wrapped so that it does not see the optional packages: imports of them
# raise ModuleNotFoundError and importlib.util.find_spec returns None, exactly as when they are not installed.
def without(blocked: list[str]) -> str:
    """A `python -c` script that runs the CLI with the ``blocked`` packages invisible."""
    return f"""
import sys

class WithoutOptional:
    def __init__(self, finder):
        self.finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            return None
        find_spec = getattr(self.finder, "find_spec", None)
        return find_spec(name, path, target) if find_spec else None

    def __getattr__(self, attr):
        return getattr(self.finder, attr)

assert not [m for m in sys.modules if m.split(".")[0] in {blocked!r}]
sys.meta_path[:] = [WithoutOptional(finder) for finder in sys.meta_path]
from cerebras_gpt.cli import main
sys.exit(main(sys.argv[1:]))
"""


CORE_ONLY = without(OPTIONAL)


def run_core_only(*args: str, timeout: float = 120, blocked: list[str] = OPTIONAL) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", without(blocked), *args], capture_output=True, text=True, timeout=timeout
    )


def assert_one_line_naming(proc: subprocess.CompletedProcess, extra: str) -> None:
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line]
    assert len(errors) == 1 and f"pip install 'cerebras-gpt[{extra}]'" in errors[0], proc.stderr[-3000:]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("core_only_model")
    GPT(GPTConfig.from_name("debug-tiny", block_size=64)).save_pretrained(directory)
    return directory


def test_the_blocker_blocks():
    check = "import importlib.util; assert importlib.util.find_spec('fastapi') is None; import fastapi"
    proc = subprocess.run(
        [sys.executable, "-c", CORE_ONLY.replace("from cerebras_gpt.cli import main", check)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0 and "ModuleNotFoundError: No module named 'fastapi'" in proc.stderr, proc.stderr


def test_core_commands_work_without_extras(model_dir):
    assert run_core_only("info").returncode == 0
    out = run_core_only("generate", "--model", str(model_dir), "--prompt", "Hi", "--max-new-tokens", "3")
    assert out.returncode == 0, out.stderr[-3000:]
    assert run_core_only("serve", "--help").returncode == 0


def test_serve_names_the_serve_extra(model_dir):
    assert_one_line_naming(run_core_only("serve", "--model", str(model_dir)), "serve")
    # An older [serve] install (fastapi and uvicorn, no prometheus_client): still one line, before loading the model.
    proc = run_core_only("serve", "--model", str(model_dir), blocked=["prometheus_client"])
    assert_one_line_naming(proc, "serve")
    assert "prometheus_client is not installed" in proc.stderr


def test_zstd_and_parquet_inputs_name_the_data_extra(tmp_path):
    (tmp_path / "a.jsonl.zst").write_bytes(b"\x28\xb5\x2f\xfd")
    (tmp_path / "b.parquet").write_bytes(b"PAR1")
    for name in ("a.jsonl.zst", "b.parquet"):
        proc = run_core_only("prepare", str(tmp_path / name), "--out", str(tmp_path / f"out-{name}"))
        assert_one_line_naming(proc, "data")


def test_gguf_export_names_the_export_extra(model_dir, tmp_path):
    proc = run_core_only("export", "--model", str(model_dir), "--format", "gguf", "--out", str(tmp_path / "m.gguf"))
    assert_one_line_naming(proc, "export")


def test_sweep_names_the_sweep_extra(tmp_path):
    proc = run_core_only("sweep", "--out", str(tmp_path / "sweep"), "--grid", "lr=1e-3,2e-3")
    assert_one_line_naming(proc, "sweep")


def test_lm_eval_tasks_name_the_eval_extra(model_dir):
    assert_one_line_naming(run_core_only("eval", "--model", str(model_dir), "--tasks", "lambada_openai"), "eval")


def test_train_runs_without_tensorboard_or_matplotlib_with_warnings(shared_data, tmp_path):
    from cerebras_gpt.data.prepare import prepare

    prepare(
        [str(shared_data / "tinyshakespeare.txt")],
        tmp_path / "data",
        paragraphs=True,
        val_fraction=0.05,
        workers=1,
        progress=False,
    )
    out = tmp_path / "run"
    proc = run_core_only(
        "train",
        "--model",
        "debug-tiny",
        "--data-dir",
        str(tmp_path / "data"),
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--seq-len",
        "32",
        "--out",
        str(out),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert any("TensorBoard event files skipped" in w and "pip install 'cerebras-gpt[train]'" in w for w in warnings)
    assert any("loss plot" in w and "matplotlib is not installed" in w for w in warnings), proc.stderr[-3000:]
    assert (out / "model" / "config.json").exists() and not (out / "loss.png").exists()
    assert not (out / "tensorboard").exists()


def test_mup_check_writes_its_tables_without_matplotlib_with_a_warning(tmp_path):
    out = tmp_path / "check"
    proc = run_core_only(
        "mup-check",
        "--widths",
        "16",
        "32",
        "--steps",
        "1",
        "--seq-len",
        "16",
        "--batch-size",
        "2",
        "--seeds",
        "1",
        "--n-layer",
        "1",
        "--out",
        str(out),
    )
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert any(
        line.startswith("warning: the plot") and "pip install 'cerebras-gpt[train]'" in line
        for line in proc.stderr.splitlines()
    ), proc.stderr[-3000:]
    assert (out / "coord_check.csv").exists() and (out / "coord_check.json").exists()
    assert not (out / "coord_check.png").exists()
