"""Bad input, fuzzed: random JSON at each worker's validation and through each real handler, in-process.

Property: every job ends with exactly one ``done`` or ``error`` chunk (a stable code, never ``internal_error``,
which would mean the input reached code that did not expect it), its ``seq`` runs 0..n-1, every chunk is plain
JSON, nothing raises out of the handler, nothing hangs, and the handler still serves a good job afterwards.
The numbers of cases tried are written to ``benchmarks/results/fuzz.json`` for docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from voicepod import protocol
from voicepod.protocol import parse_chunk

from tests.sse import parse_event
from workers.common.errors import INTERNAL, INVALID_INPUT, WorkerError
from workers.common.validation import parse_input

pytestmark = pytest.mark.slow  # loads the three embedded models, once per session

RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "fuzz.json"
JOB_TIMEOUT_S = 120.0  # far above any tiny job here: reaching it means a hang
TRIED: Counter[str] = Counter()

# --- strategies --------------------------------------------------------------------------------------------

HUGE_INTS = st.one_of(st.integers(min_value=2**63 - 2, max_value=2**200), st.integers(max_value=-(2**63) + 2,
                                                                                     min_value=-(2**200)))
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    HUGE_INTS,
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.just(""),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=10),  # astral planes, RTL, combining marks
)
JSON = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)


def _nested(depth: int) -> Any:
    value: Any = "bottom"
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


DEEP = st.integers(min_value=50, max_value=3000).map(_nested)
ANY = st.one_of(JSON, DEEP)
B64_BYTES = st.binary(max_size=4000).map(lambda data: base64.b64encode(data).decode())


def _inputs(fields: dict[str, st.SearchStrategy[Any]], good: dict[str, Any],
            valid: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[Any]:
    """Objects with any subset of the model's fields, each either a plausible value or any JSON at all; a good
    input with a few fields changed to plausible values (so many cases get past validation into the model);
    valid inputs with random content; unknown keys and non-object inputs now and then."""
    optional = {name: st.one_of(plausible, ANY) for name, plausible in fields.items()}
    objects = st.fixed_dictionaries({}, optional=optional)
    near_good = st.builds(lambda changed: {**good, **changed}, st.fixed_dictionaries({}, optional=fields))
    with_junk = st.builds(lambda d, k, v: {**d, k: v}, objects, st.text(max_size=12), ANY)
    return st.one_of(valid, near_good, objects, valid, objects, with_junk, ANY)


# Field-aware values reach past type checks into each worker's own rules (decoding, limits, prompt building).
STT_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "audio_base64": st.one_of(B64_BYTES, st.text(max_size=50), st.just("")),
    # No URL here may reach a network: refused schemes, private addresses, unresolvable names.
    "audio_url": st.sampled_from([
        "http://127.0.0.1:9/a.wav", "http://169.254.169.254/latest/meta-data/", "file:///etc/passwd",
        "ftp://example.com/a.wav", "http://[::1]/a.wav", "http://no-such-host.invalid/a.wav", "", "http://",
        "http://10.0.0.1/a.wav", "https://192.168.0.1:443/a.wav", "gopher://x", "http://2130706433/",
    ]),
    "audio_format": st.sampled_from(["pcm16", "mulaw", "wav", "PCM16", ""]),
    "sample_rate": st.one_of(st.sampled_from([8000, 16000, 44100]), st.integers(-10, 10**6)),
    "language": st.sampled_from(["en", "fr", "xx", "", "english"]),
    "task": st.sampled_from(["transcribe", "translate", "sing"]),
    "beam_size": st.integers(-3, 3),
    "temperature": st.one_of(st.floats(-1, 2), st.lists(st.floats(0, 1), max_size=3)),
    "initial_prompt": st.text(max_size=40),
    "vad_filter": st.booleans(),
    "word_timestamps": st.booleans(),
    "without_timestamps": st.booleans(),
    "hotwords": st.text(max_size=20),
}
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "tool", ""])},
    optional={"content": st.one_of(st.text(max_size=30), st.lists(
        st.fixed_dictionaries({"type": st.sampled_from(["text", "image"]), "text": st.text(max_size=10)}),
        max_size=2))},
)
# A valid max_tokens stays tiny (generation is the slow part); everything else is out of range or absurd.
MAX_TOKENS = st.one_of(st.integers(1, 2), st.integers(max_value=0), st.integers(min_value=1025), HUGE_INTS)
LLM_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "messages": st.lists(MESSAGE, max_size=3),
    "prompt": st.one_of(st.text(max_size=40), st.just(""), st.just(" \n\t")),
    "max_tokens": MAX_TOKENS,
    "temperature": st.floats(allow_nan=True, allow_infinity=True),
    "top_p": st.floats(allow_nan=True, allow_infinity=True),
    "stop": st.one_of(st.text(max_size=5), st.lists(st.text(max_size=5), max_size=10)),
    "seed": st.one_of(st.integers(), HUGE_INTS),
    "openai_route": st.sampled_from(["/v1/chat/completions", "/v1/models", "/v1/embeddings"]),
    "openai_input": st.fixed_dictionaries(
        {}, optional={"messages": st.lists(MESSAGE, max_size=2), "max_tokens": MAX_TOKENS, "stream": st.booleans(),
                      "n": st.integers(0, 3), "temperature": st.floats(-1, 3), "model": st.text(max_size=5),
                      "seed": st.one_of(st.integers(), HUGE_INTS)}),
}
TTS_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "text": st.one_of(st.text(max_size=40), st.just(""), st.just("..."), st.just("a" * 6000),
                      st.text(alphabet=st.characters(codec="utf-8"), max_size=20)),
    "voice": st.one_of(st.none(), st.text(max_size=12)),
    "speed": st.floats(allow_nan=True, allow_infinity=True),
    "format": st.sampled_from(["pcm16", "wav", "mulaw", "mp3"]),
    "sample_rate": st.one_of(st.sampled_from([8000, 16000, 22050, 48000]), st.integers()),
    "chunk_ms": st.one_of(st.integers(19, 5001), st.integers()),
}

TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=40)
VALID: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    # Random bytes as raw audio decode to noise that Whisper must still get through.
    "stt": st.one_of(
        st.fixed_dictionaries({"audio_base64": B64_BYTES, "audio_format": st.just("mulaw")},
                              optional={"beam_size": st.integers(1, 2), "word_timestamps": st.booleans(),
                                        "initial_prompt": TEXT, "temperature": st.floats(0, 1)}),
        st.fixed_dictionaries({"audio_base64": B64_BYTES, "audio_format": st.just("pcm16"),
                               "sample_rate": st.integers(1000, 192000)},
                              optional={"without_timestamps": st.booleans()}),
        st.fixed_dictionaries({"audio_base64": B64_BYTES}),  # random bytes as a "file" for PyAV to probe
    ),
    "llm": st.one_of(
        st.fixed_dictionaries({"prompt": TEXT, "max_tokens": st.integers(1, 2)},
                              optional={"temperature": st.floats(0, 2), "top_p": st.floats(0.01, 1),
                                        "seed": st.integers(-(2**70), 2**70), "stop": st.text(min_size=1, max_size=3)}),
        st.fixed_dictionaries({"messages": st.lists(st.fixed_dictionaries(
            {"role": st.sampled_from(["user", "system", "assistant"]), "content": TEXT}), min_size=1, max_size=3),
            "max_tokens": st.integers(1, 2)}),
        # RunPod's OpenAI route, streamed or not: whatever text the model writes must survive the SSE framing.
        st.fixed_dictionaries({"openai_route": st.just("/v1/chat/completions"), "openai_input": st.fixed_dictionaries(
            {"messages": st.lists(st.fixed_dictionaries({"role": st.just("user"), "content": TEXT}), min_size=1,
                                  max_size=2), "max_tokens": st.integers(1, 2), "stream": st.booleans()})}),
    ),
    "tts": st.fixed_dictionaries(
        {"text": TEXT},
        optional={"speed": st.floats(0.25, 4), "format": st.sampled_from(["pcm16", "wav", "mulaw"]),
                  "sample_rate": st.sampled_from([16000, 22050, 48000]), "chunk_ms": st.integers(20, 5000)}),
}

GOOD = {
    "stt": {"audio_base64": base64.b64encode(bytes(3200)).decode(), "audio_format": "pcm16", "sample_rate": 16000},
    "llm": {"prompt": "Hello", "max_tokens": 2, "temperature": 0},
    "tts": {"text": "Hi."},
}

# --- running handlers in-process -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    # One loop for every example: the handlers' model threads hand items back to the loop that started them.
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module", autouse=True)
def record_counts() -> Iterator[None]:
    yield
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    previous.update(TRIED)
    previous["total"] = sum(v for k, v in previous.items() if k.endswith(("_handler", "_validation")))
    RESULTS.write_text(json.dumps(previous, indent=2, sort_keys=True) + "\n")


@pytest.fixture(scope="module")
def handlers() -> dict[str, Any]:
    from workers.llm import handler as llm
    from workers.stt import handler as stt
    from workers.tts import handler as tts

    return {"stt": stt, "llm": llm, "tts": tts}


def run_job(loop: asyncio.AbstractEventLoop, handler: Any, raw: Any) -> list[dict[str, Any] | str]:
    async def collect() -> list[dict[str, Any] | str]:
        return [chunk async for chunk in handler({"id": "fuzz", "input": raw})]

    return loop.run_until_complete(asyncio.wait_for(collect(), JOB_TIMEOUT_S))


def _as_dict(chunk: dict[str, Any] | str) -> dict[str, Any]:
    if isinstance(chunk, dict):
        return chunk
    # An OpenAI stream's server-sent event: its id is the seq, its data OpenAI's JSON or the final [DONE].
    event = parse_event(chunk)
    data = event["data"] if event["data"] == "[DONE]" else json.loads(event["data"])
    return {"seq": int(event["id"]), "data": data}


def check_job(raw_chunks: list[dict[str, Any] | str], raw: Any, native: bool = True, sse: bool = False
              ) -> dict[str, Any]:
    """Assert the job's chunks obey the protocol (``sse``: a streamed OpenAI answer); return its last chunk."""
    assert raw_chunks, f"no chunk at all for {raw!r:.300}"
    chunks = [_as_dict(chunk) for chunk in raw_chunks]
    if not native and not sse and chunks[-1].get("type") != "error":
        # A non-streamed OpenAI answer is one object in OpenAI's own shape: no seq of ours in it.
        assert len(chunks) == 1 and "seq" not in chunks[0], chunks
        chunks = [{**chunks[0], "seq": 0}]
    assert [c["seq"] for c in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        json.dumps(chunk, allow_nan=False)  # RunPod's API carries strict JSON: NaN or Infinity would not survive
    last = chunks[-1]
    if last.get("type") == "error":
        code = parse_chunk(last).error.code
        assert isinstance(code, str) and code, last
        assert code != INTERNAL, f"{last['error']} for input {raw!r:.300}"
        assert all(c.get("type") != "error" for c in chunks[:-1])
    elif native:
        assert last.get("type") == "done", last
        for chunk in chunks:
            parse_chunk(chunk)
    elif sse:
        assert all(isinstance(chunk, str) for chunk in raw_chunks), raw_chunks
        assert last["data"] == "[DONE]", last
    else:
        assert not any(isinstance(chunk, str) for chunk in raw_chunks), raw_chunks
    return last


def _fuzz_handler(name: str, fields: dict[str, st.SearchStrategy[Any]], examples: int):
    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
    @given(raw=_inputs(fields, GOOD[name], VALID[name]))
    def test(raw: Any, handlers: dict[str, Any], loop: asyncio.AbstractEventLoop) -> None:
        native = not (isinstance(raw, dict) and raw.get("openai_route"))
        body = None if native else raw.get("openai_input")
        sse = not native and raw["openai_route"] == "/v1/chat/completions" and isinstance(body, dict) and (
            body.get("stream") is True)
        last = check_job(run_job(loop, handlers[name].handler, raw), raw, native, sse)
        TRIED[f"{name}_handler"] += 1
        TRIED[f"{name}_handler_{'error' if last.get('type') == 'error' else 'ok'}"] += 1

    return test


test_stt_handler_survives_fuzzed_input = _fuzz_handler("stt", STT_FIELDS, 100)
test_llm_handler_survives_fuzzed_input = _fuzz_handler("llm", LLM_FIELDS, 200)
test_tts_handler_survives_fuzzed_input = _fuzz_handler("tts", TTS_FIELDS, 200)


@pytest.mark.parametrize("name", ["stt", "llm", "tts"])
def test_each_handler_still_serves_a_good_job_after_the_fuzzing(
    name: str, handlers: dict[str, Any], loop: asyncio.AbstractEventLoop
) -> None:
    last = check_job(run_job(loop, handlers[name].handler, GOOD[name]), GOOD[name])
    assert last["type"] == "done"


# --- validation alone: many more cases, no model work --------------------------------------------------------


def _fuzz_validation(name: str, model_attr: str, fields: dict[str, st.SearchStrategy[Any]]):
    @settings(max_examples=1000, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(raw=_inputs(fields, GOOD[name], VALID[name]))
    def test(raw: Any) -> None:
        model = getattr(protocol, model_attr)  # the contract module: validation needs no model loaded
        try:
            parsed = parse_input(model, raw)
        except WorkerError as exc:
            assert exc.code == INVALID_INPUT and exc.message
            if exc.field is not None:
                assert exc.field.split(".")[0] in model.model_fields or "unknown field" in exc.message
        else:
            assert isinstance(raw, dict) and isinstance(parsed, model)
            for key, value in raw.items():  # strict: nothing was coerced into a different value
                kept = getattr(parsed, key)
                if isinstance(value, float) and math.isnan(value):
                    assert isinstance(kept, float) and math.isnan(kept)
                elif isinstance(value, int) and isinstance(kept, float):  # JSON numbers: an int may widen
                    assert kept == value
                elif not isinstance(value, (dict, list)):
                    assert kept == value and type(kept) is type(value), (key, value, kept)
        TRIED[f"{name}_validation"] += 1

    return test


test_stt_validation_fuzzed = _fuzz_validation("stt", "TranscribeRequest", STT_FIELDS)
test_llm_validation_fuzzed = _fuzz_validation("llm", "LLMRequest", LLM_FIELDS)
test_tts_validation_fuzzed = _fuzz_validation("tts", "SpeechRequest", TTS_FIELDS)


# --- edge cases pinned down: the first two were internal errors before the fuzzing found them ----------------

EDGES = [
    ("llm", {"prompt": "Hi", "max_tokens": 1, "seed": 2**70}, INVALID_INPUT),
    ("llm", {"prompt": "Hi", "max_tokens": 1, "temperature": 5e-324}, None),  # subnormal: run as greedy
    ("llm", {"openai_route": "/v1/chat/completions",
             "openai_input": {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1, "seed": -(2**64)}},
     INVALID_INPUT),
    ("llm", {"prompt": "word " * 40_000, "max_tokens": 1}, "input_too_large"),
    ("llm", {"prompt": "Hi", "max_tokens": 2**64}, INVALID_INPUT),
    ("tts", {"text": "a " * 3000}, "input_too_large"),
    ("tts", {"text": "\u0301\u200b\U0001f600"}, INVALID_INPUT),
    ("stt", {"audio_base64": "A" * 10, "audio_format": "pcm16", "sample_rate": 16000}, None),  # 7 bytes: odd
    ("stt", {"audio_base64": _nested(5000)}, INVALID_INPUT),
]


@pytest.mark.parametrize("name, raw, code", EDGES, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(EDGES)])
def test_edge_cases_end_as_the_protocol_says(
    name: str, raw: Any, code: str | None, handlers: dict[str, Any], loop: asyncio.AbstractEventLoop
) -> None:
    last = check_job(run_job(loop, handlers[name].handler, raw), raw)
    if code is None:
        assert last["type"] in ("done", "error")
    else:
        assert last["type"] == "error" and parse_chunk(last).error.code == code, last
