"""Shared fixtures: the ../shared corpora, tiny models, and a quiet torch."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

# pytest-xdist runs two workers on two cores: one intra-op thread each avoids oversubscription.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (tinyshakespeare.txt, wikitext-2-valid.txt); skips the test where it is absent."""
    if not (SHARED_DATA / "tinyshakespeare.txt").exists():
        pytest.skip(f"{SHARED_DATA} is absent (the corpora live beside the project, in ../shared/data)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory, shared_data) -> Path:
    """tinyshakespeare prepared by paragraphs (5% to val): the training tests' data. Read-only: a test that
    alters data prepares its own (and names its fixture data_dir too, which overrides this one)."""
    from cerebras_gpt.data.prepare import prepare

    out = tmp_path_factory.mktemp("shakespeare")
    prepare(
        [str(shared_data / "tinyshakespeare.txt")], out, paragraphs=True, val_fraction=0.05, workers=1, progress=False
    )
    return out


@pytest.fixture
def tiny_config():
    from cerebras_gpt import GPTConfig

    return GPTConfig.from_name("debug-tiny")


@pytest.fixture
def tiny_model(tiny_config):
    from cerebras_gpt import GPT

    torch.manual_seed(0)
    return GPT(tiny_config).eval()


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` skip, saying why, where there is no CUDA device (`pytest -m cuda` runs them)."""
    if torch.cuda.is_available():
        return
    reason = "needs a CUDA GPU: torch.cuda.is_available() is False" + (
        f" (torch {torch.__version__} is a CPU-only build)" if torch.version.cuda is None else ""
    )
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(pytest.mark.skip(reason=reason))


def kill_in_save_env(step: int) -> dict[str, str]:
    """Environment for a training subprocess that SIGKILLs itself while writing checkpoint ``step``
    (tests/harness/sitecustomize.py patches the checkpoint writer; the library has no such hook)."""
    import os

    harness = str(Path(__file__).parent / "harness")
    return {
        "CEREBRAS_GPT_TEST_KILL_IN_SAVE": str(step),
        "PYTHONPATH": os.pathsep.join(filter(None, [harness, os.environ.get("PYTHONPATH")])),
    }


def run_engine(engine, requests: list, timeout: float = 120.0) -> list[list]:
    """Submit each request separately to a serving engine (all before it starts, so they contend for slots
    and share ragged prefills), run it until every request has finished; the events of each request."""
    import threading
    import time

    events: list[list] = [[] for _ in requests]
    lock = threading.Lock()
    for i, r in enumerate(requests):

        def sink(ev, i=i):
            with lock:
                events[i].append(ev)

        engine.submit([r], sink)
    engine.start()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with lock:
                if all(e and e[-1].finish_reason for e in events):
                    break
            time.sleep(0.01)
    finally:
        engine.stop()
    return events


def engine_tokens(events) -> list[int]:
    """The token ids among a request's engine events."""
    return [e.token for e in events if e.token is not None]
