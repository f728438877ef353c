"""Every way the client can fail raises a typed voicepod error (against an API double: httpx's MockTransport)."""

from __future__ import annotations

import httpx
import pytest
from voicepod import DeadlineExceeded, Endpoint, NotFoundError, ProtocolError, VoicepodError


def endpoint(handler) -> Endpoint:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return Endpoint("ep", api_key="k", base_url="http://api.test/v2", http_client=client, max_retries=0)


async def test_a_body_that_is_not_json_is_a_protocol_error():
    ep = endpoint(lambda request: httpx.Response(200, text="<html>proxy login</html>"))
    with pytest.raises(ProtocolError, match="not JSON"):
        await ep.run({"x": 1})


async def test_a_malformed_chunk_of_a_known_type_is_a_protocol_error():
    def handler(request):
        if request.url.path.endswith("/run"):
            return httpx.Response(200, json={"id": "j1", "status": "IN_QUEUE"})
        bad = {"seq": 0, "type": "audio", "sentence": 0, "format": "pcm16"}  # no sample_rate, no audio
        return httpx.Response(200, json={"status": "IN_PROGRESS", "stream": [{"output": bad}]})

    job = await endpoint(handler).run({})
    with pytest.raises(ProtocolError, match="does not fit the protocol"):
        async for _ in job.chunks():
            pass


async def test_run_sync_past_its_deadline_cancels_the_job_and_raises_a_typed_timeout():
    cancelled = []

    def handler(request):
        if request.url.path.endswith("/runsync"):
            return httpx.Response(200, json={"id": "j2", "status": "IN_PROGRESS"})
        if "/cancel/" in request.url.path:
            cancelled.append(request.url.path)
            return httpx.Response(200, json={"id": "j2", "status": "CANCELLED"})
        return httpx.Response(200, json={"id": "j2", "status": "IN_PROGRESS"})

    with pytest.raises(DeadlineExceeded) as caught:
        await endpoint(handler).run_sync({}, timeout=0.3)
    assert isinstance(caught.value, TimeoutError) and isinstance(caught.value, VoicepodError)
    assert caught.value.job_id == "j2" and cancelled == ["/v2/ep/cancel/j2"]


async def test_an_api_error_names_the_request():
    ep = endpoint(lambda request: httpx.Response(404, json={"error": "no endpoint 'ep' here; serving: stt"}))
    with pytest.raises(NotFoundError) as caught:
        await ep.health()
    assert caught.value.url == "http://api.test/v2/ep/health" and "serving: stt" in str(caught.value)
