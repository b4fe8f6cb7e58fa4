"""The experiment drivers moved from `cerebras_gpt.evaluate` to `cerebras_gpt.experiments`; the old import
paths still give the same modules (one object, so patching either patches both), with a DeprecationWarning."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest


@pytest.mark.parametrize("name", ["sweep", "scaling", "coord_check"])
def test_old_evaluate_paths_are_the_new_modules_and_warn(name):
    code = (
        f"import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
        f"try:\n    import cerebras_gpt.evaluate.{name}\nexcept DeprecationWarning as w:\n    print(w)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert f"cerebras_gpt.evaluate.{name} moved to cerebras_gpt.experiments.{name}" in out
    with pytest.warns(DeprecationWarning):
        sys.modules.pop(f"cerebras_gpt.evaluate.{name}", None)
        old = importlib.import_module(f"cerebras_gpt.evaluate.{name}")
    assert old is importlib.import_module(f"cerebras_gpt.experiments.{name}")
