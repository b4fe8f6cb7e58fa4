"""Replace one marked section of a Markdown file (README.md, BENCHMARKS.md) with standard input.

Sections are delimited by ``<!-- BEGIN name -->`` and ``<!-- END name -->``; the file is locked while
it is rewritten so benchmark scripts and people can update different sections at the same time.

    python scripts/update_section.py BENCHMARKS.md generate < section.md
"""

from __future__ import annotations

import fcntl
import sys
from pathlib import Path


def update_section(path: str | Path, name: str, body: str) -> None:
    path = Path(path)
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    with open(path.with_suffix(path.suffix + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        text = path.read_text() if path.exists() else ""
        block = f"{begin}\n{body.strip()}\n{end}"
        if begin in text and end in text:
            head, rest = text.split(begin, 1)
            _, tail = rest.split(end, 1)
            text = head + block + tail
        else:
            text = text.rstrip() + "\n\n" + block + "\n"
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    update_section(sys.argv[1], sys.argv[2], sys.stdin.read())
