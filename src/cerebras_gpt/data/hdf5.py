"""The Cerebras ModelZoo HDF5 layout: writing it from packed shards, and reading its examples back.

ModelZoo's ``create_hdf5_dataset.py`` (facts §5) cuts the packed token stream into windows of ``msl + 1``
tokens with stride ``msl`` and stores each as one example of shape ``(3, msl)``: ``input_ids`` =
window[:-1], ``attention_mask`` (1 for real tokens, 0 for padding), ``labels`` = window[1:]. A file holds a
dataset ``data`` of shape ``(n, 3, msl)`` with the attribute ``n_examples``; files are named
``examples_<proc>_<k>.h5``, and ``data_params.json`` sits beside them. The leftover tail of a split is
written as one last example padded with ``pad_id`` (= EOS, ModelZoo's default) under a zero mask
(ModelZoo's ``--write_remainder``).

Here each split goes to its own folder (``OUT/train``, ``OUT/val``) so a ModelZoo config can point its
``data_dir`` at one of them, and ``meta.json`` lists the files. The loader reads the full examples (mask
all ones) back as the same ``(msl + 1)`` windows the flat shards give; the padded tail is skipped.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cerebras_gpt.data.shards import SPLITS, TokenStream
from cerebras_gpt.extras import require_extra


def _example(window: np.ndarray, msl: int, pad_id: int) -> np.ndarray:
    """``(3, msl)`` int32 from a window of up to ``msl + 1`` tokens."""
    n = len(window) - 1
    ex = np.full((3, msl), pad_id, dtype=np.int32)
    ex[0, :n], ex[2, :n] = window[:-1], window[1:]
    ex[1] = 0
    ex[1, :n] = 1
    return ex


def write_hdf5(out: Path, meta: dict, msl: int, examples_per_file: int) -> dict:
    """Convert the flat shards in ``out`` (described by ``meta``) to HDF5 files, delete the shards, and
    return the meta of the HDF5 directory."""
    require_extra("data", "h5py", feature="the HDF5 format")
    import h5py

    pad_id = int(meta["eos_id"])
    for split in SPLITS:
        info = meta["splits"][split]
        files = []
        folder = out / split
        folder.mkdir(exist_ok=True)
        if info["tokens"] > 1:
            stream = TokenStream(out, split, meta)
            n_full = (len(stream) - 1) // msl
            tail = len(stream) - n_full * msl  # tokens left for the padded remainder, counting the shared one
            n_examples = n_full + (1 if tail > 1 else 0)
            for k, start in enumerate(range(0, n_examples, examples_per_file)):
                count = min(examples_per_file, n_examples - start)
                data = np.empty((count, 3, msl), dtype=np.int32)
                full = max(0, min(count, n_full - start))
                if full:  # whole windows, all at once: consecutive windows overlap by one token
                    flat = stream.read(start * msl, full * msl + 1)
                    data[:full, 0] = flat[:-1].reshape(full, msl)
                    data[:full, 1] = 1
                    data[:full, 2] = flat[1:].reshape(full, msl)
                if full < count:  # the padded remainder
                    data[full] = _example(stream.read(n_full * msl, tail), msl, pad_id)
                name = f"examples_0_{k}.h5"
                with h5py.File(folder / name, "w") as f:
                    f.create_dataset("data", data=data, dtype="i4")
                    f.attrs["n_examples"] = count
                files.append({"file": f"{split}/{name}", "examples": count})
            del stream
        params = {
            "processing": {
                "max_seq_length": msl,
                "eos_id": pad_id,
                "pad_id": pad_id,
                "tokenizer_type": "GPT2Tokenizer",
                "files_per_record": examples_per_file,
                "write_remainder": True,
            },
            "post-process": {"n_examples": sum(f["examples"] for f in files)},
        }
        (folder / "data_params.json").write_text(json.dumps(params, indent=2) + "\n")
        for shard in info["shards"]:
            (out / shard["file"]).unlink()
        info["hdf5"] = files
    meta = {**meta, "format": "hdf5", "seq_len": msl}
    return meta


class HDF5Windows:
    """The full examples of one split of an HDF5 directory, as ``(msl + 1)`` token windows."""

    def __init__(self, data_dir: str | Path, split: str, seq_len: int, meta: dict) -> None:
        require_extra("data", "h5py", feature="reading HDF5 data")
        import h5py

        data_dir = Path(data_dir)
        if split not in meta["splits"]:
            raise ValueError(f"{str(data_dir)!r} has no split {split!r}; it has {sorted(meta['splits'])}")
        if seq_len != meta["seq_len"]:
            raise ValueError(
                f"{str(data_dir)!r} holds HDF5 examples of length {meta['seq_len']}; pass "
                f"seq_len={meta['seq_len']}, or prepare the data again with --seq-len {seq_len}"
            )
        self.files, rows = [], []
        for entry in meta["splits"][split].get("hdf5", []):
            f = h5py.File(data_dir / entry["file"], "r")
            data = f["data"]
            full = np.flatnonzero(data[:, 1, -1] == 1)  # a padded example has a zero at the mask's end
            rows += [(len(self.files), int(r)) for r in full]
            self.files.append(data)
        self.rows = np.array(rows, dtype=np.int64).reshape(-1, 2)

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, indices: np.ndarray) -> np.ndarray:
        """Windows ``(len(indices), msl + 1)`` int64: input ids plus the last label."""
        out = []
        for i in indices:
            file, row = self.rows[int(i)]
            ex = self.files[file][row]
            out.append(np.concatenate([ex[0], ex[2, -1:]]))
        return np.stack(out).astype(np.int64) if out else np.empty((0, 0), dtype=np.int64)
