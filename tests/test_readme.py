"""Every command in the README runs as written: the shell and Python blocks, section by section.

Each README section (``<!-- BEGIN name -->`` .. ``<!-- END name -->``) runs in a scratch copy of a workspace
holding what a reader would have by then: ``configs/`` (the repo's), ``../shared`` (the corpora), the demo's
model (``make demo`` = ``cerebras-gpt demo``, here 4 steps), ``data/pydoc``, and the files a reader brings
(``my.jsonl``, ``prompts.txt``, ...; see ``_files_a_reader_brings``). Commands run in order, through bash, with
``.venv/bin`` first on PATH. Three lists below are the only departures from the text, and each entry must still
match the README (a stale entry fails too):

- ``SMALLER``: run sizes cut so that a section runs in seconds (a 1000-step run becomes 4 steps);
- ``STANDINS``: what cannot be had here replaced by what can (hub ids by the demo's model: no network);
- ``NOT_RUN``: commands that cannot run on this machine, each with the reason.

``cerebras-gpt serve`` lines start a server in the background and wait until it answers; the client blocks that
follow (curl, the openai client) then run against the first one, as a reader would run them.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BIN = Path(sys.executable).parent

SMALLER = {
    "--steps 1000": "--steps 4",
    "--steps 500": "--steps 4 --batch-size 8 --seq-len 128 --eval-batches 2",
    "--steps 200": "--steps 4",
    "steps=100": "steps=4",
    "lr=2.5e-3,5e-3,1e-2,2e-2,4e-2 model_overrides.n_embd=32,64,128": "lr=5e-3,2e-2 model_overrides.n_embd=32,64",
    "--config configs/scaling/ladder-cpu.yaml": (
        "--config configs/scaling/ladder-cpu.yaml --widths 16 24 32 48 --tokens-per-param 2"
    ),
    "--config configs/finetune/sentiment.yaml": "--config configs/finetune/sentiment.yaml --epochs 0.25",
    "--data my.jsonl": "--data my.jsonl --epochs 0.5",
    "--max-new-tokens 50": "--max-new-tokens 8",
    "max_new_tokens=40": "max_new_tokens=8",
    "--max-batches 100": "--max-batches 2",
    "--trials 12": "--trials 2",
    "--stride 128": "--stride 128 --max-batches 4",
}
STANDINS = {
    "cerebras/Cerebras-GPT-111M": "runs/demo/model",  # hub ids need a network
    "--max-seq-len 1024": "--max-seq-len 256",  # ... and the demo's model has a 256-token context
}
NOT_RUN = {
    "make demo": "`make demo` and `make test` are what CI itself runs",
    "make test": "`make demo` and `make test` are what CI itself runs",
    "make gpu-check": "tests/test_gpu_check.py runs bench/gpu_check.py on the CPU",
    "hf:Salesforce/wikitext": "streams a hub dataset (no network here)",
    "--model Cerebras-GPT-111M --data-dir data/pile --dry-run": "probes a 111M step at 2048 tokens: minutes here",
    "torchrun --standalone --nproc-per-node 8": "8 GPUs",
    "torchrun --nnodes 2": "two machines",
    "--model Cerebras-GPT-111M-muP --data-dir data/pile": "a 111M run on the Pile",
    "--mup --fsdp ...": "elided arguments (tests/train/test_mup_train.py runs it under torchrun)",
    "mup-check --out runs/mup-check": (
        "a coordinate check of four widths: minutes (tests/experiments/test_mup_coord_check.py)"
    ),
    "--device cuda": "a GPU",
    "configs/mup/proxy-sweep.yaml": "the paper's proxy search: hours",
    "path/to/a-mup-checkpoint-dir": "a Cerebras μP checkpoint (tests/test_mup_btlm.py builds one)",
    "configs/sparsity/rigl-75.yaml": "a 111M sparse run (tests/test_sparsity_train.py trains small ones)",
    "configs/sparsity/spdf-finetune.yaml": "follows the 111M sparse run",
    "--model runs/sparse/model --format sparse": "follows the 111M sparse run",
    "Sparsifier(SparsityConfig": "a fragment of a training loop (tests/test_sparsity_sparsifier.py)",
    "--tasks hellaswag": "lm-eval downloads its task datasets (tests/evaluate/test_eval_lm_eval.py uses a local task)",
    "--tasks my_task --include-path my_tasks/": "a reader's own lm-eval task (tests/evaluate/test_eval_lm_eval.py)",
    "--tasks piqa": "lm-eval downloads piqa",
    "--host 0.0.0.0": "opens the machine to the network",
    "vllm serve": "vLLM needs a GPU",
    "docker run": "no Docker here",
    "llama-cli": "llama.cpp's tools are not installed by make setup",
    "llama-server": "llama.cpp's tools are not installed by make setup",
    "llama-quantize": "llama.cpp's tools are not installed by make setup",
}


@dataclass
class Block:
    section: str
    line: int
    language: str
    text: str


def readme_blocks() -> list[Block]:
    blocks, section, fence = [], None, None
    lines = README.read_text().splitlines()
    body: list[str] = []
    for number, line in enumerate(lines, 1):
        marker = re.match(r"<!-- (BEGIN|END) (\w+) -->", line)
        if marker:
            section = marker.group(2) if marker.group(1) == "BEGIN" else None
        elif line.startswith("```") and fence is None:
            fence, start, body = line[3:].strip(), number, []
        elif line.startswith("```"):
            if fence in ("bash", "python"):
                blocks.append(Block(section or "top", start, fence, "\n".join(body)))
            fence = None
        elif fence is not None:
            body.append(line)
    return blocks


def commands(block: Block) -> list[str]:
    """A bash block's commands, continuation lines joined; comment-only lines dropped."""
    joined = block.text.replace("\\\n", " ")
    return [c for c in joined.splitlines() if c.strip() and not c.lstrip().startswith("#")]


def _reason_not_run(text: str) -> str | None:
    return next((why for key, why in NOT_RUN.items() if key in text), None)


def _as_run_here(text: str) -> str:
    for table in (SMALLER, STANDINS):
        for old, new in table.items():
            text = text.replace(old, new)
    return text


SECTIONS = sorted({b.section for b in readme_blocks()})


def test_every_departure_from_the_readme_still_matches_it():
    text = "\n".join(b.text.replace("\\\n", " ") for b in readme_blocks())
    stale = [key for key in [*SMALLER, *STANDINS, *NOT_RUN] if key not in text]
    assert not stale, f"entries that no longer match any README block: {stale}"


def _files_a_reader_brings(ws: Path) -> None:
    shutil.copy(ROOT / "configs" / "finetune" / "data" / "sentiment_train.jsonl", ws / "my.jsonl")
    shutil.copy(ROOT / "configs" / "finetune" / "data" / "sentiment_test.jsonl", ws / "test.jsonl")
    (ws / "prompts.txt").write_text("The Python standard library\nA function\n")
    (ws / "gen.yaml").write_text("model: runs/demo/model\nprompt: The module\nmax_new_tokens: 8\ntemperature: 0.7\n")
    (ws / "my_texts").mkdir()
    (ws / "my_texts" / "a.txt").write_text("First paragraph of a.\n\nSecond paragraph of a.\n")
    (ws / "my_texts" / "b.md").write_text("# B\n\nSome markdown text.\n")
    (ws / "corpus.jsonl").write_text("".join(f'{{"text": "document {i} says something"}}\n' for i in range(50)))
    import zstandard

    records = "".join(f'{{"content": "document {i} says something"}}\n' for i in range(50))  # --text-key content
    (ws / "corpus.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(records.encode()))
    (ws / "more.jsonl").write_text('{"text": "more text here"}\n')
    import pyarrow as pa
    import pyarrow.parquet as pq

    (ws / "shards" / "2024").mkdir(parents=True)
    pq.write_table(pa.table({"text": ["a parquet document", "another one"]}), ws / "shards" / "2024" / "p.parquet")
    (ws / "key.txt").write_text("sk-local-key\n")


@pytest.fixture(scope="session")
def workspace(tmp_path_factory, shared_data) -> Path:
    """What a reader has after `make demo`, plus their own files."""
    top = tmp_path_factory.mktemp("readme")
    ws = top / "repo"
    ws.mkdir()
    (top / "shared").symlink_to(shared_data.parent)
    shutil.copytree(ROOT / "configs", ws / "configs")
    env = _env()
    subprocess.run(
        [str(BIN / "cerebras-gpt"), "demo", "--steps", "4", "--minutes", "1", "--out", "runs/demo"],
        cwd=ws,
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
    )
    subprocess.run(
        [
            str(BIN / "cerebras-gpt"),
            "prepare",
            "builtin:pydoc",
            "--out",
            "data/pydoc",
            "--val-fraction",
            "0.05",
            "--no-progress",
        ],
        cwd=ws,
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    for name in ("data/pile", "data/pile-prepared", "data/my-corpus"):
        (ws / name).symlink_to(ws / "data" / "pydoc")
    checkpoints = sorted((ws / "runs" / "demo" / "checkpoints").glob("step_*"))
    (ws / "runs" / "my-run" / "checkpoints").mkdir(parents=True)
    shutil.copytree(checkpoints[-1], ws / "runs" / "my-run" / "checkpoints" / "step_00001000")
    _files_a_reader_brings(ws)
    return ws


def _env() -> dict[str, str]:
    return dict(
        os.environ,
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        OMP_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1",
        PYTHONUNBUFFERED="1",
    )


class Servers:
    """`cerebras-gpt serve` lines: each starts in the background and must answer; the first is kept for clients."""

    def __init__(self, cwd: Path) -> None:
        self.cwd, self.procs, self.first = cwd, [], None

    def start(self, command: str) -> None:
        self.stop_all()
        proc = subprocess.Popen(
            ["bash", "-c", "exec " + command],
            cwd=self.cwd,
            env=_env(),
            start_new_session=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.procs.append(proc)
        deadline = time.time() + 180
        while time.time() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"README line `{command}` exited with {proc.returncode}:\n{proc.stdout.read()[-3000:]}")
            try:
                urllib.request.urlopen("http://127.0.0.1:8000/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail(f"README line `{command}` did not answer on :8000 within 180 s")
        self.first = self.first or command

    def serve_first_again(self) -> None:
        if self.first and not any(p.poll() is None for p in self.procs):
            first, self.first = self.first, None
            self.start(first)
            self.first = first

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
        self.procs = []


@pytest.mark.parametrize("section", SECTIONS)
def test_the_readme_section_runs_as_written(section, workspace, tmp_path):
    ws = tmp_path / "repo"
    shutil.copytree(workspace, ws, symlinks=True)
    (tmp_path / "shared").symlink_to((workspace.parent / "shared").resolve())
    for name in ("data/pile", "data/pile-prepared", "data/my-corpus"):  # point into this copy
        (ws / name).unlink()
        (ws / name).symlink_to(ws / "data" / "pydoc")
    servers = Servers(ws)
    ran, not_run = 0, 0
    try:
        for block in (b for b in readme_blocks() if b.section == section):
            steps = commands(block) if block.language == "bash" else [block.text]
            for step in steps:
                if _reason_not_run(step):
                    not_run += 1
                    continue
                command = _as_run_here(step)
                if block.language == "bash" and re.match(r"\s*cerebras-gpt serve\b", command):
                    servers.start(command)
                    ran += 1
                    continue
                if re.search(r"127\.0\.0\.1:8000", command):
                    servers.serve_first_again()
                argv = (
                    ["bash", "-c", "set -eo pipefail\n" + command]
                    if block.language == "bash"
                    else [sys.executable, "-c", command]
                )
                started = time.perf_counter()
                proc = subprocess.run(argv, cwd=ws, env=_env(), capture_output=True, text=True, timeout=600)
                print(f"{time.perf_counter() - started:6.1f} s  README.md:{block.line}  {command[:100]}")
                where = f"README.md line {block.line} ({block.language} block), ran as:\n{command}\n"
                assert proc.returncode == 0, (
                    where + f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
                )
                assert "Traceback" not in proc.stderr, where + proc.stderr[-3000:]
                ran += 1
    finally:
        servers.stop_all()
    assert ran + not_run > 0, f"section {section} has no commands"
