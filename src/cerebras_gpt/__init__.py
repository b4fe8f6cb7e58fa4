"""cerebras-gpt: the Cerebras-GPT model family and its workflow (prepare, train, evaluate, serve) on PyTorch.

The public API is re-exported here; see the README for the command line.
"""

from cerebras_gpt.config import PRESETS, RECIPES, GPTConfig, PaperRecipe, recipe_for
from cerebras_gpt.generate import SamplingParams, generate, generate_ids, stream_text, stream_tokens
from cerebras_gpt.model import GPT, KVCache
from cerebras_gpt.tokenizer import Tokenizer, load_tokenizer

__version__ = "0.1.0"

__all__ = [
    "GPT", "GPTConfig", "KVCache", "PRESETS", "RECIPES", "PaperRecipe", "SamplingParams", "Tokenizer",
    "generate", "generate_ids", "load_tokenizer", "recipe_for", "stream_text", "stream_tokens", "__version__",
]
