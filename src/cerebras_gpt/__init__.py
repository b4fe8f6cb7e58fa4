"""cerebras-gpt: the Cerebras-GPT model family and its workflow (prepare, train, evaluate, serve) on PyTorch.

The public API is re-exported here; see the README for the command line. The names load on first
use (PEP 562), so `import cerebras_gpt.data.prepare` in a tokenizing worker does not pay for
importing torch.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "PRESETS": "config", "RECIPES": "config", "GPTConfig": "config", "PaperRecipe": "config", "recipe_for": "config",
    "SamplingParams": "generate", "generate": "generate", "generate_ids": "generate", "stream_text": "generate",
    "stream_tokens": "generate",
    "GPT": "model", "KVCache": "model",
    "quantize": "quantize",
    "Tokenizer": "tokenizer", "load_tokenizer": "tokenizer",
}

if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from cerebras_gpt.config import PRESETS, RECIPES, GPTConfig, PaperRecipe, recipe_for
    from cerebras_gpt.generate import SamplingParams, generate, generate_ids, stream_text, stream_tokens
    from cerebras_gpt.model import GPT, KVCache
    from cerebras_gpt.quantize import quantize
    from cerebras_gpt.tokenizer import Tokenizer, load_tokenizer


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cerebras_gpt' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"cerebras_gpt.{module}"), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


# Functions named like the submodule that holds them.
_SHADOWED = ("generate", "quantize")


class _Package(types.ModuleType):
    """Keeps ``cerebras_gpt.generate`` (and ``quantize``) the function once the submodule of the same name
    is imported.

    Importing ``cerebras_gpt.generate`` (the module) makes Python set the package attribute
    ``generate`` to that module; an eager ``__init__`` rebound it to the function right away, and
    this keeps that behaviour now that the import happens lazily, at any time.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _SHADOWED and isinstance(value, types.ModuleType):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


__all__ = [
    "GPT", "GPTConfig", "KVCache", "PRESETS", "RECIPES", "PaperRecipe", "SamplingParams", "Tokenizer",
    "generate", "generate_ids", "load_tokenizer", "quantize", "recipe_for", "stream_text", "stream_tokens", "__version__",
]
