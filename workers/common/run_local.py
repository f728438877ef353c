"""Run a handler on one input and print its chunks as they come (``python -m workers.stt [input.json]``).

The runpod SDK's own local mode (``python handler.py --test_input``) prints a generator object instead of
iterating an async generator handler, so each worker's ``__main__`` uses this instead.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

_SHOWN_CHARS = 120  # base64 audio is long: show its start and its length


def _shorten(chunk: dict[str, Any]) -> dict[str, Any]:
    return {
        key: (f"{value[:_SHOWN_CHARS]}... ({len(value)} chars)" if isinstance(value, str) and len(value) > 400
              else value)
        for key, value in chunk.items()
    }


async def _drive(handler: Callable[[dict[str, Any]], AsyncIterator[dict[str, Any]]], job_input: Any) -> int:
    failed = 0
    async for chunk in handler({"id": "local-test", "input": job_input}):
        print(json.dumps(_shorten(chunk), ensure_ascii=False), flush=True)
        failed = int(chunk.get("type") == "error")
    return failed


def main(handler: Callable[[dict[str, Any]], AsyncIterator[dict[str, Any]]], default_input: Path) -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else default_input
    job = json.loads(path.read_text())
    sys.exit(asyncio.run(_drive(handler, job["input"])))
