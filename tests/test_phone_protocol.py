"""The phone server's protocol edges, without models: Media Streams messages, TwiML, Twilio signatures on both
routes, and bad input on the media socket. A real ``voicepod phone`` process; its endpoints are never called
(no greeting, no speech), so their address points nowhere."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import httpx
import pytest
from voicepod.local.process import free_port
from voicepod.phone import twilio, twiml
from voicepod.phone.caller import SimulatedCaller
from voicepod.phone.signatures import sign
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from .phone_util import PhoneServer
from .speech import espeak_wav

NOWHERE = f"http://127.0.0.1:{free_port()}/v2"
TOKEN = "0123456789abcdef0123456789abcdef"
PUBLIC = "https://calls.example.com"


# --- messages ---------------------------------------------------------------------------------------------


def test_twilio_messages_parse_into_their_models():
    start = twilio.parse(twilio.twilio_start("MZ1", "CA1", {"caller": "+15550100"}))
    assert isinstance(start, twilio.Start)
    assert (start.start.stream_sid, start.start.call_sid) == ("MZ1", "CA1")
    assert start.start.custom_parameters == {"caller": "+15550100"}
    assert start.start.media_format.sample_rate == 8000
    frame = twilio.parse(twilio.twilio_media("MZ1", b"\x01\x02\xff", 3, 1, 20))
    assert isinstance(frame, twilio.Media) and frame.media.audio() == b"\x01\x02\xff"
    assert twilio.parse(twilio.twilio_mark("MZ1", "1:0", 4)).mark.name == "1:0"
    assert twilio.parse(twilio.twilio_dtmf("MZ1", "7", 5)).dtmf.digit == "7"
    assert isinstance(twilio.parse(twilio.twilio_stop("MZ1", "CA1", 6)), twilio.Stop)
    assert isinstance(twilio.parse(twilio.twilio_connected()), twilio.Connected)


@pytest.mark.parametrize(("frame", "code"), [
    ("{not json", "malformed_json"),
    ("[1, 2]", "invalid_message"),
    ('{"event": "start", "start": {"streamSid": "MZ1"}}', "invalid_message"),
    ('{"event": "teleport"}', "unknown_event"),
    ('{"event": "media"}', "invalid_message"),
])
def test_bad_frames_raise_protocol_errors_with_a_code(frame, code):
    with pytest.raises(twilio.ProtocolError) as error:
        twilio.parse(frame)
    assert error.value.code == code


def test_a_payload_that_is_not_base64_is_a_bad_payload():
    frame = twilio.parse('{"event": "media", "media": {"payload": "@@not base64@@"}}')
    with pytest.raises(twilio.ProtocolError) as error:
        frame.media.audio()
    assert error.value.code == "bad_payload"


def test_server_frames_carry_the_stream_sid_and_base64_audio():
    out = json.loads(twilio.media("MZ9", b"\x00\xff"))
    assert out == {"event": "media", "streamSid": "MZ9", "media": {"payload": base64.b64encode(b"\x00\xff").decode()}}
    assert json.loads(twilio.mark("MZ9", "2:1")) == {"event": "mark", "streamSid": "MZ9", "mark": {"name": "2:1"}}
    assert json.loads(twilio.clear("MZ9")) == {"event": "clear", "streamSid": "MZ9"}
    assert [len(f) for f in twilio.frames(b"x" * 400)] == [160, 160, 80]


def test_twiml_connects_a_stream_with_parameters_not_a_query_string():
    assert twiml.stream_url(None, "phone.example.com:8443") == "wss://phone.example.com:8443/media"
    assert twiml.stream_url("https://ex.com/voice/", "ignored") == "wss://ex.com/voice/media"
    root = ET.fromstring(twiml.connect_stream("wss://ex.com/media", {"from": "+1 <555>"}))
    stream = root.find("./Connect/Stream")
    assert root.tag == "Response" and stream is not None and stream.get("url") == "wss://ex.com/media"
    assert [(p.get("name"), p.get("value")) for p in stream.findall("Parameter")] == [("from", "+1 <555>")]


# --- signatures -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def signed_server():
    with PhoneServer(NOWHERE, ["--greeting", "", "--public-url", PUBLIC], env={"TWILIO_AUTH_TOKEN": TOKEN}) as srv:
        yield srv


def test_twiml_refuses_a_missing_or_wrong_signature(signed_server):
    form = {"CallSid": "CA1", "From": "+15550100", "To": "+15550111"}
    assert httpx.post(f"{signed_server.url}/twiml", data=form).status_code == 403
    forged = sign("not-the-token-not-the-token-0000", f"{PUBLIC}/twiml", form)
    assert httpx.post(f"{signed_server.url}/twiml", data=form,
                      headers={"X-Twilio-Signature": forged}).status_code == 403
    # Signed for other parameters than those sent: refused too.
    other = sign(TOKEN, f"{PUBLIC}/twiml", {**form, "From": "+15550199"})
    assert httpx.post(f"{signed_server.url}/twiml", data=form,
                      headers={"X-Twilio-Signature": other}).status_code == 403


def test_twiml_accepts_twilios_signature_over_the_public_url(signed_server):
    form = {"CallSid": "CA1", "From": "+15550100", "To": "+15550111"}
    reply = httpx.post(f"{signed_server.url}/twiml", data=form,
                       headers={"X-Twilio-Signature": sign(TOKEN, f"{PUBLIC}/twiml", form)})
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("application/xml")
    stream = ET.fromstring(reply.text).find("./Connect/Stream")
    assert stream.get("url") == "wss://calls.example.com/media"
    assert {p.get("name"): p.get("value") for p in stream.findall("Parameter")} == {"from": "+15550100",
                                                                                   "to": "+15550111"}


async def test_media_upgrade_without_a_valid_signature_is_refused_before_any_audio(signed_server):
    for caller in (SimulatedCaller(signed_server.media_url),
                   SimulatedCaller(signed_server.media_url, auth_token="wrong-token-wrong-token-00000000",
                                   signed_url="wss://calls.example.com/media"),
                   # The right token over the wrong URL (the server's own address, not the public one).
                   SimulatedCaller(signed_server.media_url, auth_token=TOKEN)):
        with pytest.raises(InvalidStatus) as refused:
            await caller.connect()
        assert refused.value.response.status_code == 403
    assert "refused a connection without a valid Twilio signature" in signed_server.logs()


async def test_media_upgrade_with_twilios_signature_is_accepted(signed_server):
    caller = SimulatedCaller(signed_server.media_url, auth_token=TOKEN, signed_url="wss://calls.example.com/media")
    await caller.connect()
    await asyncio.sleep(0.5)
    await caller.hang_up()
    record = signed_server.record(caller.call_sid)
    assert record["end_reason"] == "stop" and record["stream_sid"] == caller.stream_sid


async def test_without_a_public_url_signatures_are_checked_over_the_requests_own_address():
    with PhoneServer(NOWHERE, ["--greeting", ""], env={"TWILIO_AUTH_TOKEN": TOKEN}) as srv:
        form = {"CallSid": "CA1"}
        good = sign(TOKEN, f"{srv.url}/twiml", form)
        assert httpx.post(f"{srv.url}/twiml", data=form, headers={"X-Twilio-Signature": good}).status_code == 200
        bad = sign(TOKEN, f"{PUBLIC}/twiml", form)
        assert httpx.post(f"{srv.url}/twiml", data=form, headers={"X-Twilio-Signature": bad}).status_code == 403
        caller = SimulatedCaller(srv.media_url, auth_token=TOKEN)  # signs wss://127.0.0.1:PORT/media
        await caller.connect()
        await caller.hang_up()
        assert srv.record(caller.call_sid)["end_reason"] == "stop"


def test_without_a_token_the_server_warns_loudly_and_binds_loopback():
    with PhoneServer(NOWHERE, ["--greeting", ""]) as srv:
        assert "/twiml and /media are NOT verified" in srv.logs()
        assert f"http://127.0.0.1:{srv.port}" in srv.logs()
        form = {"CallSid": "CA1"}
        reply = httpx.post(f"{srv.url}/twiml", data=form, headers={"Host": "phone.example.org"})
        assert reply.status_code == 200
        assert 'url="wss://phone.example.org/media"' in reply.text


# --- bad input --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server():
    with PhoneServer(NOWHERE, ["--greeting", ""]) as srv:
        yield srv


async def _started_call(server) -> SimulatedCaller:
    caller = SimulatedCaller(server.media_url)
    await caller.connect()
    await asyncio.sleep(0.2)
    return caller


@pytest.mark.parametrize(("frame", "close_code", "reason"), [
    ("{this is not json", 1007, "malformed_json"),
    (b"\x00\x01binary", 1003, "binary_frame"),
    (json.dumps({"event": "start", "start": {"streamSid": "MZ2"}}), 1007, "invalid_message"),
    (twilio.twilio_start("MZ2", "CA2"), 1008, "out_of_order"),  # a second start
    ('{"event": "media", "media": {"payload": "' + "A" * 3_000_000 + '"}}', 1009, "disconnected"),
])
async def test_a_bad_frame_closes_that_call_and_the_server_keeps_serving(server, frame, close_code, reason):
    caller = await _started_call(server)
    await caller.send_raw(frame)
    await asyncio.wait_for(caller.closed.wait(), 15)
    # uvicorn refuses the oversized frame with 1009 while it still arrives: the client may see the reset first.
    assert caller.close_code == close_code or (close_code == 1009 and caller.close_code == 1006)
    record = server.record(caller.call_sid)
    assert record["end_reason"].startswith(reason)
    await asyncio.sleep(0.2)
    assert server.active_calls() == 0
    # The server still takes calls.
    other = await _started_call(server)
    await other.hang_up()
    assert server.record(other.call_sid)["end_reason"] == "stop"


async def test_media_before_start_closes_the_call(server):
    async with ws_connect(server.media_url) as socket:
        await socket.send(twilio.twilio_connected())
        await socket.send(twilio.twilio_media("MZ1", b"\xff" * 160, 2, 1, 20))
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(socket.recv(), 15)
    assert closed.value.rcvd.code == 1008
    assert "media before start" in server.logs()


async def test_unknown_events_and_bad_base64_are_skipped_and_the_call_goes_on(server):
    caller = await _started_call(server)
    await caller.send_raw('{"event": "teleport", "streamSid": "x"}')
    await caller.send_raw('{"event": "media", "media": {"payload": "@@@"}}')
    await caller.send_raw(twilio.twilio_dtmf(caller.stream_sid, "5", 99))
    await asyncio.sleep(0.5)
    assert not caller.closed.is_set()
    await caller.hang_up()
    record = server.record(caller.call_sid)
    assert record["end_reason"] == "stop" and record["ignored_frames"] == 2 and record["dtmf"] == ["5"]


def test_an_oversized_webhook_body_is_refused(server):
    reply = httpx.post(f"{server.url}/twiml", content=b"x=" + b"y" * 200_000,
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert reply.status_code == 413
    health = httpx.get(f"{server.url}/health").json()
    assert (health["status"], health["calls"], health["replying"]) == ("ok", 0, 0) and health["tasks"] >= 1


@pytest.mark.parametrize(("args", "says"), [
    (["phone", "--stt", "a", "--llm", "b"], "no endpoint id for tts"),
    (["phone", "--stt", "a", "--llm", "b", "--tts", "c", "--public-url", "phone.example.com"], "full URL"),
    (["call", f"ws://127.0.0.1:{free_port()}/media", "missing.wav"], "cannot read missing.wav"),
    (["phone", "--local", "--no-speculate"], "--no-speculate needs --turn-detector silence"),
    (["phone", "--local", "--pause", "1.2"], "shorter than --max-silence (1.0 s)"),
    (["phone", "--local", "--barge-in-after", "0.9"], "no longer than --backchannel-max"),
    (["phone", "--local", "--drain", "-1"], "--drain takes 0 seconds or more"),
    (["phone", "--local", "--finish-within", "300"], "--finish-within takes 0 to 256 tokens"),
])
def test_command_line_mistakes_end_in_one_line(args, says, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEPOD_")}
    result = subprocess.run([sys.executable, "-m", "voicepod.cli", *args], capture_output=True, text=True,
                            timeout=60, cwd=tmp_path, env=env)
    assert result.returncode != 0
    assert says in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_calling_a_server_that_is_not_there_ends_in_one_line(tmp_path):
    (tmp_path / "q.wav").write_bytes(espeak_wav("Hello."))
    result = subprocess.run([sys.executable, "-m", "voicepod.cli", "call", f"ws://127.0.0.1:{free_port()}/media",
                             "q.wav"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and "could not connect" in lines[0], result.stderr
