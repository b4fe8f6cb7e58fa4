"""`--tokenizer bytes`: the built-in byte-level tokenizer, carried by prepared data into trained models."""

from __future__ import annotations

import json

import pytest

from cerebras_gpt.tokenizer import load_tokenizer

TEXT = "Héllo, wörld!\n\n\tTabs, emoji 🙂 and a NUL \x00.<|endoftext|>after"


def test_byte_ids_are_the_utf8_bytes_and_eos_is_256():
    tok = load_tokenizer("bytes")
    assert tok.vocab_size == 257 and tok.eos_id == 256 and not tok.is_gpt2
    before, after = TEXT.split("<|endoftext|>")
    assert tok.encode(TEXT) == [*before.encode("utf-8"), 256, *after.encode("utf-8")]
    assert tok.decode(tok.encode(TEXT)) == TEXT
    assert load_tokenizer().is_gpt2


def test_the_byte_tokenizer_saves_and_reloads_from_a_directory(tmp_path):
    load_tokenizer("bytes").save_pretrained(tmp_path)
    again = load_tokenizer(tmp_path)
    assert again.encode(TEXT) == load_tokenizer("bytes").encode(TEXT) and again.eos_id == 256


def test_an_unknown_tokenizer_name_says_what_is_accepted(tmp_path):
    with pytest.raises(ValueError, match=r"'byts'.*built-in name \(gpt2, bytes\)"):
        load_tokenizer("byts")


def test_byte_data_carries_its_tokenizer_into_the_trained_model(tmp_path, shared_data):
    from cerebras_gpt.data.prepare import prepare
    from cerebras_gpt.hf import load_model_and_tokenizer
    from cerebras_gpt.train.config import TrainConfig
    from cerebras_gpt.train.loop import train

    data = tmp_path / "bytes"
    meta = prepare(
        [str(shared_data / "tinyshakespeare.txt")],
        data,
        tokenizer="bytes",
        paragraphs=True,
        val_fraction=0.05,
        workers=1,
        progress=False,
    )
    assert meta["tokenizer"]["name"] == "bytes" and meta["dtype"] == "uint16"
    assert (data / "tokenizer" / "tokenizer.json").exists()
    # A model whose vocabulary is the tokenizer's: the LM head has 257 rows, not 50,257.
    cfg = TrainConfig(
        model="debug-tiny",
        model_overrides={"vocab_size": "257"},
        data_dir=str(data),
        steps=2,
        batch_size=2,
        seq_len=32,
        warmup_steps=1,
        out_dir=str(tmp_path / "run"),
        progress=False,
        tensorboard=False,
    )
    train(cfg)
    model, tok = load_model_and_tokenizer(tmp_path / "run" / "model")
    assert model.config.vocab_size == 257 and tok.vocab_size == 257 and tok.eos_id == 256
    assert (
        json.loads((tmp_path / "run" / "model" / "tokenizer_config.json").read_text())["model_max_length"]
        == model.config.block_size
    )
    assert tok.encode("ab") == [97, 98]


def test_gpt2_data_has_no_tokenizer_copy(data_dir):
    from cerebras_gpt.data.prepare import prepared_tokenizer

    assert prepared_tokenizer(data_dir) is None and not (data_dir / "tokenizer").exists()
