"""End to end through `cerebras-gpt finetune`: a debug model learns string reversal (held-out exact match
from 0 to near 1); task recipes parse; classification scoring picks the likelier label."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cerebras_gpt import GPT, GPTConfig, load_tokenizer
from cerebras_gpt.commands.finetune import main
from cerebras_gpt.finetune.synthetic import reverse_records, write_jsonl

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_reversal_exact_match_goes_from_zero_to_near_one(tmp_path):
    torch.manual_seed(0)
    GPT(GPTConfig.from_name("debug-tiny", block_size=64, n_embd=64, n_head=4)).save_pretrained(tmp_path / "base")
    write_jsonl(reverse_records(600, seed=1, min_len=3, max_len=3), tmp_path / "train.jsonl")
    write_jsonl(reverse_records(50, seed=2, min_len=3, max_len=3), tmp_path / "test.jsonl")
    rc = main(
        [
            "--model",
            str(tmp_path / "base"),
            "--data",
            str(tmp_path / "train.jsonl"),
            "--eval-data",
            str(tmp_path / "test.jsonl"),
            "--task",
            "generation",
            "--steps",
            "120",
            "--lr",
            "3e-3",
            "--batch-size",
            "32",
            "--warmup-steps",
            "10",
            "--lora.rank",
            "0",
            "--out",
            str(tmp_path / "out"),
            "--no-progress",
        ]
    )
    assert rc == 0
    result = json.loads((tmp_path / "out" / "finetune_results.json").read_text())
    held_out = {r["prompt"] for r in reverse_records(50, seed=2, min_len=3, max_len=3)}
    assert held_out - {r["prompt"] for r in reverse_records(600, seed=1, min_len=3, max_len=3)}  # unseen prompts
    assert result["before"]["exact_match"] <= 0.05
    assert result["after"]["exact_match"] >= 0.8
    assert (tmp_path / "out" / "model" / "config.json").exists()


def test_classification_picks_the_likelier_label(tiny_model):
    from cerebras_gpt.finetune.tasks import classification_metrics, label_logprobs

    tok = load_tokenizer()
    records = [{"prompt": "a b", "completion": " yes"}, {"prompt": "c d", "completion": " no"}]
    scores = label_logprobs(tiny_model, tok, [r["prompt"] for r in records], [" yes", " no"])
    with torch.no_grad():  # the same numbers by hand for record 0, label " yes"
        ids = tok.encode("a b") + tok.encode(" yes")
        logp = tiny_model(torch.tensor([ids])).log_softmax(-1)[0]
        n = len(tok.encode("a b"))
        by_hand = sum(logp[n - 1 + i, t] for i, t in enumerate(tok.encode(" yes")))
    assert scores[0, 0].item() == pytest.approx(float(by_hand), abs=1e-4)
    acc = classification_metrics(tiny_model, tok, records, [" yes", " no"])["accuracy"]
    expected = sum(int(scores[i].argmax()) == i for i in range(2)) / 2
    assert acc == expected


@pytest.mark.parametrize("recipe", ["sentiment", "translation", "summarization"])
def test_recipes_parse_and_data_ships(recipe):
    from cerebras_gpt.commands import parse_args
    from cerebras_gpt.finetune.data import read_records
    from cerebras_gpt.finetune.run import FinetuneArgs

    path = ROOT / "configs" / "finetune" / f"{recipe}.yaml"
    args = parse_args(FinetuneArgs, ["--config", str(path), "--model", "some/model"], "finetune")
    assert args.task in ("classification", "generation")
    assert read_records(ROOT / args.data) and read_records(ROOT / args.eval_data)


def test_bad_options_are_one_line_errors(tmp_path, capsys):
    assert main(["--model", "x", "--data", str(tmp_path / "missing.jsonl")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["--model", "x", "--data", "d.jsonl", "--lora.rank", "4", "--fsdp"]) == 2
    assert "LoRA with --fsdp" in capsys.readouterr().err


def test_early_stopping_stops_after_patience_and_keeps_the_best(tmp_path):
    torch.manual_seed(0)
    GPT(GPTConfig.from_name("debug-tiny", block_size=32)).save_pretrained(tmp_path / "base")
    write_jsonl(reverse_records(60, seed=1), tmp_path / "train.jsonl")
    # lr 0: the validation loss never gets lower, so the run stops `patience` evaluations after the first
    rc = main(
        [
            "--model",
            str(tmp_path / "base"),
            "--data",
            str(tmp_path / "train.jsonl"),
            "--steps",
            "20",
            "--lr",
            "0",
            "--batch-size",
            "8",
            "--eval-interval",
            "2",
            "--early-stopping-patience",
            "2",
            "--out",
            str(tmp_path / "out"),
            "--no-progress",
            "--lora.rank",
            "2",
            "--save-adapter",
        ]
    )
    assert rc == 0
    result = json.loads((tmp_path / "out" / "finetune_results.json").read_text())
    assert result["stopped_early"] and result["steps"] == 6 and result["best_step"] == 2
    assert (tmp_path / "out" / "model" / "config.json").exists()
    assert (tmp_path / "out" / "adapter" / "adapter_config.json").exists()


def test_packed_run_validates_like_a_padded_one(tmp_path):
    torch.manual_seed(0)
    GPT(GPTConfig.from_name("debug-tiny", block_size=64)).save_pretrained(tmp_path / "base")
    write_jsonl(reverse_records(60, seed=1), tmp_path / "train.jsonl")
    losses = {}
    for packing in ("pad", "pack"):  # lr 0: the same model; records see only themselves, so the same loss
        out = tmp_path / packing
        assert (
            main(
                [
                    "--model",
                    str(tmp_path / "base"),
                    "--data",
                    str(tmp_path / "train.jsonl"),
                    "--steps",
                    "1",
                    "--lr",
                    "0",
                    "--batch-size",
                    "8",
                    "--seq-len",
                    "48",
                    "--packing",
                    packing,
                    "--out",
                    str(out),
                    "--no-progress",
                    "--lora.rank",
                    "0",
                ]
            )
            == 0
        )
        losses[packing] = json.loads((out / "finetune_results.json").read_text())["val_loss"]
    assert losses["pack"] == pytest.approx(losses["pad"], abs=1e-5)
