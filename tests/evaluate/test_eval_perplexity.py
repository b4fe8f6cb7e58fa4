"""Perplexity: exp(mean loss) by hand, parity with transformers, sliding windows, prepared data, the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from cerebras_gpt.evaluate.perplexity import evaluate_perplexity, evaluate_prepared, sliding_windows
from cerebras_gpt.tokenizer import load_tokenizer

TEXT = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
    "First Citizen:\nYou are all resolved rather to die than to famish?\n"
)


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text(TEXT)
    return path


@pytest.fixture
def long_text(shared_data):
    return (shared_data / "tinyshakespeare.txt").read_text()[:6000]  # ~1,700 tokens: many 128-token windows


def test_sliding_windows_score_every_token_once():
    ids = list(range(50))
    for context, stride in ((8, 8), (8, 3), (8, 1), (64, 5)):
        windows = list(sliding_windows(ids, context, stride))
        targets = [t for w in windows for t in w.tokens[-w.score :]]
        assert targets == ids[1:]
        assert all(len(w.tokens) - 1 <= context and 1 <= w.score <= context for w in windows)
        # Past the first window, the model sees a full context and the first scored token context - stride + 1.
        assert all(len(w.tokens) - 1 == context and w.score == stride for w in windows[1:-1])
    with pytest.raises(ValueError, match="stride"):
        list(sliding_windows(ids, 8, 9))


def test_perplexity_is_exp_mean_loss_by_hand(tiny_model, tok, text_file):
    result = evaluate_perplexity(tiny_model, tok, [text_file], show_progress=False)
    ids = torch.tensor([tok.eos_id, *tok.encode(TEXT)])
    with torch.no_grad():
        logits = tiny_model(ids[None, :-1])[0]
    losses = F.cross_entropy(logits, ids[1:], reduction="none")
    m = result.metrics
    assert m["tokens"] == len(ids) - 1 and m["bytes"] == len(TEXT.encode())
    assert m["loss"] == pytest.approx(losses.mean().item(), rel=1e-6)
    assert m["perplexity"] == pytest.approx(math.exp(losses.mean().item()), rel=1e-6)
    assert m["bits_per_byte"] == pytest.approx(losses.sum().item() / math.log(2) / len(TEXT.encode()), rel=1e-6)


def test_sliding_window_equals_full_context_when_text_fits(tiny_model, tok, text_file):
    full = evaluate_perplexity(tiny_model, tok, [text_file], show_progress=False).metrics
    for stride in (1, 7, 32):
        slid = evaluate_perplexity(
            tiny_model, tok, [text_file], stride=stride, batch_size=3, show_progress=False
        ).metrics
        assert slid["loss"] == pytest.approx(full["loss"], rel=1e-6)
        assert slid["tokens"] == full["tokens"]


def test_matches_transformers(tiny_model, tok, text_file, long_text, tmp_path):
    transformers = pytest.importorskip("transformers")
    tiny_model.save_pretrained(tmp_path / "model")
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "model").eval()
    # Text that fits: transformers' own loss with labels = inputs is the mean over the same targets.
    ids = torch.tensor([[tok.eos_id, *tok.encode(TEXT)]])
    with torch.no_grad():
        hf_loss = hf(ids, labels=ids).loss.item()
    ours = evaluate_perplexity(tiny_model, tok, [text_file], show_progress=False).metrics
    assert ours["loss"] == pytest.approx(hf_loss, rel=1e-5)
    # Long text, sliding window (context 128, stride 48): transformers' logits on the same windows.
    (tmp_path / "long.txt").write_text(long_text)
    ours = evaluate_perplexity(
        tiny_model, tok, [tmp_path / "long.txt"], context=128, stride=48, batch_size=5, show_progress=False
    ).metrics
    nll, count = 0.0, 0
    for w in sliding_windows([tok.eos_id, *tok.encode(long_text)], 128, 48):
        x = torch.tensor([w.tokens])
        with torch.no_grad():
            logits = hf(x[:, :-1]).logits[0, -w.score :]
        nll += F.cross_entropy(logits, x[0, -w.score :], reduction="sum").item()
        count += w.score
    assert ours["tokens"] == count
    assert ours["loss"] == pytest.approx(nll / count, rel=1e-5)
    disjoint = evaluate_perplexity(tiny_model, tok, [tmp_path / "long.txt"], show_progress=False).metrics
    assert disjoint["tokens"] == count and disjoint["loss"] != pytest.approx(ours["loss"], rel=1e-6)


def test_prepared_directory(tiny_model, tok, tmp_path, long_text):
    from cerebras_gpt.data.loader import iter_validation
    from cerebras_gpt.data.prepare import prepare

    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": long_text[i : i + 500]}) + "\n" for i in range(0, 6000, 500)))
    prepare([str(docs)], tmp_path / "prep", val_fraction=0.5, workers=1, progress=False)
    totals = evaluate_prepared(tiny_model, tok, tmp_path / "prep", context=64, batch_size=4)
    nll, n, nbytes = 0.0, 0, 0
    for batch in iter_validation(tmp_path / "prep", 64, 4):
        with torch.no_grad():
            logits = tiny_model(batch[:, :-1])
        nll += F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten(), reduction="sum").item()
        n += batch[:, 1:].numel()
        nbytes += sum(len(tok.decode_bytes(r.tolist())) for r in batch[:, 1:])
    assert totals.tokens == n > 0 and totals.bytes == nbytes
    assert totals.nll == pytest.approx(nll, rel=1e-6)


def test_eval_command(tiny_model, tmp_path, text_file, capsys):
    from cerebras_gpt.cli import main

    tiny_model.save_pretrained(tmp_path / "model")
    out = tmp_path / "ppl.json"
    assert (
        main(
            [
                "eval",
                "--model",
                str(tmp_path / "model"),
                "--data",
                str(text_file),
                "--output",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    report = json.loads(out.read_text())
    assert report["perplexity"]["perplexity"] == pytest.approx(math.exp(report["perplexity"]["loss"]))
    assert main(["eval", "--model", str(tmp_path / "model"), "--data", str(tmp_path / "nope.txt")]) == 2
    assert "nope.txt" in capsys.readouterr().err
    assert main(["eval", "--model", str(tmp_path / "model")]) == 2


def test_max_batches_cuts_a_text_short_and_counts_the_bytes_scored(tiny_model, tok, tmp_path, long_text):
    path = tmp_path / "long.txt"
    path.write_text(long_text)
    full = evaluate_perplexity(tiny_model, tok, [path], context=64, batch_size=2, show_progress=False).metrics
    cut = evaluate_perplexity(
        tiny_model, tok, [path], context=64, batch_size=2, max_batches=3, show_progress=False
    ).metrics
    assert cut["windows"] == 6 and cut["tokens"] == 6 * 64 < full["tokens"]
    ids = tok.encode(long_text)
    assert cut["bytes"] == len(tok.decode_bytes(ids[: cut["tokens"]]))  # the scored targets' bytes
