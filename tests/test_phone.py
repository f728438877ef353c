"""Phone calls end to end: a simulated Twilio caller speaks espeak-ng questions in real time to a ``voicepod
phone`` process, which runs them through real STT, LLM and TTS workers under serve-local.

Calls run in real time and the three workers share the CPU, so these tests are few and share one serve-local.
They do not depend on the reply's wording: Whisper checks that the audio the caller heard says what the call
record says was heard."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys

import pytest
from voicepod import registry
from voicepod.agent import Audio, Done, VoiceAgent
from voicepod.audio import MULAW_RATE, mulaw_decode, read_wav, resample
from voicepod.local import LocalServer
from voicepod.phone.call import APOLOGY
from voicepod.phone.caller import SimulatedCaller

from .conftest import REPO
from .phone_util import PhoneServer, spoken_mulaw
from .speech import espeak_wav, heard_share, load_whisper, wer

GREETING = "Hello, this is voicepod."
# Several sentences, so that the first is spoken while the LLM still writes and a barge-in has something to cut.
# No greeting on this server: a base model (Gemma, the other embedded LLM) copies a greeting it finds in the history.
PHONE_ARGS = ["--greeting", "", "--system-prompt", "Answer in four or five sentences.", "--max-tokens", "60"]
DOGS = "What can you tell me about dogs?"
# A question the embedded SmolLM2 answers in several sentences of plain words (asked to count, it says "One
# hundred is less than 1,001.", and Whisper writes numbers as digits).
TEA = "How do I make a cup of tea?"
# The turn detector's 32 ms windows fall on the question wherever the caller's silence before it left them, so
# Whisper hears a slightly different clip on each run: this question stays within 0.17 WER at every alignment
# (Whisper tiny.en on 8 kHz espeak-ng heard "What is the time in London?" as "What is the cabin London?" at 3 of
# 16 alignments, a CI failure).
STATION = "Where is the nearest train station?"
# `voicepod call` takes a reply as over after this much silence. Generous: on a loaded CPU the next sentence can
# take many seconds. (The tests that drive the caller themselves ask the server instead: /health's "replying".)
QUIET_S = 15.0
FINAL = {"COMPLETED", "CANCELLED", "FAILED"}


@pytest.fixture(scope="module")
def server():
    handlers = registry.handlers(REPO)
    with LocalServer(handlers, ready_timeout_s=300) as srv:
        yield srv


@pytest.fixture(scope="module")
def phone(server):
    with PhoneServer(server.base_url, PHONE_ARGS) as srv:
        yield srv


@pytest.fixture(scope="module")
def whisper():
    return load_whisper()


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def hear(whisper, mulaw: bytes) -> str:
    samples = resample(mulaw_decode(mulaw), MULAW_RATE, 16000)
    return " ".join(segment.text for segment in whisper.transcribe(samples)[0])


async def job_statuses(server, record: dict) -> dict[str, list[str]]:
    statuses = {}
    for stage, ids in record["jobs"].items():
        endpoint = server.endpoint(stage)
        statuses[stage] = [(await endpoint.job(job_id).status())["status"] for job_id in ids]
        await endpoint.aclose()
    return statuses


async def after_greeting(caller: SimulatedCaller) -> int:
    """Wait for the greeting to play out; returns how many bytes of it were heard."""
    await caller.wait_for_audio(0, 120)
    await caller.wait_until_quiet(3.0, 120)
    return len(caller.heard)


async def test_a_spoken_question_gets_a_reply_that_starts_while_the_llm_writes(server, phone, whisper):
    async with SimulatedCaller(phone.media_url) as caller:
        await caller.say(spoken_mulaw(TEA))
        latency = await caller.wait_for_audio(caller.speech_ended_at, 180)
        await phone.reply_over(300)
    record = phone.record(caller.call_sid)
    assert record["greeting"] is None and record["end_reason"] == "stop"
    [turn] = record["turns"]
    assert wer(TEA, turn["user"]) <= 0.3  # telephone audio: Whisper may miss a word
    assert not turn["interrupted"] and turn["error"] is None and turn["assistant"]
    # Every sentence's mark came back, so all of the reply counts as heard; and the caller heard it.
    assert words(turn["assistant"]) == words(turn["reply"])[:len(words(turn["assistant"]))]
    assert heard_share(hear(whisper, bytes(caller.heard)), turn["assistant"]) >= 0.8
    sentences = len(turn["jobs"]["tts"])
    assert caller.marks == [f"1:{i}" for i in range(sentences)]
    # The first reply audio went out before the LLM job had finished.
    assert sentences >= 2 and turn["latency"]["first_audio_s"] < turn["latency"]["llm_done_s"]
    assert 0 < latency and turn["latency"]["voice_to_voice_s"] > 0
    assert set(sum((await job_statuses(server, turn)).values(), [])) == {"COMPLETED"}


async def test_barge_in_clears_the_line_cancels_the_jobs_and_keeps_only_what_played(server, phone, whisper):
    async with SimulatedCaller(phone.media_url) as caller:
        # The LLM still writes when the caller cuts in.
        await caller.say(spoken_mulaw(TEA))
        await caller.wait_for_audio(caller.speech_ended_at, 180)
        await caller.say(spoken_mulaw(STATION))
        assert len(caller.clears) == 1
        # The second turn's reply starts; hanging up now cuts it short too.
        await caller.wait_for_audio(caller.speech_ended_at, 180)
    record = phone.record(caller.call_sid)
    first, second = record["turns"]
    assert first["interrupted"] and len(words(first["assistant"])) < len(words(first["reply"]))
    assert words(first["assistant"]) == words(first["reply"])[:len(words(first["assistant"]))]
    statuses = await job_statuses(server, first)
    assert statuses["llm"] == ["CANCELLED"]
    assert set(statuses["tts"]) <= {"COMPLETED", "CANCELLED"}
    assert wer(STATION, second["user"]) <= 0.3 and second["interrupted"]
    # Hung up mid-reply: nothing of the second turn is left running.
    assert set(sum((await job_statuses(server, second)).values(), [])) <= FINAL - {"FAILED"}
    assert phone.active_calls() == 0


async def test_two_calls_at_once_are_greeted_and_keep_to_themselves(server, whisper):
    questions = ["What is the capital of France?", "Good morning, how are you today?"]

    async def one_call(phone: PhoneServer, question: str) -> tuple[SimulatedCaller, int]:
        async with SimulatedCaller(phone.media_url) as caller:
            greeting_end = await after_greeting(caller)
            await caller.say(spoken_mulaw(question))
            await caller.wait_for_audio(caller.speech_ended_at, 240)
            await phone.reply_over(300)
        return caller, greeting_end

    with PhoneServer(server.base_url, ["--greeting", GREETING]) as phone:
        calls = await asyncio.gather(*(one_call(phone, q) for q in questions))
        records = [phone.record(caller.call_sid) for caller, _ in calls]
    for question, other, record in zip(questions, questions[::-1], records, strict=True):
        assert wer(question, record["turns"][0]["user"]) <= 0.3 < wer(other, record["turns"][0]["user"])
    for (caller, greeting_end), record in zip(calls, records, strict=True):
        [turn] = record["turns"]
        assert record["stream_sid"] == caller.stream_sid and not turn["interrupted"]
        assert record["greeting"] == {"text": GREETING, "played": True} and caller.marks[0] == "0:0"
        assert "hello" in hear(whisper, bytes(caller.heard[:greeting_end])).lower()
        assert heard_share(hear(whisper, bytes(caller.heard[greeting_end:])), turn["assistant"]) >= 0.8


@pytest.mark.parametrize("ending", ["dropped", "binary_frame"])
async def test_a_call_lost_mid_reply_leaves_no_job_running(server, phone, ending):
    # This caller never echoes marks: none of the reply counts as heard.
    caller = SimulatedCaller(phone.media_url, echo_marks=False)
    await caller.connect()
    await caller.say(spoken_mulaw(DOGS))
    await caller.wait_for_audio(caller.speech_ended_at, 180)
    if ending == "dropped":
        await caller.drop()
    else:
        await caller.send_raw(b"\x00" * 100)
        await asyncio.wait_for(caller.closed.wait(), 30)
        assert caller.close_code == 1003
        await caller.hang_up()
    record = phone.record(caller.call_sid)
    assert record["end_reason"].startswith("disconnected" if ending == "dropped" else "binary_frame")
    [turn] = record["turns"]
    assert turn["interrupted"] and turn["assistant"] == "" and turn["reply"]
    statuses = await job_statuses(server, turn)
    assert set(sum(statuses.values(), [])) <= {"COMPLETED", "CANCELLED"}, (statuses, turn["jobs"], phone.logs()[-3000:])
    assert phone.active_calls() == 0


async def test_a_failing_llm_gets_a_spoken_apology_and_a_long_turn_is_cut(server, whisper):
    # max_tokens beyond the worker's cap: the LLM job fails on every turn.
    args = ["--greeting", "", "--max-tokens", "1000000", "--max-utterance", "2"]
    with PhoneServer(server.base_url, args) as phone:
        async with SimulatedCaller(phone.media_url) as caller:
            await caller.say(spoken_mulaw("What is the capital of France and what is the capital of Germany?"))
            await caller.wait_for_audio(caller.speech_ended_at - 3, 180)
            await phone.reply_over(180)
        record = phone.record(caller.call_sid)
    [turn] = record["turns"]  # the rest of the long question made no second turn
    assert turn["cut"] and "capital" in turn["user"].lower() and "germany" not in turn["user"].lower()
    assert turn["error"] == "invalid_input"
    assert turn["assistant"] == APOLOGY
    assert "sorry" in hear(whisper, bytes(caller.heard)).lower()
    assert set(sum((await job_statuses(server, turn)).values(), [])) <= {"COMPLETED", "FAILED"}


async def test_the_agent_keeps_in_its_history_only_the_sentences_said_to_have_played(server):
    agent = VoiceAgent(server.endpoint("stt"), server.endpoint("llm"), server.endpoint("tts"),
                       system_prompt="Answer in four or five sentences.", audio_format="mulaw",
                       sample_rate=MULAW_RATE, llm_options={"temperature": 0, "max_tokens": 60},
                       confirm_playback=True)
    reply = agent.respond(spoken_mulaw(TEA), audio_format="mulaw", sample_rate=MULAW_RATE)
    events = [e async for e in reply]
    sentences = list({e.sentence: e.text for e in events if isinstance(e, Audio)}.values())
    assert len(sentences) >= 2 and isinstance(events[-1], Done) and not events[-1].interrupted
    # Sent in full: until the player says otherwise, the whole reply stands.
    assert agent.history[-1] == {"role": "assistant", "content": " ".join(sentences)}
    reply.played(0)
    await reply.interrupt()  # the caller cut in while the second sentence played
    assert agent.history[-1] == {"role": "assistant", "content": sentences[0]}
    assert [m["role"] for m in agent.history] == ["user", "assistant"]


def test_the_call_command_asks_and_writes_what_it_heard(phone, tmp_path, whisper):
    question = tmp_path / "question.wav"
    question.write_bytes(espeak_wav("What is the capital of France?"))
    out = tmp_path / "reply.wav"
    result = subprocess.run(
        [sys.executable, "-m", "voicepod.cli", "call", phone.media_url, str(question), "--out", str(out),
         "--quiet", str(QUIET_S), "--timeout", "300"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "latency from the end of speech to the first reply audio" in result.stdout
    call_sid = re.search(r"call (CA[0-9a-f]{32}) connected", result.stderr).group(1)
    [turn] = phone.record(call_sid)["turns"]
    assert wer("What is the capital of France?", turn["user"]) <= 0.3
    samples, rate = read_wav(out.read_bytes())
    assert rate == MULAW_RATE
    heard = " ".join(s.text for s in whisper.transcribe(resample(samples, rate, 16000))[0])
    assert heard_share(heard, turn["assistant"]) >= 0.8
