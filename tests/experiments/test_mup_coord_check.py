"""The μP coordinate check: flat activations across width under μP, growing ones under SP; the command."""

import json

import pytest

from cerebras_gpt.cli import main as cli_main
from cerebras_gpt.experiments.coord_check import CoordCheckConfig, growth_per_4x, run_coord_check


def test_mup_activations_stay_flat_across_4x_width_and_sp_ones_grow():
    # Widths 32 -> 128 (4x), 4 Adam steps at η_base 6e-3, 2 layers, 2 seeds, Python's docs as bytes.
    # Measured (seeds 1-3): the largest per-layer growth per 4x width is 1.15-1.43 under μP and
    # 13.4-15.2 under SP (attention/FFN outputs and the residual stream; logits ~3.3).
    cfg = CoordCheckConfig(widths=[32, 128], steps=4, seq_len=32, batch_size=4, seeds=2)
    result = run_coord_check(cfg, progress=False)
    assert result.max_growth("mup") < 2.0, result.growth_4x["mup"]
    assert result.max_growth("sp") > 4.0, result.growth_4x["sp"]
    assert result.growth_4x["sp"]["logits"] > result.growth_4x["mup"]["logits"]
    # Init alone (step 0) does not make the difference: SP's embedding output is flat at every step.
    assert 0.8 < result.growth_4x["sp"]["embedding"] < 1.25


def test_growth_is_the_log_log_slope_per_4x():
    assert growth_per_4x([64, 256], [1.0, 3.0]) == pytest.approx(3.0)
    assert growth_per_4x([32, 64, 128, 256], [1.0, 2.0, 4.0, 8.0]) == pytest.approx(4.0)
    assert growth_per_4x([64, 128, 256], [2.0, 2.0, 2.0]) == pytest.approx(1.0)


def test_mup_check_command_writes_table_png_csv_json(tmp_path, capsys):
    out = tmp_path / "check"
    rc = cli_main(
        [
            "mup-check",
            "--widths",
            "16",
            "32",
            "--steps",
            "1",
            "--seq-len",
            "16",
            "--batch-size",
            "2",
            "--seeds",
            "1",
            "--n-layer",
            "1",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    table = capsys.readouterr().out
    assert "growth/4x" in table and "logits" in table and "h.0.attn" in table
    summary = json.loads((out / "coord_check.json").read_text())
    assert set(summary["max_growth_4x"]) == {"mup", "sp"}
    assert (out / "coord_check.png").read_bytes()[:4] == b"\x89PNG"
    rows = (out / "coord_check.csv").read_text().splitlines()
    assert rows[0] == "parametrization,width,seed,step,layer,value"
    assert len(rows) == 1 + 2 * 2 * 2 * 5  # params x widths x steps (0, 1) x layers (embedding, attn, mlp, h.0, logits)


def test_mup_check_rules_and_bad_input(capsys):
    assert cli_main(["mup-check", "--rules", "cerebras-gpt-111m-mup"]) == 0
    printed = capsys.readouterr().out
    assert "0.04619" in printed and "0.01033" in printed and "0.3333" in printed
    assert cli_main(["mup-check", "--rules", "cerebras-gpt-111q"]) == 2
    assert "unknown preset" in capsys.readouterr().err
    assert cli_main(["mup-check", "--data", "/nonexistent/corpus.txt", "--widths", "16", "--steps", "1"]) == 2
    assert "no such file" in capsys.readouterr().err
