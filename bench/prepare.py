"""Tokenize-and-pack throughput: `cerebras_gpt.data.prepare` vs `datasets.map` with the fast HF tokenizer.

The corpus is ../shared/data (tinyshakespeare + WikiText-2 valid), cut into paragraphs (one document
each) and repeated into a JSONL file of at least ``--mb`` MB. Both sides start from that file, use the
same GPT-2 BPE files (encoder.json/vocab.bpe from ``cerebras_gpt/vocab``; the peer builds
``GPT2TokenizerFast`` from them, offline), append EOS to every document, write their output to disk, and
use ``--procs`` worker processes:

* cerebras-gpt: ``prepare([corpus], out, workers=procs, val_fraction=0)``, flat uint16 shards;
* the peer: ``datasets.load_dataset("json")`` (JSON -> Arrow), then ``Dataset.map(batched=True,
  num_proc=procs)`` with ``GPT2TokenizerFast``, writing Arrow.

Each run is a fresh process; the two alternate (ours, theirs, ours, ...) and medians are reported.
Peak memory is sampled every 20 ms over the whole process tree (the parent and its workers) as the sum
of PSS (proportional set size: pages a fork shares are counted once in total) and of RSS. Token counts
are checked equal. Ours is also run on a corpus twice as large, to show that its memory does not grow.

    flock /tmp/bench.lock python bench/prepare.py [--mb 50] [--procs 2] [--repeats 3] [--no-record]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT / "scripts"))


def build_corpus(path: Path, mb: float) -> dict:
    docs = []
    for name in ("tinyshakespeare.txt", "wikitext-2-valid.txt"):
        text = (SHARED / name).read_text(encoding="utf-8")
        docs += [p.strip() for p in re.split(r"\n(?:[ \t]*\n)+", text) if p.strip()]
    block = "".join(json.dumps({"text": d}) + "\n" for d in docs)
    copies = max(1, -(-int(mb * 1e6) // len(block.encode())))
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(block for _ in range(copies))
    return {
        "documents": len(docs) * copies,
        "bytes": path.stat().st_size,
        "text_bytes": sum(len(d.encode()) for d in docs) * copies,
    }


def run_ours(corpus: str, out: str, procs: int) -> dict:
    from cerebras_gpt.data.prepare import prepare

    start = time.perf_counter()
    meta = prepare([corpus], out, workers=procs, val_fraction=0, progress=False)
    return {"seconds": time.perf_counter() - start, "tokens": meta["tokens"]}


def run_theirs(corpus: str, out: str, procs: int) -> dict:
    os.environ["HF_DATASETS_CACHE"] = out
    import datasets
    import pyarrow.compute as pc
    from transformers import GPT2TokenizerFast

    from cerebras_gpt.tokenizer import default_tokenizer_files

    datasets.disable_progress_bars()
    vocab, merges = default_tokenizer_files()
    files = Path(out) / "gpt2"  # the Hugging Face names for the same two files
    files.mkdir(parents=True)
    shutil.copyfile(vocab, files / "vocab.json")
    shutil.copyfile(merges, files / "merges.txt")
    start = time.perf_counter()
    tok = GPT2TokenizerFast.from_pretrained(str(files))
    eos = tok.eos_token_id
    ds = datasets.load_dataset("json", data_files=corpus, split="train", cache_dir=out)
    loaded = time.perf_counter()

    def tokenize(batch):
        return {"input_ids": [ids + [eos] for ids in tok(batch["text"])["input_ids"]]}

    ds = ds.map(tokenize, batched=True, batch_size=1000, num_proc=procs, remove_columns=["text"])
    end = time.perf_counter()
    tokens = int(pc.sum(pc.list_value_length(ds.data.column("input_ids"))).as_py())
    return {"seconds": end - start, "map_seconds": end - loaded, "tokens": tokens}


def measure(side: str, corpus: Path, procs: int, work: Path) -> dict:
    """Run one side in a fresh process; its own timing, plus the peak memory of its process tree."""
    import psutil

    out = work / f"out-{side}"
    shutil.rmtree(out, ignore_errors=True)
    proc = subprocess.Popen(
        [sys.executable, __file__, "--_run", side, "--_corpus", str(corpus), "--_out", str(out), "--procs", str(procs)],
        stdout=subprocess.PIPE,
        text=True,
    )
    peak = {"pss": 0, "rss": 0}
    stop = threading.Event()

    def sample() -> None:
        root = psutil.Process(proc.pid)
        while not stop.is_set():
            pss = rss = 0
            try:
                for p in [root, *root.children(recursive=True)]:
                    try:
                        info = p.memory_full_info()
                        pss, rss = pss + info.pss, rss + info.rss
                    except (psutil.NoSuchProcess, psutil.AccessDenied):
                        pass
            except psutil.NoSuchProcess:
                return
            peak["pss"], peak["rss"] = max(peak["pss"], pss), max(peak["rss"], rss)
            stop.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, _ = proc.communicate()
    stop.set()
    sampler.join()
    if proc.returncode:
        raise SystemExit(f"{side} run failed with exit code {proc.returncode}")
    result = json.loads(stdout.strip().splitlines()[-1])
    shutil.rmtree(out, ignore_errors=True)
    return {**result, "peak_pss_mb": peak["pss"] / 1e6, "peak_rss_mb": peak["rss"] / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=50.0, help="corpus size in MB (JSONL)")
    parser.add_argument("--procs", type=int, default=os.cpu_count() or 1, help="worker processes on each side")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-record", action="store_true", help="do not write BENCHMARKS.md")
    parser.add_argument("--_run", help=argparse.SUPPRESS)
    parser.add_argument("--_corpus", help=argparse.SUPPRESS)
    parser.add_argument("--_out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._run:
        fn = run_ours if args._run == "ours" else run_theirs
        print(json.dumps(fn(args._corpus, args._out, args.procs)), flush=True)
        return
    if not (SHARED / "tinyshakespeare.txt").exists():
        raise SystemExit(f"{SHARED} is absent: the benchmark corpus lives beside the project, in ../shared/data")

    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-prepare-") as tmp:
        work = Path(tmp)
        corpus, big = work / "corpus.jsonl", work / "corpus2x.jsonl"
        info = build_corpus(corpus, args.mb)
        info2 = build_corpus(big, 2 * args.mb)
        print(
            f"corpus: {info['bytes'] / 1e6:.1f} MB JSONL, {info['documents']:,} documents; "
            f"{args.procs} processes each side",
            flush=True,
        )
        runs = {"ours": [], "theirs": []}
        for i in range(args.repeats):
            for side in ("ours", "theirs"):
                r = measure(side, corpus, args.procs, work)
                runs[side].append(r)
                print(
                    f"  run {i + 1} {side}: {r['tokens'] / r['seconds'] / 1e6:.2f} M tok/s "
                    f"({r['seconds']:.1f} s), peak PSS {r['peak_pss_mb']:.0f} MB, RSS {r['peak_rss_mb']:.0f} MB",
                    flush=True,
                )
        if {r["tokens"] for r in runs["ours"]} != {r["tokens"] for r in runs["theirs"]}:
            raise SystemExit(
                f"token counts differ: ours {runs['ours'][0]['tokens']}, theirs {runs['theirs'][0]['tokens']}"
            )
        big_runs = [measure("ours", big, args.procs, work) for _ in range(max(1, args.repeats // 2))]
        for r in big_runs:
            print(
                f"  2x corpus ours: {r['tokens'] / r['seconds'] / 1e6:.2f} M tok/s, peak PSS {r['peak_pss_mb']:.0f} MB",
                flush=True,
            )

    def med(rs, key):
        return statistics.median(r[key] for r in rs)

    tokens = runs["ours"][0]["tokens"]
    ours_tps = statistics.median(r["tokens"] / r["seconds"] for r in runs["ours"])
    theirs_tps = statistics.median(r["tokens"] / r["seconds"] for r in runs["theirs"])
    map_tps = statistics.median(r["tokens"] / r["map_seconds"] for r in runs["theirs"])
    big_tps = statistics.median(r["tokens"] / r["seconds"] for r in big_runs)
    print(
        f"cerebras-gpt prepare {ours_tps / 1e6:.2f} M tok/s vs datasets.map {theirs_tps / 1e6:.2f} M tok/s "
        f"(map alone {map_tps / 1e6:.2f}): {ours_tps / theirs_tps:.2f}x"
    )
    if args.no_record:
        return

    import datasets
    import tiktoken
    import transformers
    from update_section import update_section

    cpu = platform.processor() or platform.machine()
    mb = info["bytes"] / 1e6
    body = f"""## prepare: tokenize and pack

`flock /tmp/bench.lock python bench/prepare.py --mb {args.mb:g} --procs {args.procs} --repeats {args.repeats}`
on {os.cpu_count()} CPU cores ({cpu}, shared with other work: load average {load:.1f} at the start; read the
ratios), Python {platform.python_version()},
tiktoken {tiktoken.__version__}, datasets {datasets.__version__}, transformers {transformers.__version__}.
Corpus: ../shared/data (tinyshakespeare + WikiText-2 valid) cut into paragraphs, one document each, repeated
into {mb:.1f} MB of JSONL ({info["documents"]:,} documents, {tokens:,} GPT-2 tokens with EOS, the same count on
both sides). Both sides: {args.procs} worker processes, the same GPT-2 BPE files, EOS after each document, output
written to disk (the peer as it comes: `GPT2TokenizerFast` batches also use its own Rust threads inside each
`map` process). Medians of {args.repeats} alternating runs, each a fresh process; peak memory is the whole process
tree's (PSS counts pages shared between forked workers once; RSS counts them in every process).

| | tokens/s | wall time | peak PSS | peak RSS |
|---|---|---|---|---|
| cerebras-gpt `prepare` (uint16 shards) | **{ours_tps / 1e6:.2f} M** | {med(runs["ours"], "seconds"):.1f} s | {med(runs["ours"], "peak_pss_mb"):.0f} MB | {med(runs["ours"], "peak_rss_mb"):.0f} MB |
| `load_dataset("json")` + `Dataset.map` (GPT2TokenizerFast, Arrow) | {theirs_tps / 1e6:.2f} M | {med(runs["theirs"], "seconds"):.1f} s | {med(runs["theirs"], "peak_pss_mb"):.0f} MB | {med(runs["theirs"], "peak_rss_mb"):.0f} MB |
| `Dataset.map` alone (JSON already in Arrow) | {map_tps / 1e6:.2f} M | {med(runs["theirs"], "map_seconds"):.1f} s | | |
| cerebras-gpt `prepare`, corpus 2x ({info2["bytes"] / 1e6:.0f} MB) | {big_tps / 1e6:.2f} M | {med(big_runs, "seconds"):.1f} s | {med(big_runs, "peak_pss_mb"):.0f} MB | {med(big_runs, "peak_rss_mb"):.0f} MB |

Throughput ratio: **{ours_tps / theirs_tps:.2f}x** the `datasets` pipeline end to end, {ours_tps / map_tps:.2f}x its
`map` step alone. Memory: ours holds at most 2 x workers blocks of {1 << 20:,} bytes of input in flight, so its
peak does not grow with the corpus (compare the 1x and 2x rows: peak RSS is flat; PSS moves by tens of MB with
how many pages the forked workers still share when sampled); most of it is the Python process with torch
imported (the `cerebras_gpt` package) and the tokenizer's tables. Why it is faster: tiktoken's BPE, JSON parsing
and hashing inside the workers, documents tokenized straight into uint16 arrays, and no Arrow round trip.
"""
    update_section(ROOT / "BENCHMARKS.md", "prepare", body)
    print("BENCHMARKS.md section 'prepare' updated")


if __name__ == "__main__":
    main()
