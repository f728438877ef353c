"""What the LLM worker's OpenAI route accepts: the fields OpenAI clients (Pipecat's OpenAILLMService, the OpenAI
SDK) send at neutral values pass; asking for what the worker cannot do is refused, naming the field."""

from __future__ import annotations

from typing import Any

import pytest
from voicepod.protocol import ErrorCode, OpenAIChatInput

from workers.common.errors import WorkerError
from workers.common.validation import parse_input

HI = [{"role": "user", "content": "Hi"}]


def test_what_pipecats_openai_llm_service_sends_is_accepted() -> None:
    # Pipecat 1.14's BaseOpenAILLMService.build_chat_completion_params, with its defaults and no tools (the
    # OpenAI SDK drops its NOT_GIVEN values), plus the harmless fields a user may set through Settings.extra.
    body = {
        "model": "gpt-4.1", "stream": True, "stream_options": {"include_usage": True}, "messages": HI,
        "tools": [], "tool_choice": "none", "parallel_tool_calls": False, "frequency_penalty": 0,
        "presence_penalty": 0.0, "service_tier": "auto", "store": False, "metadata": {"bot": "phone"},
        "logprobs": False,
    }
    parsed = parse_input(OpenAIChatInput, body)
    assert parsed.stream and parsed.stream_options and parsed.stream_options.include_usage


def test_a_developer_message_is_a_system_message() -> None:
    parsed = parse_input(OpenAIChatInput, {"messages": [{"role": "developer", "content": "Be brief."}, *HI]})
    assert [m.role for m in parsed.messages] == ["system", "user"]


@pytest.mark.parametrize(
    ("extra", "field", "says"),
    [
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools", "tool calling is not supported"),
        ({"tool_choice": "required"}, "tool_choice", "tool calling is not supported"),
        ({"tool_choice": {"type": "function", "function": {"name": "f"}}}, "tool_choice", "tool calling"),
        ({"frequency_penalty": 0.5}, "frequency_penalty", "penalties are not supported"),
        ({"logprobs": True}, "logprobs", "logprobs are not supported"),
        ({"functions": []}, "functions", "unknown field 'functions'"),
    ],
)
def test_what_the_worker_cannot_do_is_refused_by_name(extra: dict[str, Any], field: str, says: str) -> None:
    with pytest.raises(WorkerError) as refused:
        parse_input(OpenAIChatInput, {"messages": HI, **extra})
    assert refused.value.code == ErrorCode.INVALID_INPUT and refused.value.field == field
    assert says in refused.value.message


def test_the_reply_caps_allowance_travels_in_the_body_and_is_bounded() -> None:
    # RunPodLLMService sends it in extra_body, which the OpenAI client merges into the request's JSON.
    assert parse_input(OpenAIChatInput, {"messages": HI, "finish_sentence_within": 20}).finish_sentence_within == 20
    assert parse_input(OpenAIChatInput, {"messages": HI}).finish_sentence_within == 0
    for bad in (-1, 257, "20"):
        with pytest.raises(WorkerError) as refused:
            parse_input(OpenAIChatInput, {"messages": HI, "finish_sentence_within": bad})
        assert refused.value.field == "finish_sentence_within"
