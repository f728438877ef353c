"""Run a handler on one input and print its chunks as they come (``python -m workers.stt [input.json]``).

The runpod SDK's own local mode (``python handler.py --test_input``) prints a generator object instead of
iterating an async generator handler, so each worker's ``__main__`` uses this instead.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

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


def _schema_type(schema: dict[str, Any]) -> str:
    """A JSON-schema property in a few words: ``int 1..20``, ``'pcm16' | 'mulaw'``, ``list of number``."""
    if "anyOf" in schema:
        return " or ".join(_schema_type(part) for part in schema["anyOf"])
    if "enum" in schema:
        return " | ".join(repr(value) for value in schema["enum"])
    if "const" in schema:
        return repr(schema["const"])
    kind = {"integer": "int", "string": "str", "boolean": "bool", "number": "number", "null": "null",
            "object": "object"}.get(schema.get("type", ""), schema.get("type", "") or schema.get("$ref", "?"))
    if kind == "array":
        items = schema.get("items", {})
        kind = f"list of {_schema_type(items) if items else 'any'}"
    low, high = schema.get("minimum", schema.get("exclusiveMinimum")), schema.get("maximum")
    if low is not None or high is not None:
        kind += f" {'' if low is None else low}..{'' if high is None else high}"
    if "maxLength" in schema:
        kind += f" (up to {schema['maxLength']} chars)"
    return kind.replace("#/$defs/", "")


def describe(model: type[BaseModel]) -> list[tuple[str, str, str, str]]:
    """A request model's fields as (name, type, default, meaning) rows, from its JSON schema."""
    schema = model.model_json_schema()
    rows = []
    for name, field in model.model_fields.items():
        prop = schema["properties"][name]
        default = "required" if field.is_required() else repr(field.get_default(call_default_factory=True))
        rows.append((name, _schema_type(prop), default, field.description or ""))
    return rows


def main(worker: str, handler_module: str, request_model: type[BaseModel], default_input: Path) -> None:
    """Parse the command line first, so ``--help`` and a wrong path answer at once, before the model loads;
    then import ``handler_module`` (which loads the model) and run its handler on the input file."""
    parser = argparse.ArgumentParser(
        prog=f"python -m workers.{worker}",
        description=f"Run the {worker} worker's handler on one job input and print its chunks as they come. "
        "Settings come from the environment (README, Worker settings).",
        epilog=f"The job input ({request_model.__name__}) takes:\n" + "\n".join(
            f"  {name}: {kind}; {default}{f'. {about}' if about else ''}"
            for name, kind, default, about in describe(request_model)),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("input", nargs="?", type=Path, default=default_input,
                        help=f'a JSON file {{"input": {{...}}}} (default: {default_input.name} beside the worker)')
    args = parser.parse_args()
    try:
        job = json.loads(args.input.read_text())
    except OSError as exc:
        parser.exit(2, f"python -m workers.{worker}: {args.input}: {exc.strerror}\n")
    except ValueError as exc:
        parser.exit(2, f"python -m workers.{worker}: {args.input} is not JSON: {exc}\n")
    if not isinstance(job, dict) or "input" not in job:
        parser.exit(2, f'python -m workers.{worker}: {args.input} must hold {{"input": {{...}}}}\n')
    handler = importlib.import_module(handler_module).handler
    sys.exit(asyncio.run(_drive(handler, job["input"])))
