"""An interrupted `prepare` (killed with SIGKILL mid-run) resumes to the same bytes as an uninterrupted run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from cerebras_gpt.data.prepare import prepare


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """About 12 MB of JSONL (zstd) with repeated documents, plus paragraph text: a few seconds of work."""
    import pydoc_data.topics

    import zstandard

    d = tmp_path_factory.mktemp("corpus")
    paras = [
        p for k in sorted(pydoc_data.topics.topics) for p in pydoc_data.topics.topics[k].split("\n\n") if p.strip()
    ]
    rows = [json.dumps({"text": f"{i % 5000}: {paras[i % len(paras)]}"}) for i in range(40_000)]
    with open(d / "a.jsonl.zst", "wb") as raw, zstandard.ZstdCompressor().stream_writer(raw) as f:
        f.write(("\n".join(rows) + "\n").encode())
    (d / "b.txt").write_text("\n\n".join(paras * 4))
    return d


def test_killed_run_resumes_to_identical_bytes(tmp_path, corpus):
    out = tmp_path / "out"
    args = [
        str(corpus / "a.jsonl.zst"),
        str(corpus / "b.txt"),
        "--paragraphs",
        "--dedup",
        "--val-fraction",
        "0.05",
        "--shard-tokens",
        "200000",
        "--block-size",
        "16384",
        "--workers",
        "1",
        "--no-progress",
    ]
    cmd = [sys.executable, "-m", "cerebras_gpt", "prepare", *args, "--out", str(out)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    state = out / ".prepare" / "state.json"
    try:
        while proc.poll() is None:  # kill it once it has committed real work
            if state.exists() and json.loads(state.read_text())["tasks"] >= 3:
                break
            time.sleep(0.01)
        assert proc.poll() is None, f"prepare finished before it could be interrupted: {proc.stderr.read()}"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert not (out / "meta.json").exists()
    committed = json.loads(state.read_text())
    resumed = subprocess.run(cmd, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming an interrupted run in {out} after {committed['tasks']} tasks" in resumed.stderr
    assert not (out / ".prepare").exists()

    # The reference: one uninterrupted run, in-process, with two worker processes.
    fresh = prepare(
        [str(corpus / "a.jsonl.zst"), str(corpus / "b.txt")],
        tmp_path / "fresh",
        paragraphs=True,
        dedup=True,
        val_fraction=0.05,
        shard_tokens=200_000,
        block_size=16384,
        workers=2,
        progress=False,
    )
    meta = json.loads((out / "meta.json").read_text())
    assert meta["stats"]["duplicates"] > 0 and len(meta["splits"]["train"]["shards"]) > 1
    assert {k: v for k, v in meta.items() if k != "command"} == {k: v for k, v in fresh.items() if k != "command"}
    for split in meta["splits"].values():
        for shard in split["shards"]:
            assert (out / shard["file"]).read_bytes() == (tmp_path / "fresh" / shard["file"]).read_bytes()


def test_concurrent_runs_on_one_directory_agree(tmp_path):
    """Every torchrun rank may call prepare on the same directory: one works, the others wait and reuse it."""
    cmd = [
        sys.executable,
        "-m",
        "cerebras_gpt",
        "prepare",
        "builtin:pydoc",
        "--out",
        str(tmp_path / "o"),
        "--val-fraction",
        "0.05",
        "--no-progress",
    ]
    procs = [subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errors = [p.communicate()[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    assert sum("nothing to do" in e for e in errors) == 1 and sum("prepared 79 documents" in e for e in errors) == 1
    meta = json.loads((tmp_path / "o" / "meta.json").read_text())
    assert meta["documents"] == 79 and not (tmp_path / "o" / ".prepare").exists()
