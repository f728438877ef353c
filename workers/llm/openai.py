"""The OpenAI chat-completions object shapes this worker emits (chunk, completion, model list), and the
server-sent-event text a streamed answer travels in.

Plain dicts with OpenAI's field names, so an OpenAI SDK parses them unchanged.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class CompletionIds:
    """What every object of one completion shares: its ``id``, ``created`` (unix seconds) and ``model``."""

    model: str
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))


def chunk(
    ids: CompletionIds,
    content: str | None = None,
    role: str | None = None,
    finish_reason: str | None = None,
) -> dict[str, Any]:
    """A ``chat.completion.chunk`` with one choice whose delta carries ``role`` and/or ``content``."""
    delta: dict[str, Any] = {}
    if role is not None:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    return {
        "id": ids.id,
        "object": "chat.completion.chunk",
        "created": ids.created,
        "model": ids.model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def usage_chunk(ids: CompletionIds, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    """The last chunk of a stream asked with ``stream_options.include_usage``: no choices, only usage."""
    return {
        "id": ids.id,
        "object": "chat.completion.chunk",
        "created": ids.created,
        "model": ids.model,
        "choices": [],
        "usage": usage(prompt_tokens, completion_tokens),
    }


def completion(
    ids: CompletionIds, text: str, finish_reason: str, prompt_tokens: int, completion_tokens: int
) -> dict[str, Any]:
    """A whole ``chat.completion`` object (the non-streaming answer)."""
    return {
        "id": ids.id,
        "object": "chat.completion",
        "created": ids.created,
        "model": ids.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": usage(prompt_tokens, completion_tokens),
    }


def model_list(model: str, created: int) -> dict[str, Any]:
    """The ``/v1/models`` answer: the one model this worker serves."""
    return {"object": "list", "data": [{"id": model, "object": "model", "created": created, "owned_by": "voicepod"}]}


async def plain_objects(chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    """A non-streamed answer's one object (or the model list) as OpenAI wrote it: without our ``seq``, which an
    OpenAI body does not have (one object needs no ordering). An error chunk passes unchanged."""
    async for chunk in chunks:
        if "error" not in chunk:
            chunk.pop("seq", None)
        yield chunk


async def server_sent_events(chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any] | str]:
    """A streamed answer's numbered chunks as SSE text, the form RunPod's OpenAI route relays to the caller (the
    one RunPod's own vLLM worker streams by default, ``RAW_OPENAI_OUTPUT``).

    One event per chunk, then OpenAI's ``data: [DONE]``. The event ``id`` is the chunk's ``seq``, so the numbering
    survives in a field SSE clients (an OpenAI SDK's too) know and the JSON stays OpenAI's own. An error chunk stays
    a dict: the runpod SDK fails the job at it, as for any other request.
    """
    seq = -1
    async for chunk in chunks:
        if "error" in chunk:
            yield chunk
            return
        seq = chunk.pop("seq")
        yield f"id: {seq}\ndata: {json.dumps(chunk, ensure_ascii=False)}\n\n"
    yield f"id: {seq + 1}\ndata: [DONE]\n\n"
