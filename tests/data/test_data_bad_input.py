"""Bad input to `prepare`: each case stops with a message naming the file (and line) and the fix, or is
skipped and counted, and nothing already written is lost."""

from __future__ import annotations

import gzip
import json
import os

import numpy as np
import pytest

from cerebras_gpt.data.prepare import prepare
from cerebras_gpt.tokenizer import load_tokenizer

KW = dict(val_fraction=0, workers=1, progress=False)


def lines(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def decoded(out):
    tok = load_tokenizer()
    return tok.decode(np.fromfile(out / "train_00000.bin", dtype=np.uint16).tolist()).split("<|endoftext|>")[:-1]


def test_malformed_jsonl_line_names_file_and_line(tmp_path):
    path = lines(tmp_path / "c.jsonl", [{"text": "one"}, {"text": "two"}, '{"text": "three"', {"text": "four"}])
    with pytest.raises(ValueError, match=r"c\.jsonl:3: malformed JSONL line .*--skip-bad"):
        prepare([path], tmp_path / "o", **KW)
    assert not (tmp_path / "o" / "meta.json").exists()


def test_skip_bad_skips_and_counts(tmp_path):
    path = lines(
        tmp_path / "c.jsonl", [{"text": "one"}, "{not json", {"text": "two"}, "[1, 2]", {"text": 5}, {"text": "three"}]
    )
    meta = prepare([path], tmp_path / "o", skip_bad=True, **KW)
    assert meta["stats"]["bad_lines"] == 3 and decoded(tmp_path / "o") == ["one", "two", "three"]


def test_a_failed_run_keeps_its_work_and_resumes(tmp_path):
    good = [{"text": f"document number {i} " * 20} for i in range(400)]
    path = lines(tmp_path / "c.jsonl", good[:300] + ["{broken"] + good[300:])
    with pytest.raises(ValueError, match=r"c\.jsonl:301:"):
        prepare([path], tmp_path / "o", block_size=4096, **KW)
    state = json.loads((tmp_path / "o" / ".prepare" / "state.json").read_text())
    assert state["tasks"] > 0 and state["writers"]["train"]["shards"][0]["tokens"] > 0  # work before it kept
    resumed = prepare([path], tmp_path / "o", block_size=4096, skip_bad=True, **KW)  # carries on from there
    fresh = prepare([path], tmp_path / "f", block_size=4096, skip_bad=True, **KW)
    assert resumed["splits"] == fresh["splits"] and resumed["stats"] == fresh["stats"]
    assert (tmp_path / "o" / "train_00000.bin").read_bytes() == (tmp_path / "f" / "train_00000.bin").read_bytes()


def test_invalid_utf8_is_replaced_and_counted(tmp_path, caplog):
    (tmp_path / "a.txt").write_bytes(b"caf\xe9 ok \xff\xfe end \xef\xbf\xbd kept")  # a real U+FFFD is not counted
    (tmp_path / "b.jsonl").write_bytes(b'{"text": "bad \xc3 byte"}\n{"text": "lone \\ud800 surrogate"}\n')
    with caplog.at_level("WARNING"):
        meta = prepare([str(tmp_path / "a.txt"), str(tmp_path / "b.jsonl")], tmp_path / "o", **KW)
    assert meta["stats"]["invalid_utf8"] == 5  # \xe9, \xff, \xfe, \xc3, and the surrogate
    assert decoded(tmp_path / "o") == [
        "caf\ufffd ok \ufffd\ufffd end \ufffd kept",
        "bad \ufffd byte",
        "lone \ufffd surrogate",
    ]
    assert "5 invalid UTF-8 sequences were replaced" in caplog.text


def test_empty_documents_are_skipped_and_counted(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "blank.txt").write_text(" \n\t\n")
    lines(tmp_path / "c.jsonl", [{"text": ""}, {"text": "real"}, {"text": "  "}, {"text": None}])
    pq.write_table(pa.table({"text": ["", None, "also real"]}), tmp_path / "d.parquet")
    meta = prepare([str(tmp_path)], tmp_path / "o", **KW)
    assert meta["stats"]["empty"] == 2 + 3 + 2 and meta["documents"] == 2
    assert decoded(tmp_path / "o") == ["real", "also real"]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: lines(d / "c.jsonl", [{"body": "x"}]), r"c\.jsonl:1: no field 'text'.*--text-key"),
        (lambda d: _parquet(d, {"body": ["x"]}), r"no column 'text' \(columns: \['body'\]\).*--text-key"),
        (
            lambda d: lines(d / "c.jsonl", [{"text": ""}, {"text": " "}]),
            r"no documents in the inputs \(2 read, 2 empty",
        ),
        (lambda d: str(d / "missing.jsonl"), r"'.*missing\.jsonl': no such file"),
        (lambda d: _write(d / "x.csv", b"a,b"), r"unsupported file type"),
        (lambda d: _mkdir(d / "empty_dir"), r"holds no supported files"),
        (lambda d: str(d / "*.jsonl.zst"), r"matches no files"),
        (lambda d: _symlink(d / "gone.jsonl"), r"cannot read input"),
        (lambda d: _write(d / "bad.jsonl.gz", b"not gzip at all"), r"cannot read input .*bad\.jsonl\.gz"),
        (lambda d: _write(d / "bad.jsonl.zst", b"not zstd at all"), r"cannot read input .*bad\.jsonl\.zst"),
        (lambda d: _write(d / "bad.parquet", b"PAR1 garbage"), r"cannot read input .*bad\.parquet.* as Parquet"),
        (lambda d: "builtin:nope", r"unknown built-in corpus.*builtin:pydoc"),
        (lambda d: "hf:a:b:c:d", r"hf:NAME\[:CONFIG\[:SPLIT\]\]"),
    ],
)
def test_clear_errors(tmp_path, make, message):
    with pytest.raises(ValueError, match=message):
        prepare([make(tmp_path)], tmp_path / "o", **KW)
    assert not (tmp_path / "o" / "meta.json").exists()


def test_hub_dataset_without_network_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match=r"hub dataset 'someone/corpus' .*HF_HUB_OFFLINE.*pass its files"):
        prepare(["hf:someone/corpus"], tmp_path / "o", **KW)


def test_truncated_gzip_is_a_clear_error(tmp_path):
    data = gzip.compress(b"".join(json.dumps({"text": f"doc {i}"}).encode() + b"\n" for i in range(2000)))
    _write(tmp_path / "t.jsonl.gz", data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cannot read input .*t\.jsonl\.gz"):
        prepare([str(tmp_path / "t.jsonl.gz")], tmp_path / "o", **KW)


def test_bad_options(tmp_path):
    for kw, message in (
        (dict(val_fraction=1.0), "val_fraction"),
        (dict(format="csv"), "format"),
        (dict(seq_len=0), "seq_len"),
        (dict(block_size=10), "block_size"),
    ):
        with pytest.raises(ValueError, match=message):
            prepare(["builtin:pydoc"], tmp_path / "o", **{**KW, **kw})
    with pytest.raises(ValueError, match="all 79 documents went to the validation split"):
        prepare(["builtin:pydoc"], tmp_path / "o", **{**KW, "val_fraction": 0.999999})


def _write(path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def _mkdir(path) -> str:
    path.mkdir()
    return str(path)


def _symlink(path) -> str:
    os.symlink(path.parent / "nowhere.jsonl", path)
    return str(path)


def _parquet(d, columns) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), d / "c.parquet")
    return str(d / "c.parquet")
