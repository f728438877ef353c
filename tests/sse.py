"""Server-sent events, read the plain way the tests need: one event's ``field: value`` lines as a dict."""

from __future__ import annotations


def parse_event(block: str) -> dict[str, str]:
    """The fields of one event (``id: 3\\ndata: {...}``); every event the LLM worker writes is one line per field."""
    return dict(line.split(": ", 1) for line in block.strip().splitlines())


def parse_events(text: str) -> list[dict[str, str]]:
    """Every event of a whole stream (events end with a blank line)."""
    return [parse_event(block) for block in text.strip().split("\n\n")]
