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
"""

from __future__ import annotations

from typing import Mapping, Sequence

ROLES = {"system": "System", "user": "User", "assistant": "Assistant"}
STOP = ["\nUser:", "\nSystem:"]


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
    _check(messages)
    return "".join(format_message(m["role"], m["content"]) for m in messages) + f"{ROLES['assistant']}:"


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
