"""`prepare`: round trip, every input format, determinism across worker counts, the split, dedup,
and the command line."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from cerebras_gpt.data.prepare import PrepareConfig, prepare
from cerebras_gpt.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


@pytest.fixture(scope="module")
def docs():
    """About 1,000 real paragraphs (with non-ASCII ones) from the standard library's pydoc topics."""
    import pydoc_data.topics

    paras = []
    for key in sorted(pydoc_data.topics.topics):
        paras += [p.strip() for p in pydoc_data.topics.topics[key].split("\n\n") if p.strip()]
    return paras[:900] + ["naïve café — 東京 ✓", "emoji 🙂 and\ttabs", "x"]


def split_docs(out, split, tok):
    """The documents of a split, decoded: the token stream cut at EOS."""
    meta = json.loads((out / "meta.json").read_text())
    stream = np.concatenate(
        [np.fromfile(out / s["file"], dtype=meta["dtype"]) for s in meta["splits"][split]["shards"]]
        or [np.empty(0, dtype=meta["dtype"])]
    )
    assert len(stream) == 0 or stream[-1] == tok.eos_id
    cuts = np.flatnonzero(stream == tok.eos_id)
    return [tok.decode(stream[a + 1 if i else 0 : b].tolist()) for i, (a, b) in enumerate(zip([0, *cuts[:-1]], cuts))]


def write_jsonl(path, texts, key="text", opener=open):
    with opener(path, "wt", encoding="utf-8") as f:
        for i, t in enumerate(texts):
            f.write(json.dumps({"id": i, key: t}) + "\n")


def test_round_trip_decodes_to_documents_joined_by_eos(tmp_path, docs, tok):
    write_jsonl(tmp_path / "c.jsonl", docs)
    meta = prepare([str(tmp_path / "c.jsonl")], tmp_path / "out", val_fraction=0, workers=1, progress=False)
    stream = np.fromfile(tmp_path / "out" / "train_00000.bin", dtype=np.uint16)
    assert tok.decode(stream.tolist()) == "".join(d + "<|endoftext|>" for d in docs)
    assert meta["dtype"] == "uint16" and meta["eos_id"] == 50256 and meta["tokenizer"] == tok.identity()
    assert meta["splits"]["train"]["documents"] == len(docs) == meta["documents"]
    assert meta["splits"]["train"]["tokens"] == len(stream) == meta["tokens"]
    import hashlib

    assert meta["splits"]["train"]["shards"][0]["sha256"] == hashlib.sha256(stream.tobytes()).hexdigest()
    assert meta["seq_len"] == 2048 and meta["version"] and meta["command"]


def test_every_input_format(tmp_path, docs, tok):
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    a, b, c, d, e = docs[:150], docs[150:300], docs[300:450], docs[450:600], docs[600:750]
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    write_jsonl(src / "a.jsonl", a)
    write_jsonl(src / "b.jsonl.gz", b, opener=gzip.open)
    with open(src / "c.jsonl.zst", "wb") as raw, zstandard.ZstdCompressor().stream_writer(raw) as f:
        f.write("".join(json.dumps({"text": t}) + "\n" for t in c).encode())
    pq.write_table(pa.table({"text": d, "n": list(range(len(d)))}), src / "sub" / "d.parquet", row_group_size=40)
    (src / "sub" / "e.txt").write_text("\n\n \n".join(e) + "\n")  # paragraphs split by (blank) lines
    (src / "sub" / "f.txt").write_text("one whole file\n\nis one document\n")
    (src / "notes.csv").write_text("not an input")  # unsupported files in a directory are passed over

    def run(inputs, **kw):
        out = tmp_path / f"out{run.n}"
        run.n += 1
        prepare(inputs, out, val_fraction=0, workers=1, progress=False, block_size=4096, **kw)
        return split_docs(out, "train", tok)

    run.n = 0

    assert run([str(src / "a.jsonl")]) == a
    assert run([str(src / "b.jsonl.gz")]) == b
    assert run([str(src / "c.jsonl.zst")]) == c
    assert run([str(src / "sub" / "d.parquet")]) == d
    assert run([str(src / "sub" / "e.txt")], paragraphs=True) == e
    assert run([str(src / "sub" / "f.txt")]) == ["one whole file\n\nis one document\n"]
    # A directory is read recursively in sorted path order; a glob the same.
    whole_dir = run([str(src)], paragraphs=True)
    assert whole_dir == a + b + c + d + e + ["one whole file", "is one document"]
    assert run([str(src / "**" / "*.parquet"), str(src / "*.jsonl*")]) == d + a + b + c
    # A Hugging Face dataset through `datasets` streaming (a local dataset folder: no network needed).
    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    write_jsonl(hf_dir / "train.jsonl", a[:20], key="body")
    assert run([f"hf:{hf_dir}"], text_key="body") == a[:20]


def test_config_object_and_keywords_prepare_the_same(tmp_path, docs):
    write_jsonl(tmp_path / "c.jsonl", docs[:100])
    config = PrepareConfig(
        [str(tmp_path / "c.jsonl")], str(tmp_path / "a"), val_fraction=0.1, workers=1, progress=False
    )
    by_config = prepare(config)
    by_keywords = prepare([str(tmp_path / "c.jsonl")], tmp_path / "b", val_fraction=0.1, workers=1, progress=False)
    assert by_config["signature"] == by_keywords["signature"] and by_config["splits"] == by_keywords["splits"]
    with pytest.raises(TypeError, match="unknown options.*val_fraktion"):
        prepare(["x.txt"], tmp_path / "c", val_fraktion=0.1)
    with pytest.raises(ValueError, match=r"val_fraction=1.*; threads=0"):  # every problem, in one error
        prepare(PrepareConfig(["x.txt"], str(tmp_path / "c"), val_fraction=1, threads=0))


def test_builtin_pydoc_corpus(tmp_path, tok):
    import pydoc_data.topics

    meta = prepare(["builtin:pydoc"], tmp_path / "o", val_fraction=0.2, workers=1, progress=False)
    topics = [pydoc_data.topics.topics[k] for k in sorted(pydoc_data.topics.topics)]
    train, val = split_docs(tmp_path / "o", "train", tok), split_docs(tmp_path / "o", "val", tok)
    assert sorted(train + val) == sorted(topics) and train and val
    assert train == [t for t in topics if t in set(train)]  # order kept within a split
    assert meta["documents"] == len(topics)


def test_split_is_by_document_hash_and_stable(tmp_path, docs, tok):
    write_jsonl(tmp_path / "c.jsonl", docs)
    write_jsonl(tmp_path / "r.jsonl", docs[::-1])
    prepare([str(tmp_path / "c.jsonl")], tmp_path / "a", val_fraction=0.1, workers=1, progress=False)
    prepare([str(tmp_path / "r.jsonl")], tmp_path / "b", val_fraction=0.1, workers=1, progress=False)
    val_a, val_b = split_docs(tmp_path / "a", "val", tok), split_docs(tmp_path / "b", "val", tok)
    # The same documents go to validation whatever their order, and about 10% of them do.
    assert set(val_a) == set(val_b) and val_b == val_a[::-1]
    assert 0.05 * len(docs) < len(val_a) < 0.15 * len(docs)
    assert set(split_docs(tmp_path / "a", "train", tok)) | set(val_a) == set(docs)


def test_one_and_four_workers_give_identical_bytes(tmp_path, docs):
    write_jsonl(tmp_path / "c.jsonl", docs * 3)
    metas = []
    for workers, threads in ((1, 1), (4, 1), (2, 3)):
        out = tmp_path / f"w{workers}t{threads}"
        meta = prepare(
            [str(tmp_path / "c.jsonl")],
            out,
            val_fraction=0.05,
            dedup=True,
            workers=workers,
            threads=threads,
            progress=False,
            block_size=8192,
            shard_tokens=30_000,
        )
        meta.pop("command")
        metas.append((meta, {p.name: p.read_bytes() for p in sorted(out.glob("*.bin"))}))
    assert len(metas[0][1]) > 2  # several shards per split
    assert metas[0] == metas[1] == metas[2]
    assert metas[0][0]["stats"]["duplicates"] == 3 * len(docs) - len(set(docs))  # every repeat dropped
    assert metas[0][0]["documents"] == len(set(docs))


def test_uint32_for_a_vocabulary_past_65536(tmp_path, tok):
    import tokenizers

    from cerebras_gpt.tokenizer import default_tokenizer_files

    vocab, merges = default_tokenizer_files()
    hf = tokenizers.Tokenizer(tokenizers.models.BPE.from_file(str(vocab), str(merges)))
    hf.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = tokenizers.decoders.ByteLevel()
    hf.add_special_tokens(["<|endoftext|>"] + [f"<extra_{i}>" for i in range(70_000 - 50_257)])
    (tmp_path / "tok").mkdir()
    hf.save(str(tmp_path / "tok" / "tokenizer.json"))
    (tmp_path / "a.txt").write_text("hello <extra_19000> world")
    meta = prepare(
        [str(tmp_path / "a.txt")],
        tmp_path / "o",
        tokenizer=str(tmp_path / "tok"),
        val_fraction=0,
        workers=1,
        progress=False,
    )
    assert meta["dtype"] == "uint32" and meta["tokenizer"]["vocab_size"] == 70_000
    ids = np.fromfile(tmp_path / "o" / "train_00000.bin", dtype=np.uint32)
    assert 50_257 + 19_000 in ids.tolist() and ids[-1] == meta["eos_id"]


def test_hdf5_export_reads_back(tmp_path, docs):
    import h5py
    import torch

    from cerebras_gpt.data.loader import TokenWindowLoader, iter_validation

    write_jsonl(tmp_path / "c.jsonl", docs)
    T = 64
    kw = dict(val_fraction=0.1, workers=1, progress=False, seq_len=T)
    prepare([str(tmp_path / "c.jsonl")], tmp_path / "bin", **kw)
    meta = prepare([str(tmp_path / "c.jsonl")], tmp_path / "h5", format="hdf5", examples_per_file=100, **kw)
    assert meta["format"] == "hdf5" and not list((tmp_path / "h5").glob("*.bin"))
    stream = np.fromfile(tmp_path / "bin" / "train_00000.bin", dtype=np.uint16).astype(np.int64)
    files = meta["splits"]["train"]["hdf5"]
    assert len(files) > 1 and (tmp_path / "h5" / "train" / "data_params.json").exists()
    data = []
    for entry in files:
        with h5py.File(tmp_path / "h5" / entry["file"]) as f:
            assert f["data"].shape[1:] == (3, T) and f.attrs["n_examples"] == f["data"].shape[0] == entry["examples"]
            data.append(f["data"][:])
    data = np.concatenate(data)
    n_full = (len(stream) - 1) // T
    for i in (0, 1, n_full - 1):  # input_ids, mask, labels = window[:-1], 1s, window[1:]
        assert np.array_equal(data[i, 0], stream[i * T : i * T + T]) and np.array_equal(
            data[i, 2], stream[i * T + 1 : i * T + T + 1]
        )
        assert data[i, 1].all()
    tail = len(stream) - n_full * T - 1  # the padded remainder example
    assert (
        len(data) == n_full + 1
        and data[-1, 1].sum() == tail
        and np.array_equal(data[-1, 0, :tail], stream[n_full * T : -1])
    )
    # The loader gives the same batches from HDF5 as from the flat shards.
    a = iter(TokenWindowLoader(tmp_path / "bin", seq_len=T, batch_size=4, seed=5))
    b = iter(TokenWindowLoader(tmp_path / "h5", seq_len=T, batch_size=4, seed=5))
    assert all(torch.equal(next(a), next(b)) for _ in range(10))
    assert torch.equal(
        torch.cat(list(iter_validation(tmp_path / "bin", T, 8))),
        torch.cat(list(iter_validation(tmp_path / "h5", T, 8))),
    )
    with pytest.raises(ValueError, match="seq_len=64"):
        TokenWindowLoader(tmp_path / "h5", seq_len=32, batch_size=4)


def test_rerun_on_a_complete_directory(tmp_path, docs):
    write_jsonl(tmp_path / "c.jsonl", docs[:50])
    first = prepare([str(tmp_path / "c.jsonl")], tmp_path / "o", workers=1, progress=False)
    # The same inputs and options: nothing to do, the same meta back.
    assert prepare([str(tmp_path / "c.jsonl")], tmp_path / "o", workers=1, progress=False) == first
    # Other options: refused rather than lost, until --overwrite.
    with pytest.raises(ValueError, match="already holds prepared data.*--overwrite"):
        prepare([str(tmp_path / "c.jsonl")], tmp_path / "o", val_fraction=0.5, workers=1, progress=False)
    assert json.loads((tmp_path / "o" / "meta.json").read_text()) == first
    again = prepare(
        [str(tmp_path / "c.jsonl")], tmp_path / "o", val_fraction=0.5, overwrite=True, workers=1, progress=False
    )
    assert again["options"]["val_fraction"] == 0.5


def test_command_line(tmp_path, docs, capsys):
    from cerebras_gpt.cli import main

    write_jsonl(tmp_path / "c.jsonl", docs[:40], key="content")
    assert (
        main(
            [
                "prepare",
                str(tmp_path / "c.jsonl"),
                "--out",
                str(tmp_path / "o"),
                "--text-key",
                "content",
                "--val-fraction",
                "0",
                "--no-progress",
                "--workers",
                "1",
                "--format",
                "bin",
            ]
        )
        == 0
    )
    meta = json.loads((tmp_path / "o" / "meta.json").read_text())
    assert meta["documents"] == 40 and "--text-key content" in meta["command"]
    assert main(["prepare", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "p")]) == 2
    assert "no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["prepare", "--help"])
    assert "--val-fraction" in capsys.readouterr().out
