"""Moved to `cerebras_gpt.experiments.coord_check`; this import path stays for one release (DeprecationWarning)."""

import sys
import warnings

from cerebras_gpt.experiments import coord_check as _moved

warnings.warn(
    "cerebras_gpt.evaluate.coord_check moved to cerebras_gpt.experiments.coord_check", DeprecationWarning, stacklevel=2
)
sys.modules[__name__] = _moved  # the same module object under both names (patching one patches the other)
