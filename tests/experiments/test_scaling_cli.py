"""`cerebras-gpt scaling plan|fit` from the command line."""

from __future__ import annotations

import json

import pytest

from cerebras_gpt.cli import main
from cerebras_gpt.experiments.scaling import PowerLaw


def test_plan(capsys):
    assert main(["scaling", "plan", "--presets", "all", "--budget", "1e20", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [r["tokens"] for r in plan["presets"]][0] == 2_221_009_920
    assert plan["presets"][-1]["predicted_loss"] == pytest.approx(1.580, abs=1e-3)  # the law at 13B: 1.580 (§4)
    assert plan["budgets"][0]["nearest_preset"] == "Cerebras-GPT-590M"
    assert main(["scaling", "plan"]) == 2
    assert main(["scaling", "plan", "--presets", "Cerebras-GPT-1.4B"]) == 2
    assert "did you mean" in capsys.readouterr().err


def test_fit_csv_and_paper(tmp_path, capsys):
    law = PowerLaw(alpha=0.09, c0=1e16, l_inf=1.2)
    csv = tmp_path / "points.csv"
    csv.write_text(
        "name,flops,loss\n"
        + "".join(f"r{i},{c:.6g},{law(c):.6f}\n" for i, c in enumerate([1e10, 3e10, 1e11, 3e11, 1e12, 3e12]))
    )
    out = tmp_path / "fit.json"
    assert (
        main(
            [
                "scaling",
                "fit",
                "--points",
                str(csv),
                "--target",
                "1e14",
                "--holdout",
                "1",
                "--plot",
                str(tmp_path / "fit.png"),
                "--output",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads(out.read_text())
    assert report["alpha"] == pytest.approx(0.09, rel=1e-3)
    assert report["target"]["loss"] == pytest.approx(law(1e14), rel=1e-4)
    assert abs(report["heldout"]["checks"][0]["error_pct"]) < 0.01
    assert (tmp_path / "fit.png").exists() and (tmp_path / "fit-heldout.png").exists()
    capsys.readouterr()
    assert main(["scaling", "fit", "--paper", "--output", str(out)]) == 0
    assert json.loads(out.read_text())["alpha"] == pytest.approx(0.0737, rel=0.01)
    bad = tmp_path / "bad.csv"
    bad.write_text("flops,loss\n1e10,abc\n")
    assert main(["scaling", "fit", "--points", str(bad)]) == 2
    assert "bad.csv:2" in capsys.readouterr().err


def test_run_trains_a_ladder_and_resumes(tmp_path, shared_data):
    pytest.importorskip("cerebras_gpt.train.loop")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    from cerebras_gpt.data.prepare import prepare
    from cerebras_gpt.experiments.scaling import read_runs

    # Byte-level data (vocabulary 257) keeps the runs tiny: GPT-2's 50,257-row LM head would dominate them.
    tok = Tokenizer(
        models.BPE(vocab={c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet(), key=ord))}, merges=[])
    )
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|endoftext|>"])
    (tmp_path / "tok").mkdir()
    tok.save(str(tmp_path / "tok" / "tokenizer.json"))
    (tmp_path / "text.txt").write_text((shared_data / "tinyshakespeare.txt").read_text()[:60_000])
    prepare(
        [str(tmp_path / "text.txt")],
        tmp_path / "data",
        tokenizer=str(tmp_path / "tok"),
        val_fraction=0.1,
        paragraphs=True,
        workers=1,
        progress=False,
    )
    argv = [
        "scaling",
        "run",
        "--data",
        str(tmp_path / "data"),
        "--out",
        str(tmp_path / "ladder"),
        "--n-layer",
        "1",
        "--head-dim",
        "8",
        "--block-size",
        "32",
        "--batch-size",
        "8",
        "--tokens-per-param",
        "2",
        "--holdout",
        "0",
        "--device",
        "cpu",
    ]
    assert main(argv + ["--widths", "8"]) == 0
    weights = tmp_path / "ladder" / "runs" / "ladder-L1-d8" / "model" / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert main(argv + ["--widths", "8", "16"]) == 0  # the finished rung is not trained again
    assert weights.stat().st_mtime_ns == stamp
    rows = read_runs(tmp_path / "ladder")
    assert [r["n_embd"] for r in rows] == [8, 16]
    assert all(r["tokens"] == 2 * r["params"] for r in rows)
    assert rows[1]["loss"] < rows[0]["loss"] < 5.55  # both learn (ln 257 = 5.55), the larger more
