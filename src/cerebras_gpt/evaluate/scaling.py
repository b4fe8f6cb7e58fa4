"""Moved to `cerebras_gpt.experiments.scaling`; this import path stays for one release (DeprecationWarning)."""

import sys
import warnings

from cerebras_gpt.experiments import scaling as _moved

warnings.warn(
    "cerebras_gpt.evaluate.scaling moved to cerebras_gpt.experiments.scaling", DeprecationWarning, stacklevel=2
)
sys.modules[__name__] = _moved  # the same module object under both names (patching one patches the other)
