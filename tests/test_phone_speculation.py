"""Speculative turns on a call (voicepod.phone.turn_taking) with the silence turn detector: a simulated caller speaks
espeak-ng questions in real time to ``voicepod phone`` processes, with speculation on and off, over real workers
under serve-local.

Behaviour, not timing: which transcript a turn used, which jobs were cancelled, what the record says, and that
speculation changes nothing the caller hears (temperature 0)."""

from __future__ import annotations

import pytest
from voicepod import registry
from voicepod.agent import Done, VoiceAgent
from voicepod.audio import MULAW_RATE
from voicepod.local import LocalServer

from .conftest import REPO
from .phone_util import PhoneServer, ask, spoken_mulaw, voiced
from .speech import wer
from .test_cli_errors import one_line, voicepod
from .test_phone import job_statuses

# The silence detector: these tests rely on its fixed end-of-turn silence (the smart one is tests/test_phone_turns.py).
ARGS = ["--greeting", "", "--temperature", "0", "--turn-detector", "silence"]
TEA = "How do I make a cup of tea?"
FIRST, SECOND = "What is the capital of France?", "And of Germany?"
SILENCE = b"\xff"


@pytest.fixture(scope="module")
def server():
    with LocalServer(registry.handlers(REPO), ready_timeout_s=300) as srv:
        yield srv


@pytest.fixture(scope="module")
def speculating(server):
    with PhoneServer(server.base_url, [*ARGS, "--speculate"]) as srv:
        yield srv


@pytest.fixture(scope="module")
def not_speculating(server):
    with PhoneServer(server.base_url, [*ARGS, "--no-speculate"]) as srv:
        yield srv



async def test_a_turn_with_no_speech_after_its_pause_is_the_speculation_and_is_heard_as_without_it(
        server, speculating, not_speculating):
    on = await ask(speculating, spoken_mulaw(TEA))
    off = await ask(not_speculating, spoken_mulaw(TEA))
    [turn], [plain] = on["turns"], off["turns"]
    assert turn["speculated"] and not plain["speculated"]
    # The record says what ended each turn: the fixed silence.
    assert turn["end_of_turn"] == plain["end_of_turn"] == {"by": "silence", "silence_s": 0.55, "probability": None,
                                                           "text": None, "continued": 0}
    assert on["cancelled_speculations"] == [] == off["cancelled_speculations"]
    # One STT job, submitted before the end of the turn was detected: the transcript came from the pause.
    assert len(turn["jobs"]["stt"]) == 1 and turn["latency"]["stt_started_s"] < 0
    assert plain["latency"]["stt_started_s"] >= 0
    assert wer(TEA, turn["user"]) <= 0.3
    # Nothing the caller hears changes: the same transcript and, at temperature 0, the same reply.
    assert (turn["user"], turn["reply"]) == (plain["user"], plain["reply"]) and turn["reply"]
    assert turn["assistant"] == plain["assistant"] and turn["assistant"]
    assert set(sum((await job_statuses(server, turn)).values(), [])) == {"COMPLETED"}


async def test_a_caller_who_speaks_again_after_a_pause_cancels_the_speculation_and_is_heard_whole(
        server, speculating):
    # A pause longer than the speculation's (0.2 s), shorter than the end of turn's (0.55 s), then more words.
    audio = voiced(spoken_mulaw(FIRST)) + SILENCE * int(MULAW_RATE * 0.35) + spoken_mulaw(SECOND)
    record = await ask(speculating, audio)
    [turn] = record["turns"]  # one turn, not two
    heard = turn["user"].lower()
    assert "capital of france" in heard and "germany" in heard
    [cancelled] = record["cancelled_speculations"]
    assert cancelled["turn"] == 1 and cancelled["jobs"]["stt"]
    # The speculative jobs were cancelled on their endpoints; the turn's own (from the last pause) ran.
    assert set(sum((await job_statuses(server, cancelled)).values(), [])) == {"CANCELLED"}
    assert not set(cancelled["jobs"]["stt"]) & set(turn["jobs"]["stt"])
    assert turn["speculated"] and turn["reply"]
    assert set(sum((await job_statuses(server, turn)).values(), [])) == {"COMPLETED"}


async def test_a_retracted_turn_leaves_the_history_as_it_was(server):
    before = [{"role": "user", "content": "Hello."}, {"role": "assistant", "content": "Hello! How can I help?"}]
    agent = VoiceAgent(server.endpoint("stt"), server.endpoint("llm"), server.endpoint("tts"),
                       audio_format="mulaw", sample_rate=MULAW_RATE, llm_options={"temperature": 0},
                       history=before, confirm_playback=True)
    reply = agent.respond(spoken_mulaw(TEA), audio_format="mulaw", sample_rate=MULAW_RATE)
    events = [e async for e in reply]
    assert isinstance(events[-1], Done) and agent.history[:2] == before and len(agent.history) == 4
    reply.retract()
    assert agent.history == before


def test_a_pause_not_shorter_than_the_end_of_turn_is_refused_in_one_line():
    code, err = voicepod("phone", "--local", "--turn-detector", "silence", "--pause", "0.6", cwd=REPO)
    assert code == 2 and "--pause must be 0 (no speculation) or shorter than --end-silence (0.55 s)" in one_line(err)
