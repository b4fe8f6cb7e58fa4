"""Fine-tuning data: loss masks (prompt tokens contribute no loss), chat masks, packing (records whole, and
attending only to themselves), loader resume, errors."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from cerebras_gpt import load_tokenizer
from cerebras_gpt.finetune.data import (
    FinetuneLoader,
    build_examples,
    collate,
    document_ids,
    encode_record,
    pack_examples,
    read_records,
    split_records,
    val_batches,
)

TOK = load_tokenizer()


def test_prompt_tokens_contribute_no_loss(tiny_model):
    records = [
        {"prompt": "Review: a fine film\nSentiment:", "completion": " positive"},
        {"prompt": "Translate: the cat sat on the mat =", "completion": " le chat"},
    ]
    rows = build_examples(records, TOK, seq_len=64)
    x, y = collate(rows, TOK.eos_id)
    tiny_model.train()
    logits = tiny_model(x)
    logits.retain_grad()
    F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=-100).backward()
    grad_per_pos = logits.grad.abs().sum(-1)  # (B, T)
    for i, r in enumerate(records):
        n_prompt, n_answer = len(TOK.encode(r["prompt"])), len(TOK.encode(r["completion"])) + 1  # + EOS
        # position t predicts token t+1: positions 0..n_prompt-2 predict prompt tokens
        assert torch.all(grad_per_pos[i, : n_prompt - 1] == 0)
        assert torch.all(grad_per_pos[i, n_prompt - 1 : n_prompt - 1 + n_answer] > 0)
        assert torch.all(grad_per_pos[i, n_prompt - 1 + n_answer :] == 0)  # padding
        targets = y[i][y[i] != -100].tolist()
        assert targets == TOK.encode(r["completion"]) + [TOK.eos_id]


def test_chat_loss_on_assistant_answers_only():
    record = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4"},
        ]
    }
    ex = encode_record(record, TOK)
    assert TOK.decode(ex.ids[:-1]) == "System: Be brief.\nUser: Hi\nAssistant: Hello!\nUser: 2+2?\nAssistant: 4\n"
    assert TOK.decode([t for t, m in zip(ex.ids, ex.mask) if m]) == " Hello!\n 4\n<|endoftext|>"


def test_text_records_train_every_token_and_long_records_keep_their_end():
    ex = encode_record({"text": "one two three"}, TOK)
    assert all(ex.mask) and ex.ids[-1] == TOK.eos_id
    long = {"prompt": "word " * 100, "completion": " end"}
    (kept,) = build_examples([long], TOK, seq_len=16)
    assert len(kept.ids) == 17 and TOK.decode(kept.ids[-2:]) == " end<|endoftext|>"
    with pytest.raises(ValueError, match="seq_len"):
        build_examples([{"text": ""}], TOK, seq_len=16)  # a lone EOS: no token to predict


def test_packing_keeps_records_whole():
    records = [{"prompt": f"q{i}" * (i % 5 + 1), "completion": f" a{i}"} for i in range(40)]
    examples = build_examples(records, TOK, seq_len=32)
    rows = pack_examples(examples, seq_len=32)
    assert len(rows) < len(examples)
    assert all(len(r.ids) <= 33 for r in rows)
    assert [t for r in rows for t in r.ids] == [t for e in examples for t in e.ids]  # same order, nothing split
    boundaries = {0}
    for e in examples:
        boundaries.add(max(boundaries) + len(e.ids))
    start = 0
    for r in rows:  # every row starts at a record boundary
        assert start in boundaries
        start += len(r.ids)


def _packed_rows():
    records = [{"prompt": f"Review {i}: " + "good " * (i % 4), "completion": " positive"} for i in range(6)]
    records[2] = {"text": "a plain document of text"}  # loss on every token, its first one too
    examples = build_examples(records, TOK, seq_len=48)
    rows = pack_examples(examples, seq_len=48)
    assert len(rows) < len(examples)
    return examples, rows


def test_packed_record_gets_the_logits_it_gets_alone(tiny_model):
    examples, rows = _packed_rows()
    x, y = collate(rows, TOK.eos_id)
    with torch.no_grad():
        plain = tiny_model(x)
        packed = tiny_model(x, segment_ids=document_ids(x, TOK.eos_id))
        batch = next(val_batches(rows, len(rows), TOK.eos_id, packed=True)())  # what `--packing pack` runs
        assert torch.equal(batch.inputs, x) and torch.equal(batch.targets, y)
        torch.testing.assert_close(tiny_model(batch.inputs, **batch.model_kwargs()), packed, rtol=0, atol=0)
        row, start = 0, 0
        seen_later_record = False
        for ex in examples:
            if start + len(ex.ids) > len(rows[row].ids):
                row, start = row + 1, 0
            n = len(ex.ids) - 1
            alone = tiny_model(torch.tensor([ex.ids[:-1]]))[0]
            torch.testing.assert_close(packed[row, start : start + n], alone, rtol=0, atol=1e-5)
            if start > 0:  # without document masking a later record sees the ones before it
                seen_later_record |= not torch.allclose(plain[row, start : start + n], alone, atol=1e-3)
            # loss masking unchanged: the record's own targets, exactly as collated alone
            _, y_alone = collate([ex], TOK.eos_id)
            assert torch.equal(y[row, start : start + n], y_alone[0])
            if start > 0:  # the previous record's EOS predicts this record's first token iff that is a target
                assert y[row, start - 1].item() == (ex.ids[0] if ex.mask[0] else -100)
            start += len(ex.ids)
        assert seen_later_record


def test_segment_ids_default_path_and_errors(tiny_model):
    x = torch.randint(0, 50257, (2, 12))
    with torch.no_grad():
        assert torch.equal(tiny_model(x, segment_ids=torch.zeros_like(x)), tiny_model(x))
        # a repeated id after another segment is a new document (runs, not values)
        seg = torch.tensor([[0] * 4 + [1] * 4 + [0] * 4] * 2)
        torch.testing.assert_close(tiny_model(x, segment_ids=seg)[:, 8:], tiny_model(x[:, 8:]), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="shape"):
        tiny_model(x, segment_ids=torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="input_pos"):
        tiny_model(x, input_pos=torch.arange(12), segment_ids=torch.zeros_like(x))


def test_packed_validation_loss_equals_padded(tiny_model):
    from cerebras_gpt.train.loop import evaluate

    examples, rows = _packed_rows()
    examples = [e for e in examples if not e.mask[0]]  # prompt/completion only: the same targets both ways
    rows = pack_examples(examples, seq_len=48)
    padded, n_pad = evaluate(tiny_model, val_batches(examples, 4, TOK.eos_id)(), torch.device("cpu"), "float32")
    packed, n_pack = evaluate(
        tiny_model, val_batches(rows, 4, TOK.eos_id, packed=True)(), torch.device("cpu"), "float32"
    )
    assert n_pack == n_pad and packed == pytest.approx(padded, abs=1e-5)


def test_loader_resumes_exactly_and_shards_by_rank():
    examples = build_examples([{"prompt": f"p{i}", "completion": f" c{i}"} for i in range(23)], TOK, seq_len=16)
    a = FinetuneLoader(examples, batch_size=4, pad_id=TOK.eos_id, seed=3)
    it = iter(a)
    for _ in range(7):  # crosses an epoch boundary (6 batches per epoch)
        next(it)
    state = a.state_dict()
    expected = [next(it) for _ in range(5)]
    b = FinetuneLoader(examples, batch_size=4, pad_id=TOK.eos_id, seed=3)
    b.load_state_dict(state)
    for (x1, y1), (x2, y2) in zip(expected, iter(b)):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    # two ranks of 2 read exactly the rows one rank of 4 reads
    whole = FinetuneLoader(examples, batch_size=4, pad_id=TOK.eos_id, seed=3)
    r0 = FinetuneLoader(examples, batch_size=2, pad_id=TOK.eos_id, seed=3, rank=0, world_size=2)
    r1 = FinetuneLoader(examples, batch_size=2, pad_id=TOK.eos_id, seed=3, rank=1, world_size=2)

    def rows(x, y):  # the unpadded rows of a batch
        return {tuple(xr[: int((yr != -100).nonzero().max()) + 1].tolist()) for xr, yr in zip(x, y)}

    for _, w, b0, b1 in zip(range(8), iter(whole), iter(r0), iter(r1)):
        assert rows(*w) == rows(*b0) | rows(*b1)
    assert len(whole) == 6 and len(r0) == 6


def test_bad_records_name_file_and_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"prompt": "a", "completion": "b"}) + "\n" + '{"prompt": "a"}\n')
    with pytest.raises(ValueError, match=r"d.jsonl:2: expected"):
        read_records(path)
    path.write_text("{not json\n")
    with pytest.raises(ValueError, match=r"d.jsonl:1: not valid JSON"):
        read_records(path)
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    with pytest.raises(ValueError, match="no assistant turn"):
        read_records(path)


def test_split_is_seeded_and_disjoint():
    records = [{"text": str(i)} for i in range(50)]
    train, val = split_records(records, 0.2, seed=1)
    assert len(val) == 10 and len(train) == 40
    assert {r["text"] for r in train}.isdisjoint(r["text"] for r in val)
    assert split_records(records, 0.2, seed=1) == (train, val)
