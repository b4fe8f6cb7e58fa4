"""What a newcomer meets first on the command line: `train` asks for a model, `--stop "\\n"` means a newline."""

import subprocess
import sys

import pytest

from cerebras_gpt.commands.generate import unescape_stop


def test_train_without_a_model_asks_for_one(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "cerebras_gpt", "train", "--steps", "1", "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "no model given: pass --model NAME" in proc.stderr and "Cerebras-GPT-111M" in proc.stderr
    assert not (tmp_path / "run").exists()  # refused before anything is written


def test_stop_strings_typed_in_a_shell_are_unescaped():
    assert unescape_stop(r"\n") == "\n"
    assert unescape_stop(r"a\tb") == "a\tb"
    assert unescape_stop(r"\\n") == "\\n"  # an escaped backslash stays one backslash, then n
    assert unescape_stop("Q:") == "Q:"


def test_every_subcommand_takes_out_and_the_old_out_dir_with_a_note(tmp_path, caplog):
    from cerebras_gpt.commands.demo import DemoArgs
    from cerebras_gpt.commands.finetune import FinetuneCommandArgs
    from cerebras_gpt.commands.prepare import PrepareArgs
    from cerebras_gpt.commands.train import TrainArgs
    from cerebras_gpt.config_io import from_mapping, parse_args

    assert parse_args(PrepareArgs, ["builtin:pydoc", "--out", "d"], "prepare").out == "d"
    assert parse_args(TrainArgs, ["--model", "debug-tiny", "--out", "r"], "train").out_dir == "r"
    assert parse_args(FinetuneCommandArgs, ["--model", "m", "--data", "x.jsonl", "--out", "f"], "ft").out_dir == "f"
    assert parse_args(DemoArgs, ["--out", "demo"], "demo").out_dir == "demo"
    assert not [r for r in caplog.records if "old spelling" in r.getMessage()]
    for argv in (["--out-dir", "r2"], ["--out-dir=r2"]):
        assert parse_args(TrainArgs, ["--model", "debug-tiny", *argv], "train").out_dir == "r2"
    assert parse_args(PrepareArgs, ["builtin:pydoc", "--out-dir", "d2"], "prepare").out == "d2"
    notes = [r.getMessage() for r in caplog.records if "old spelling" in r.getMessage()]
    assert len(notes) == 3 and "--out-dir is the old spelling of --out" in notes[0] and "0.3" in notes[0]
    assert from_mapping(TrainArgs, {"model": "debug-tiny", "out": "r3"}, "x.yaml").out_dir == "r3"
    assert from_mapping(TrainArgs, {"model": "debug-tiny", "out_dir": "r4"}, "x.yaml").out_dir == "r4"
    proc = subprocess.run(
        [sys.executable, "-m", "cerebras_gpt", "train", "--help"], capture_output=True, text=True, timeout=120
    )
    assert "--out {None}|STR" in proc.stdout and "--out-dir" not in proc.stdout.replace("--out-dir is the old", "")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cerebras_gpt",
            "prepare",
            "builtin:pydoc",
            "--out-dir",
            str(tmp_path / "data"),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "data" / "meta.json").exists() and "--out-dir is the old spelling" in proc.stderr


def test_set_key_value_is_the_one_override_syntax(tmp_path, caplog):
    from cerebras_gpt.commands.generate import GenerateArgs
    from cerebras_gpt.commands.train import TrainArgs
    from cerebras_gpt.config_io import parse_args

    args = parse_args(
        TrainArgs,
        [
            "--model",
            "debug-tiny",
            "--set",
            "lr=3e-4",
            "model_overrides.n_embd=64",
            "sparsity.sparsity=0.5",
            "--steps",
            "7",
        ],
        "train",
    )
    assert args.lr == 3e-4 and args.model_overrides == {"n_embd": "64"} and args.sparsity.sparsity == 0.5
    assert args.steps == 7
    g = parse_args(GenerateArgs, ["--model", "m", "--set", "sampling.temperature=0.25", "top_k=5"], "generate")
    assert g.sampling.temperature == 0.25 and g.sampling.top_k == 5
    # --set lays over the --config file, section by section; a flag beats both.
    config = tmp_path / "t.yaml"
    config.write_text("model: debug-tiny\nlr: 0.001\nsteps: 3\nmodel_overrides:\n  n_layer: '2'\n")
    args = parse_args(
        TrainArgs, ["--config", str(config), "--set", "lr=0.002", "model_overrides.n_embd=32", "--lr", "0.004"], "train"
    )
    assert args.lr == 0.004 and args.steps == 3 and args.model_overrides == {"n_layer": "2", "n_embd": "32"}
    with pytest.raises(ValueError, match=r"--set: unknown option\(s\) \['lrr'\]"):
        parse_args(TrainArgs, ["--model", "debug-tiny", "--set", "lrr=1"], "train")
    with pytest.raises(ValueError, match="write KEY=VALUE"):
        parse_args(TrainArgs, ["--model", "debug-tiny", "--set", "lr"], "train")
    # The old mapping syntax still works, with a note.
    old = parse_args(TrainArgs, ["--model", "debug-tiny", "--model-overrides", "n_embd", "64"], "train")
    assert old.model_overrides == {"n_embd": "64"}
    assert any(
        "--model-overrides K V is the old spelling of --set model_overrides.K=V" in r.getMessage()
        for r in caplog.records
    )


def test_yaml_keys_are_the_flag_names_flat_or_nested():
    from cerebras_gpt.commands.generate import GenerateArgs
    from cerebras_gpt.config_io import from_mapping

    flat = from_mapping(GenerateArgs, {"model": "m", "temperature": 0.5, "top_k": 7, "max_new_tokens": 9}, "g.yaml")
    nested = from_mapping(
        GenerateArgs, {"model": "m", "sampling": {"temperature": 0.5, "top_k": 7, "max_new_tokens": 9}}, "g.yaml"
    )
    assert flat == nested and flat.sampling.temperature == 0.5 and flat.sampling.top_k == 7
    both = from_mapping(GenerateArgs, {"model": "m", "sampling": {"top_k": 7}, "temperature": 0.25}, "g.yaml")
    assert both.sampling.top_k == 7 and both.sampling.temperature == 0.25
    with pytest.raises(ValueError, match="unknown option"):
        from_mapping(GenerateArgs, {"model": "m", "temprature": 0.5}, "g.yaml")
