"""What a newcomer meets first on the command line: `train` asks for a model, `--stop "\\n"` means a newline."""

import subprocess
import sys

import pytest

from cerebras_gpt.commands.generate import unescape_stop


def test_train_without_a_model_asks_for_one(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "cerebras_gpt", "train", "--steps", "1", "--out-dir",
                           str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "no model given: pass --model NAME" in proc.stderr and "Cerebras-GPT-111M" in proc.stderr
    assert not (tmp_path / "run").exists()  # refused before anything is written


def test_stop_strings_typed_in_a_shell_are_unescaped():
    assert unescape_stop(r"\n") == "\n"
    assert unescape_stop(r"a\tb") == "a\tb"
    assert unescape_stop(r"\\n") == "\\n"  # an escaped backslash stays one backslash, then n
    assert unescape_stop("Q:") == "Q:"



def test_every_subcommand_takes_out_or_out_dir(tmp_path):
    from cerebras_gpt.commands.prepare import PrepareArgs
    from cerebras_gpt.commands.train import TrainArgs
    from cerebras_gpt.config_io import from_mapping, parse_args

    for flag in ("--out", "--out-dir"):
        assert parse_args(PrepareArgs, ["builtin:pydoc", flag, "d"], "prepare").out == "d"
        assert parse_args(TrainArgs, ["--model", "debug-tiny", flag, "r"], "train").out_dir == "r"
        assert parse_args(TrainArgs, ["--model", "debug-tiny", f"{flag}=r2"], "train").out_dir == "r2"
    assert from_mapping(TrainArgs, {"model": "debug-tiny", "out": "r3"}, "x.yaml").out_dir == "r3"
    proc = subprocess.run([sys.executable, "-m", "cerebras_gpt", "prepare", "builtin:pydoc", "--out-dir",
                           str(tmp_path / "data"), "--no-progress"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "data" / "meta.json").exists()


def test_yaml_keys_are_the_flag_names_flat_or_nested():
    from cerebras_gpt.commands.generate import GenerateArgs
    from cerebras_gpt.config_io import from_mapping

    flat = from_mapping(GenerateArgs, {"model": "m", "temperature": 0.5, "top_k": 7, "max_new_tokens": 9}, "g.yaml")
    nested = from_mapping(GenerateArgs, {"model": "m", "sampling": {"temperature": 0.5, "top_k": 7,
                                                                    "max_new_tokens": 9}}, "g.yaml")
    assert flat == nested and flat.sampling.temperature == 0.5 and flat.sampling.top_k == 7
    both = from_mapping(GenerateArgs, {"model": "m", "sampling": {"top_k": 7}, "temperature": 0.25}, "g.yaml")
    assert both.sampling.top_k == 7 and both.sampling.temperature == 0.25
    with pytest.raises(ValueError, match="unknown option"):
        from_mapping(GenerateArgs, {"model": "m", "temprature": 0.5}, "g.yaml")
