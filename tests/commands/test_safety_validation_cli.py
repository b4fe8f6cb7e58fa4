"""Numeric options of generate, serve and eval: finite and in range, refused in one line naming the option."""

from __future__ import annotations

import math

import pytest

from cerebras_gpt.cli import main
from cerebras_gpt.serve.engine import EngineConfig
from cerebras_gpt.validation import finite_range_problem, require_finite_range, require_int_range


def test_require_finite_range():
    assert require_finite_range("lr", 1e-3, 0, lo_open=True) == 1e-3
    assert require_finite_range("x", 1, 0, 1) == 1
    for value, message in [
        (math.inf, "lr=inf must be a finite number in (0, inf)"),
        (math.nan, "lr=nan must be a finite number"),
        (0.0, "lr=0.0 must be in (0, inf)"),
        ("1e-3", "lr='1e-3' must be a number"),
        (True, "lr=True must be a number"),
    ]:
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            require_finite_range("lr", value, 0, lo_open=True)
    assert finite_range_problem("top_p", 1.5, 0, 1, lo_open=True) == "top_p=1.5 must be in (0, 1]"
    assert finite_range_problem("x", -1, None, 0) is None


def test_require_int_range():
    assert require_int_range("steps", 3, 1) == 3
    for value in (0, 2.5, True, "3"):
        with pytest.raises(ValueError, match="steps=.* must be an integer in \\[1, inf\\]"):
            require_int_range("steps", value, 1)


@pytest.mark.parametrize("value", [math.inf, math.nan, 0.0, -1.0])
def test_engine_request_timeout_is_finite_and_positive(value):
    with pytest.raises(ValueError, match=f"request_timeout={value!r} must be"):
        EngineConfig(request_timeout=value)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--limit", "inf"], "--limit=inf must be a finite number"),
        (["--limit", "0"], "--limit=0.0 must be in (0, inf)"),
        (["--num-fewshot", "-1"], "--num-fewshot=-1 must be an integer in [0, inf]"),
        (["--max-batches", "0"], "--max-batches=0 must be an integer in [1, inf]"),
    ],
)
def test_eval_options_are_checked_before_loading(flags, message, capsys, tmp_path):
    # The model path does not exist: the options are checked first, so their error is the one shown.
    assert main(["eval", "--model", str(tmp_path / "absent"), "--tasks", "x", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--temperature", "inf"], "temperature=inf must be a finite number"),
        (["--temperature", "nan"], "temperature=nan must be a finite number"),
        (["--repetition-penalty", "inf"], "repetition_penalty=inf must be a finite number"),
    ],
)
def test_generate_sampling_options_are_finite(flags, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_:  # tyro reports its parse errors itself, in a box, exit code 2
        main(["generate", "--model", str(tmp_path / "absent"), "--prompt", "x", *flags])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in " ".join(err.replace("│", " ").split()) and "Traceback" not in err
