"""Server-sent events, read the plain way the tests need: one event's ``field: value`` lines as a dict."""

from __future__ import annotations


def parse_event(block: str) -> dict[str, str]:
    """The fields of one event (``id: 3\\ndata: {...}``); every event the LLM worker writes is one line per field."""
    # Split at "\n" only: str.splitlines() also splits at U+2028 and the like, which JSON text may hold raw.
    return dict(line.split(": ", 1) for line in block.strip("\n").split("\n"))


def parse_events(text: str) -> list[dict[str, str]]:
    """Every event of a whole stream (events end with a blank line)."""
    return [parse_event(block) for block in text.strip("\n").split("\n\n")]
