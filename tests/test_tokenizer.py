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
