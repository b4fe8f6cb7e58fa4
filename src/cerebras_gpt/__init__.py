"""cerebras-gpt: the Cerebras-GPT model family and its workflow (prepare, train, evaluate, serve) on PyTorch.

The public API is re-exported here; see the README for the command line. The names load on first
use (PEP 562), so `import cerebras_gpt.data.prepare` in a tokenizing worker does not pay for
importing torch. The functions `generate` and `quantize` live in modules named differently
(`generation`, `quantization`), so importing a submodule never rebinds a public name here.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "PRESETS": "config",
    "RECIPES": "config",
    "GPTConfig": "config",
    "PaperRecipe": "config",
    "recipe_for": "config",
    "SamplingParams": "generation",
    "generate": "generation",
    "generate_ids": "generation",
    "stream_text": "generation",
    "stream_tokens": "generation",
    "GPT": "model",
    "KVCache": "model",
    "quantize": "quantization",
    "Tokenizer": "tokenizer",
    "load_tokenizer": "tokenizer",
}

if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from cerebras_gpt.config import PRESETS, RECIPES, GPTConfig, PaperRecipe, recipe_for
    from cerebras_gpt.generation import SamplingParams, generate, generate_ids, stream_text, stream_tokens
    from cerebras_gpt.model import GPT, KVCache
    from cerebras_gpt.quantization import quantize
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


__all__ = [
    "GPT",
    "GPTConfig",
    "KVCache",
    "PRESETS",
    "RECIPES",
    "PaperRecipe",
    "SamplingParams",
    "Tokenizer",
    "generate",
    "generate_ids",
    "load_tokenizer",
    "quantize",
    "recipe_for",
    "stream_text",
    "stream_tokens",
    "__version__",
]
