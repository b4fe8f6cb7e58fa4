"""The `cerebras-gpt` command: the table, `info`, `generate` (flags, YAML config, stdin, errors)."""

import json
import subprocess
import sys

import pytest
import torch

from cerebras_gpt import GPT, GPTConfig, generate, load_tokenizer
from cerebras_gpt.cli import COMMANDS, main


def run_cli(*args, stdin=None):
    return subprocess.run(
        [sys.executable, "-m", "cerebras_gpt", *args], capture_output=True, text=True, input=stdin, timeout=120
    )


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("cli_model")
    GPT(GPTConfig.from_name("debug-tiny")).save_pretrained(directory)
    return directory


def test_every_subcommand_has_a_module():
    import importlib.util

    for name, (module, _) in COMMANDS.items():
        assert importlib.util.find_spec(f"cerebras_gpt.commands.{module}") is not None, name


def test_help_and_unknown_command(capsys):
    assert main([]) == 0 and "generate" in capsys.readouterr().out
    assert main(["generat"]) == 2 and "did you mean 'generate'" in capsys.readouterr().err


def test_info_lists_presets(capsys):
    assert main(["info", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["Cerebras-GPT-13B"]["params"] == 12_853_386_240
    assert rows["Cerebras-GPT-111M"]["paper_peak_lr"] == 6e-4
    assert main(["info"]) == 0 and "Cerebras-GPT-2.7B-muP" in capsys.readouterr().out


def test_generate_from_flags_config_and_stdin(model_dir, tmp_path):
    model = GPT.from_pretrained(model_dir)
    expected = generate(model, load_tokenizer(model_dir), "Hello", max_new_tokens=8, temperature=0, stop_at_eos=False)
    out = run_cli(
        "generate",
        "--model",
        str(model_dir),
        "--prompt",
        "Hello",
        "--max-new-tokens",
        "8",
        "--temperature",
        "0",
        "--no-stop-at-eos",
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == "Hello" + expected + "\n"
    config = tmp_path / "gen.yaml"
    config.write_text(
        f"model: {model_dir}\nstream: true\nsampling:\n  max_new_tokens: 8\n  temperature: 0\n  stop_at_eos: false\n"
    )
    out = run_cli("generate", "--config", str(config), stdin="Hello\n")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "Hello" + expected + "\n"


def test_generate_errors_are_one_line(model_dir, tmp_path):
    out = run_cli("generate", "--model", str(model_dir), "--prompt", "x", "--top-p", "1.5")
    flat = " ".join(out.stderr.replace("│", " ").split())  # tyro draws a box around parse errors
    assert out.returncode == 2 and "top_p=1.5 must be in (0, 1]" in flat and "Traceback" not in out.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: x\ntemprature: 0\n")
    out = run_cli("generate", "--config", str(bad))
    assert out.returncode == 2 and "unknown option(s) ['temprature']" in out.stderr
    out = run_cli("generate", "--model", str(tmp_path), "--prompt", "x")
    assert out.returncode == 2 and "has no config.json" in out.stderr


def test_generate_with_sparse_kernels_matches_dense(tmp_path):
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_name("debug-tiny"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")):
                p.mul_(torch.rand_like(p) > 0.9)  # 90% zeros
    model.save_pretrained(tmp_path)
    args = ["generate", "--model", str(tmp_path), "--prompt", "Hi", "--max-new-tokens", "6", "--temperature", "0"]
    dense, sparse = run_cli(*args), run_cli(*args, "--sparse-kernels", "always")
    assert dense.returncode == 0 and sparse.returncode == 0, sparse.stderr
    assert sparse.stdout == dense.stdout and "linear layers swapped" in sparse.stderr


def test_importing_the_package_does_not_import_torch():
    # Tokenizing workers of `prepare` import cerebras_gpt.data.*; torch would cost them seconds each.
    code = (
        "import sys, cerebras_gpt, cerebras_gpt.config, cerebras_gpt.data.prepare; "
        "assert 'torch' not in sys.modules, 'torch imported'; "
        "from cerebras_gpt import generate, GPT; import cerebras_gpt.generation; "
        "assert callable(generate) and cerebras_gpt.generate is generate and GPT.__name__ == 'GPT'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
