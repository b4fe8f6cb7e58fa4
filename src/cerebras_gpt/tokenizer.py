"""The GPT-2 BPE tokenizer, offline.

The default vocabulary is OpenAI's GPT-2 `encoder.json`/`vocab.bpe` pair, shipped as our package data in
`cerebras_gpt/vocab/` with its license (the same files as Hugging Face's `vocab.json`/`merges.txt`), run
through tiktoken's Rust BPE for speed. A model directory with `vocab.json` + `merges.txt` is read the same way;
a `tokenizer.json`, or a vocabulary with added tokens (e.g. a `[PAD]` = 50257), goes through Hugging
Face `tokenizers`. Either way ids equal `transformers.GPT2Tokenizer` built from the same files.

``bytes`` is a built-in byte-level tokenizer (the 256 bytes, then ``<|endoftext|>`` = 256; vocabulary
257): at the tiny widths of a CPU scaling ladder or a μP transfer study GPT-2's 50,257-row LM head would
be most of the compute, and small models learn bytes quickly.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path

ENDOFTEXT = "<|endoftext|>"
GPT2_EOS_ID = 50256
# GPT-2's pre-tokenizer pattern (tiktoken's r50k/gpt2 `pat_str`).
_GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


class Tokenizer:
    """GPT-2 BPE: ``encode(str) -> list[int]``, ``decode(list[int]) -> str``, ``eos_id``."""

    def __init__(
        self,
        *,
        vocab_file: Path | None = None,
        merges_file: Path | None = None,
        tokenizer_file: Path | None = None,
        name: str = "gpt2",
        hf_tokenizer=None,
    ) -> None:
        self.name = name
        self.vocab_file, self.merges_file, self.tokenizer_file = vocab_file, merges_file, tokenizer_file
        self._tiktoken = None
        self._hf = hf_tokenizer  # a `tokenizers.Tokenizer` built in memory (the byte-level one)
        if vocab_file is not None:
            vocab = json.loads(Path(vocab_file).read_text(encoding="utf-8"))
            if len(vocab) == 50257 and vocab.get(ENDOFTEXT) == GPT2_EOS_ID:
                self._tiktoken = _build_tiktoken(vocab_file, merges_file, name)
            else:
                self._hf = _build_hf_from_vocab_merges(vocab_file, merges_file, vocab)
        elif tokenizer_file is not None:
            import tokenizers

            self._hf = tokenizers.Tokenizer.from_file(str(tokenizer_file))
        self.eos_id = self.token_to_id(ENDOFTEXT)
        if self.eos_id is None:
            raise ValueError(f"tokenizer {name!r} has no {ENDOFTEXT} token; Cerebras-GPT needs it as EOS")

    # ----- core API ---------------------------------------------------------------------
    @property
    def is_gpt2(self) -> bool:
        """Whether this is the built-in GPT-2 BPE (the default, which needs no files beside a model)."""
        return self.vocab_file is not None and Path(self.vocab_file) == default_tokenizer_files()[0]

    @property
    def vocab_size(self) -> int:
        return self._tiktoken.n_vocab if self._tiktoken else self._hf.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        """Ids for ``text``; ``<|endoftext|>`` in the text is the special token, as in GPT2Tokenizer."""
        if self._tiktoken:
            return self._tiktoken.encode(text, allowed_special="all")
        return self._hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str], num_threads: int = 4) -> list[list[int]]:
        if self._tiktoken:
            return self._tiktoken.encode_batch(list(texts), num_threads=num_threads, allowed_special="all")
        return [e.ids for e in self._hf.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        """Text for ``ids``; invalid UTF-8 (a multi-byte character cut in two) becomes U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """Raw bytes for ``ids``: lets a stream hold back a partial UTF-8 character."""
        ids = [int(i) for i in ids]
        if self._tiktoken:
            return self._tiktoken.decode_bytes(ids)
        return self._hf.decode(ids, skip_special_tokens=False).encode("utf-8")

    def token_to_id(self, token: str) -> int | None:
        if self._tiktoken:
            try:
                return self._tiktoken.encode_single_token(token)
            except KeyError:
                return None
        return self._hf.token_to_id(token)

    # ----- files ------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> None:
        """Write the tokenizer files a Hugging Face GPT-2 directory has (vocab.json + merges.txt)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.tokenizer_file is not None:
            shutil.copyfile(self.tokenizer_file, directory / "tokenizer.json")
        elif self.vocab_file is None:  # built in memory
            self._hf.save(str(directory / "tokenizer.json"))
        else:
            shutil.copyfile(self.vocab_file, directory / "vocab.json")
            shutil.copyfile(self.merges_file, directory / "merges.txt")
        # GPT2Tokenizer defaults (facts file §1): bos = eos = unk = <|endoftext|>, no pad token.
        config = {
            "tokenizer_class": "GPT2Tokenizer",
            "bos_token": ENDOFTEXT,
            "eos_token": ENDOFTEXT,
            "unk_token": ENDOFTEXT,
            "model_max_length": 2048,
            "add_prefix_space": False,
        }
        (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")

    def identity(self) -> dict:
        """What prepared data records about the tokenizer that produced it."""
        return {
            "name": self.name,
            "vocab_size": self.vocab_size,
            "eos_id": self.eos_id,
            "backend": "tiktoken" if self._tiktoken else "tokenizers",
        }

    def __repr__(self) -> str:
        return f"Tokenizer(name={self.name!r}, vocab_size={self.vocab_size}, eos_id={self.eos_id})"


def _build_tiktoken(vocab_file: Path, merges_file: Path, name: str):
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    ranks = data_gym_to_mergeable_bpe_ranks(vocab_bpe_file=str(merges_file), encoder_json_file=str(vocab_file))
    return tiktoken.Encoding(
        name=f"cerebras-gpt-{name}",
        pat_str=_GPT2_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={ENDOFTEXT: GPT2_EOS_ID},
        explicit_n_vocab=50257,
    )


def _build_hf_from_vocab_merges(vocab_file: Path, merges_file: Path, vocab: dict):
    import tokenizers
    from tokenizers import decoders, models, pre_tokenizers

    tok = tokenizers.Tokenizer(models.BPE.from_file(str(vocab_file), str(merges_file)))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # Tokens past the BPE vocabulary (added specials like [PAD]) and <|endoftext|> match whole.
    specials = [t for t, i in vocab.items() if t == ENDOFTEXT or i >= 50257]
    tok.add_special_tokens(specials)
    return tok


def default_tokenizer_files() -> tuple[Path, Path]:
    """(encoder.json, vocab.bpe): GPT-2's vocabulary, package data of ours (see vocab/LICENSE)."""
    data = resources.files("cerebras_gpt") / "vocab"
    return Path(str(data / "encoder.json")), Path(str(data / "vocab.bpe"))


def byte_tokenizer() -> Tokenizer:
    """Bytes as tokens: id ``b`` is byte ``b`` (in GPT-2's printable byte alphabet), ``<|endoftext|>`` is 256."""
    import tokenizers
    from tokenizers import decoders, models, pre_tokenizers

    tok = tokenizers.Tokenizer(models.BPE(vocab={ch: b for b, ch in enumerate(_gpt2_byte_characters())}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([ENDOFTEXT])
    return Tokenizer(hf_tokenizer=tok, name="bytes")


def _gpt2_byte_characters() -> list[str]:
    """The character GPT-2's byte-level pre-tokenizer writes for each byte 0..255: printable Latin-1 bytes
    stand for themselves, the others (controls, space, ...) take the code points from 256 up, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(others)) for b in range(256)]


BUILTIN_TOKENIZERS = ("gpt2", "bytes")


def load_tokenizer(path: str | Path | None = None) -> Tokenizer:
    """The GPT-2 tokenizer (``path=None`` or ``"gpt2"``), the byte-level one (``"bytes"``), or the one in a
    model/tokenizer directory."""
    if path is None or str(path).lower() in ("gpt2", "gpt-2"):
        vocab, merges = default_tokenizer_files()
        return Tokenizer(vocab_file=vocab, merges_file=merges, name="gpt2")
    if str(path).lower() == "bytes" and not Path(path).exists():
        return byte_tokenizer()
    directory = Path(path)
    if directory.is_file() and directory.name == "tokenizer.json":
        return Tokenizer(tokenizer_file=directory, name=directory.parent.name)
    if not directory.is_dir():
        raise ValueError(
            f"tokenizer {str(path)!r} is not a directory: pass a model or tokenizer directory, or a "
            f"built-in name ({', '.join(BUILTIN_TOKENIZERS)})"
        )
    if (directory / "vocab.json").exists() and (directory / "merges.txt").exists():
        return Tokenizer(vocab_file=directory / "vocab.json", merges_file=directory / "merges.txt", name=directory.name)
    if (directory / "tokenizer.json").exists():
        return Tokenizer(tokenizer_file=directory / "tokenizer.json", name=directory.name)
    raise ValueError(
        f"no tokenizer files in {str(directory)!r}: expected vocab.json + merges.txt or tokenizer.json "
        "(or pass no path for the built-in GPT-2 tokenizer)"
    )
