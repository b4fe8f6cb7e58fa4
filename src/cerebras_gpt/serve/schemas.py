"""Request bodies of the OpenAI-compatible API, validated at the boundary (pydantic, strict types).

Field names, defaults and ranges are OpenAI's (`/v1/completions`, `/v1/chat/completions`); a few
extensions that vLLM also accepts are marked as such. Strict mode: ``"1"`` is not an integer and
``true`` is not a number, so wrong types get a 400 instead of a guess. Unknown fields are ignored, as
OpenAI's SDKs send fields (``user``, ``metadata``) that change nothing here.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

# torch.Generator.manual_seed takes seeds in [-2**63, 2**64).
Seed = Annotated[int, Field(ge=-(2**63), le=2**64 - 1)]
StopStr = Annotated[str, Field(min_length=1, max_length=256)]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="ignore")


class StreamOptions(_Strict):
    include_usage: bool = False
    """Send a last chunk (with empty ``choices``) holding the token usage."""


class _Sampling(_Strict):
    """Sampling fields shared by both endpoints."""

    model: str
    """The served model's name (see `GET /v1/models`)."""
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    """0 is greedy; higher is more random."""
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    """Nucleus sampling: sample from the smallest set of tokens whose probability reaches top_p."""
    top_k: int | None = Field(None, ge=-1)
    """Extension (vLLM): sample among the k most likely tokens; -1, 0 or null: all."""
    n: int = Field(1, ge=1, le=16)
    """Completions per prompt."""
    stream: bool = False
    """Send tokens as server-sent events as they are generated."""
    stream_options: StreamOptions | None = None
    stop: StopStr | Annotated[list[StopStr], Field(max_length=4)] | None = None
    """Up to 4 strings that end a completion (not included in it)."""
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    """Subtracted from the logits of tokens that already appear in the completion."""
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    """Subtracted from a token's logit once per time it appears in the completion."""
    repetition_penalty: float = Field(1.0, gt=0.0, le=10.0)
    """Extension (vLLM, Hugging Face): >1 discourages tokens of the prompt and the completion."""
    seed: Seed | None = None
    """Same seed, same prompt, same parameters: same completion."""
    logit_bias: dict[str, Annotated[float, Field(ge=-100.0, le=100.0)]] | None = None
    """Token id (as a string) -> bias added to its logit before sampling."""
    ignore_eos: bool = False
    """Extension (vLLM): keep generating past <|endoftext|> (benchmarks)."""
    user: str | None = None


class CompletionRequest(_Sampling):
    """`POST /v1/completions`."""

    prompt: str | list[str] | list[int] | list[list[int]]
    """Text, texts (one completion set each), token ids, or lists of token ids. Empty: <|endoftext|>."""
    max_tokens: int | None = Field(16, ge=0)
    """Most tokens to generate (OpenAI's default 16); null: up to the context. 0 with echo scores the prompt."""
    logprobs: int | None = Field(None, ge=0, le=20)
    """Return the log probability of each token and of the ``logprobs`` most likely alternatives."""
    echo: bool = False
    """Return the prompt before the completion (with its log probabilities when ``logprobs`` is set)."""
    best_of: int | None = Field(None, ge=1, le=16)
    """Accepted only equal to n (no server-side best-of selection)."""
    suffix: str | None = None
    """Not supported (insertion); must be null."""


class ContentPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None
    name: str | None = None


class ChatCompletionRequest(_Sampling):
    """`POST /v1/chat/completions` (rendered with the plain-text template of `cerebras_gpt.chat`)."""

    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_tokens: int | None = Field(None, ge=1)
    """Most tokens to generate; null: up to the context."""
    max_completion_tokens: int | None = Field(None, ge=1)
    """OpenAI's newer name for max_tokens (wins when both are given)."""
    logprobs: bool = False
    """Return the log probability of each generated token."""
    top_logprobs: int | None = Field(None, ge=0, le=20)
    """With logprobs: also the most likely alternatives at each position."""
    tools: list[dict] | None = None
    """Not supported (this is a base model); must be null or empty."""
