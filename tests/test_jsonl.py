"""The one JSONL reader and writers: bad lines named by file and line, blank lines skipped, torn appends."""

from __future__ import annotations

import pytest

from cerebras_gpt import jsonl


def test_round_trip_skips_blank_lines_and_names_each_record(tmp_path):
    path = jsonl.write(tmp_path / "sub" / "r.jsonl", [{"a": 1}, {"text": "café ✓"}])
    path.write_text(path.read_text(encoding="utf-8") + "\n  \n" + '{"b": 2}\n', encoding="utf-8")
    assert jsonl.read(path) == [{"a": 1}, {"text": "café ✓"}, {"b": 2}]
    assert [where for where, _ in jsonl.iterate(path)] == [f"{path}:1", f"{path}:2", f"{path}:5"]


@pytest.mark.parametrize(
    "line, reason",
    [
        ('{"a": 1,', r"not valid JSON \(Expecting property name enclosed in double quotes at column 9\)"),
        ("[1, 2]", "a JSON list, not an object"),
        (b'{"a": "\xff"}', r"not UTF-8 text \(invalid start byte at byte 7\)"),
    ],
)
def test_a_bad_line_is_named_by_file_and_line(tmp_path, line, reason):
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"ok": true}\n' + (line if isinstance(line, bytes) else line.encode()) + b"\n")
    with pytest.raises(jsonl.JSONLError, match=rf"r\.jsonl:2: {reason}; each line must be one JSON object") as e:
        jsonl.read(path)
    assert e.value.where == f"{path}:2" and isinstance(e.value, ValueError)


def test_append_after_a_torn_line_keeps_the_new_record(tmp_path):
    path = tmp_path / "log.jsonl"
    jsonl.append(path, {"step": 1})
    with path.open("a") as f:
        f.write('{"step": 2, "lo')  # a writer killed mid-line
    jsonl.append(path, {"step": 3})
    lines = path.read_text().splitlines()
    assert lines == ['{"step": 1}', '{"step": 2, "lo', '{"step": 3}']
    with pytest.raises(jsonl.JSONLError, match="log.jsonl:2: not valid JSON"):
        jsonl.read(path)
