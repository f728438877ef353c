"""Turn chat messages or a plain prompt into the text the model continues, and its implicit stops."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# Base models (no chat template) get this plain transcript format; they then run on into the next turn,
# so the next turn's marker is an implicit stop.
PLAIN_USER = "User:"
PLAIN_ASSISTANT = "Assistant:"
PLAIN_SYSTEM = "System:"
PLAIN_STOPS = ("\n" + PLAIN_USER,)


@dataclass(frozen=True)
class Prompt:
    """What to feed the model.

    ``text`` is the prompt text; ``add_special_tokens`` says whether tokenizing it should add BOS (a chat
    template already writes its own); ``stops`` are implicit stop strings; ``strip_leading`` says to drop the
    whitespace the model writes right after ``Assistant:``.
    """

    text: str
    add_special_tokens: bool
    stops: tuple[str, ...] = field(default_factory=tuple)
    strip_leading: bool = False


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def chat_prompt(tokenizer: Any, messages: Sequence[dict[str, str]]) -> Prompt:
    """Build the prompt for ``messages`` (``{"role", "content"}`` dicts, roles system/user/assistant).

    Uses the tokenizer's chat template when it has one, else the plain ``User:/Assistant:`` transcript.
    """
    if has_chat_template(tokenizer):
        text = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        return Prompt(text=text, add_special_tokens=False)
    lines = []
    for message in messages:
        label = {"system": PLAIN_SYSTEM, "user": PLAIN_USER, "assistant": PLAIN_ASSISTANT}[message["role"]]
        lines.append(f"{label} {message['content'].strip()}")
    lines.append(PLAIN_ASSISTANT)
    return Prompt(text="\n".join(lines), add_special_tokens=True, stops=PLAIN_STOPS, strip_leading=True)


def token_ids(tokenizer: Any, prompt: Prompt) -> Any:
    """``prompt``'s token ids as a ``[1, n]`` tensor, with BOS only where the prompt asks for it."""
    return tokenizer(prompt.text, add_special_tokens=prompt.add_special_tokens, return_tensors="pt").input_ids


def raw_prompt(text: str) -> Prompt:
    """A plain ``prompt`` is continued as is: no template, no implicit stop."""
    return Prompt(text=text, add_special_tokens=True)
