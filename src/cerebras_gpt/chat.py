"""The plain-text chat template shared by the server's /v1/chat/completions and `finetune`.

Cerebras-GPT is a base model, not instruction-tuned, so there is no learned chat format. We use the
simplest readable one, which base models continue naturally:

    System: You are a helpful assistant.
    User: Hello!
    Assistant: Hi, how can I help?
    User: Tell me a joke.
    Assistant:

Each message is ``"<Role>: <content>\\n"``; a prompt for the model ends with ``"Assistant:"`` and
generation stops at ``"\\nUser:"`` (see `STOP`). `finetune` trains on the assistant turns only.

The format has one definition, the Jinja `CHAT_TEMPLATE`: the server renders prompts through it, and
exported model directories carry it as ``chat_template`` in tokenizer_config.json, so transformers'
``apply_chat_template`` and vLLM's chat endpoint feed the model the same text as our server.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache

ROLES = {"system": "System", "user": "User", "assistant": "Assistant"}
STOP = ["\nUser:", "\nSystem:"]

# transformers' conventions: `messages`, `add_generation_prompt`, `raise_exception`. "developer" is
# OpenAI's newer name for "system".
CHAT_TEMPLATE = (
    "{%- set labels = {'system': 'System', 'developer': 'System', 'user': 'User', 'assistant': 'Assistant'} -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] not in labels -%}"
    "{{- raise_exception('unknown chat role ' ~ message['role'] ~ '; expected system, user or assistant') -}}"
    "{%- endif -%}"
    "{{- labels[message['role']] ~ ': ' ~ (message['content'] | trim) ~ '\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- 'Assistant:' -}}{%- endif -%}"
)


@lru_cache(maxsize=1)
def _compiled_template():
    """`CHAT_TEMPLATE` compiled in a sandbox, as transformers compiles it."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str):
        raise ValueError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(CHAT_TEMPLATE)


def apply_template(messages: Sequence[Mapping[str, str]], add_generation_prompt: bool) -> str:
    """`CHAT_TEMPLATE` rendered for ``messages`` (checked first)."""
    _check(messages)
    return _compiled_template().render(
        messages=[dict(m) for m in messages], add_generation_prompt=add_generation_prompt
    )


def _check(messages: Sequence[Mapping[str, str]]) -> None:
    if not messages:
        raise ValueError("messages is empty; give at least one {'role': ..., 'content': ...}")
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise ValueError(f"messages[{i}]={m!r} must be {{'role': one of {sorted(ROLES)}, 'content': str}}")


def format_message(role: str, content: str) -> str:
    return f"{ROLES[role]}: {content.strip()}\n"


def render_prompt(messages: Sequence[Mapping[str, str]]) -> str:
    """The text a model continues to answer the conversation: all messages, then ``"Assistant:"``."""
    return apply_template(messages, add_generation_prompt=True)


def render_segments(messages: Sequence[Mapping[str, str]]) -> list[tuple[str, bool]]:
    """(text, is_assistant_answer) pieces whose concatenation is the whole conversation, for training
    with loss on the assistant answers only. The ``"Assistant:"`` label is prompt; the answer (with its
    leading space and trailing newline) is target."""
    _check(messages)
    pieces: list[tuple[str, bool]] = []
    for m in messages:
        if m["role"] == "assistant":
            pieces.append((f"{ROLES['assistant']}:", False))
            pieces.append((f" {m['content'].strip()}\n", True))
        else:
            pieces.append((format_message(m["role"], m["content"]), False))
    return pieces
