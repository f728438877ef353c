"""The package's public API: what ``__all__`` promises is importable from the top, and every error the client
can raise is a ``VoicepodError``."""

from __future__ import annotations

import inspect

import voicepod
from voicepod import errors, protocol


def test_everything_in_all_is_importable_from_the_top():
    assert len(set(voicepod.__all__)) == len(voicepod.__all__)
    for name in voicepod.__all__:
        assert getattr(voicepod, name) is not None, name
    namespace: dict[str, object] = {}
    exec("from voicepod import *", namespace)
    assert set(voicepod.__all__) <= set(namespace)


def test_the_agent_events_chunks_and_errors_are_exported():
    for name in ("VoiceAgent", "Transcript", "ReplyText", "Audio", "Done", "TurnMetrics", "Endpoint"):
        assert name in voicepod.__all__
    chunk_models = {name for name, obj in vars(protocol).items()
                    if inspect.isclass(obj) and issubclass(obj, protocol._Chunk) and obj is not protocol._Chunk}
    assert chunk_models <= set(voicepod.__all__)
    error_types = {name for name, obj in vars(errors).items()
                   if inspect.isclass(obj) and issubclass(obj, errors.VoicepodError)}
    assert error_types <= set(voicepod.__all__)


def test_the_turn_metrics_and_a_jobs_metrics_have_different_names():
    assert voicepod.TurnMetrics is not protocol.Metrics
    assert not hasattr(voicepod, "Metrics")


def test_an_unknown_chunk_type_passes_through_with_its_fields():
    chunk = protocol.parse_chunk({"seq": 3, "type": "viseme", "shape": "O", "t": 0.25})
    assert isinstance(chunk, voicepod.UnknownChunk) and chunk.type == "viseme" and chunk.model_extra["shape"] == "O"
    done = protocol.parse_chunk({"seq": 4, "type": "done", "kind": "video", "metrics": {}})
    assert isinstance(done, voicepod.UnknownChunk)
    known = protocol.parse_chunk({"seq": 0, "type": "segment", "id": 0, "start": 0, "end": 1, "text": "hi"})
    assert isinstance(known, voicepod.SegmentChunk)


def test_a_job_error_is_json_text_on_the_wire_and_a_detail_in_the_model():
    chunk = protocol.ErrorChunk(seq=2, error=protocol.ErrorDetail(code=protocol.ErrorCode.EMPTY_AUDIO, message="x"))
    wire = chunk.model_dump(exclude_none=True)
    assert wire["error"] == '{"code":"empty_audio","message":"x"}'
    assert protocol.parse_chunk(wire).error == chunk.error
    assert protocol.parse_job_error(str(wire["error"])).code == "empty_audio"  # what the SDK's str() leaves


def test_every_public_name_has_one_home_and_workers_import_the_contract_alone():
    assert set(voicepod._HOMES) == set(voicepod.__all__)
    import subprocess
    import sys

    # A worker imports voicepod.protocol at start-up: that must not pull in the HTTP client or the agent.
    code = "import sys, voicepod.protocol; print(sorted(m for m in ('httpx', 'voicepod.agent') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
