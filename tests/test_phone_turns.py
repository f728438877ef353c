"""The smart turn detector on a call (``voicepod phone --turn-detector smart``, the default): a simulated Twilio caller
says utterances of the Piper voice's set (``benchmarks.utterances``: the turn model reads prosody, which espeak-ng's
voice lacks) in real time, over real workers under serve-local and the baked Smart Turn model.

Behaviour, not timing: what ended each turn, how many turns a paused utterance made, whether a reply was cleared,
cut, resumed or interrupted. One serve-local for the module, which holds every job QUEUE_DELAY_S in its queue: a
reply then comes well after its turn's end (three jobs in a row) and the words well after the pause, so that which
comes first does not hang on how loaded the machine is. Each test is a call or two.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from voicepod import registry
from voicepod.local import LocalServer
from voicepod.phone.caller import SimulatedCaller

from benchmarks.utterances import COMPLETE, SpokenUtterance, Utterance, spoken_set

from .conftest import REPO
from .phone_util import PhoneServer, ask
from .test_phone import job_statuses, words

pytestmark = pytest.mark.slow

QUEUE_DELAY_S = 0.5
# The longest wait well above what a loaded CPU takes to transcribe a turn after the queue's delay (the smart
# detector waits for the words once the model says done): a turn that ends before it ended by the detector's
# decision, not by running out of time.
ARGS = ["--greeting", "", "--temperature", "0", "--max-silence", "3"]
# A reply of several sentences, to talk over.
TALKATIVE = ["--system-prompt", "Answer in four or five sentences.", "--max-tokens", "60"]
TEA = "How do I make a cup of tea?"


@pytest.fixture(scope="module")
def server():
    with LocalServer(registry.handlers(REPO), ready_timeout_s=300,
                     extra_args=["--queue-delay", str(QUEUE_DELAY_S)]) as srv:
        yield srv


@pytest.fixture(scope="module")
def smart(server):
    with PhoneServer(server.base_url, ARGS) as srv:
        yield srv


@pytest.fixture(scope="module")
def talker(server):
    with PhoneServer(server.base_url, [*ARGS, *TALKATIVE]) as srv:
        yield srv


@pytest.fixture(scope="module")
def clips():
    return {clip.utterance.text: clip for clip in spoken_set()}


@pytest.fixture(scope="module")
def tea():
    [clip] = spoken_set((Utterance(COMPLETE, TEA),))
    return clip.mulaw()



async def over_the_reply(phone: PhoneServer, question: bytes, interjection: bytes,
                         backchannel: bool) -> tuple[SimulatedCaller, dict]:
    """Ask ``question``; 0.5 s into the reply's audio say ``interjection``; wait until the call is quiet."""
    async with SimulatedCaller(phone.media_url) as caller:
        await caller.say(question)
        await caller.wait_for_audio(caller.speech_ended_at, 180)
        await asyncio.sleep(0.5)
        assert caller.playing, "the reply was over before the interjection: too short to talk over"
        await caller.say(interjection)
        # A backchannel said as the reply ended would leave nothing to cut: the reply must outlast it.
        assert caller.playing or caller.clears or not backchannel, "the reply ended during the backchannel"
        await asyncio.sleep(3.0)  # the words come back; a cut reply resumes
        await phone.reply_over(300)
        await caller.wait_until_quiet(1.0, 120)
    return caller, phone.record(caller.call_sid)


async def test_a_finished_question_ends_when_the_model_and_the_words_say_so(smart, clips):
    record = await ask(smart, clips["What is the capital of France?"].mulaw())
    [turn] = record["turns"]
    end = turn["end_of_turn"]
    # Ended by the decision, not the silence: with speculation, the turn ends as soon as the transcript is in (its
    # words can only keep it open), so it waited less than the silence detector's 0.55 s, or no longer than the
    # transcript took.
    assert end["by"] == "smart" and end["probability"] > 0.5 and end["text"].startswith("finished")
    assert end["silence_s"] < 0.55 or turn["latency"]["transcript_s"] > -0.05
    assert end["silence_s"] == turn["latency"]["end_silence_s"] < 3 and end["continued"] == 0
    assert "capital of france" in turn["user"].lower() and turn["reply"]


async def test_a_pause_the_model_hears_as_unfinished_is_waited_out_and_one_turn(server, smart, clips):
    # "I'd like to um ... cancel my subscription.": Smart Turn hears the "um" (p 0.07 at the pause).
    record = await ask(smart, clips["I'd like to um cancel my subscription."].mulaw())
    [turn] = record["turns"]
    assert {"cancel", "subscription"} <= set(words(turn["user"]))
    assert turn["end_of_turn"]["by"] == "smart" and turn["end_of_turn"]["continued"] == 0
    # The speculation at the first pause was dropped when the caller went on; the turn is the whole utterance.
    [dropped] = record["cancelled_speculations"]
    assert "continued" not in dropped
    assert set(sum((await job_statuses(server, turn)).values(), [])) == {"COMPLETED"}


def longer_pause(clip: SpokenUtterance, seconds: float) -> bytes:
    """``clip`` (an unfinished utterance) with its pause ``seconds`` long, as mu-law."""
    start, end = clip.pause_s
    cut = round(start * clip.rate)
    silence = np.zeros(round((seconds - (end - start)) * clip.rate), dtype=np.float32)
    samples = np.concatenate([clip.samples[:cut], silence, clip.samples[cut:]])
    return SpokenUtterance(clip.utterance, samples, clip.rate, (start, start + seconds)).mulaw()


async def test_a_turn_ended_too_soon_is_taken_back_when_the_caller_goes_on(server, smart, clips):
    # "I need a taxi ... to the airport at six.": the words before the pause are a whole request, and the model
    # calls them done (p 0.96): the turn ends there, once its transcript is in (about 1.3 s after the last word
    # with the queue's delay on a quiet machine; a loaded one has until the caller goes on). The caller goes on
    # 2.4 s after it, before its reply can be heard (two more delayed jobs after the transcript, so never before
    # 2.3 s, and held while the caller's voice is heard): that turn is taken back and the rest joins it.
    record = await ask(smart, longer_pause(clips["I need a taxi to the airport at six."], 2.4))
    [turn] = record["turns"]
    assert {"taxi", "airport"} <= set(words(turn["user"]))
    assert turn["end_of_turn"]["continued"] == 1 and turn["end_of_turn"]["by"] == "smart"
    [taken_back] = [c for c in record["cancelled_speculations"] if c.get("continued")]
    assert taken_back["jobs"]["stt"] and not set(taken_back["jobs"]["stt"]) & set(turn["jobs"]["stt"])
    statuses = set(sum((await job_statuses(server, taken_back)).values(), []))
    assert statuses <= {"COMPLETED", "CANCELLED"} and "CANCELLED" in statuses  # what ran after its words stopped
    assert turn["assistant"] and not turn["interrupted"]


async def test_a_backchannel_over_a_reply_leaves_it_playing(talker, clips, tea):
    caller, record = await over_the_reply(talker, tea, clips["Yeah."].mulaw(), backchannel=True)
    [turn] = record["turns"]  # "yeah" made no turn
    [interjection] = record["interjections"]
    assert interjection["verdict"] == "backchannel" and not interjection["cut"], interjection
    assert caller.clears == [] and not turn["interrupted"]
    # All of the reply played: every sentence's mark came back.
    assert turn["assistant"] and words(turn["assistant"]) == words(turn["reply"])


async def test_a_longer_backchannel_cuts_the_reply_and_it_resumes_from_the_cut_sentence(talker, clips, tea):
    # "I see." lasts longer than the cut length (0.45 s of speech): the reply is cut before its words are back;
    # they are a backchannel, so it goes on, from the start of the sentence that was cut.
    caller, record = await over_the_reply(talker, tea, clips["I see."].mulaw(), backchannel=True)
    [turn] = record["turns"]
    [interjection] = record["interjections"]
    assert interjection["verdict"] == "backchannel" and interjection["cut"] and interjection["resumed"], interjection
    assert len(caller.clears) == 1 and not turn["interrupted"]
    assert turn["assistant"] and words(turn["assistant"]) == words(turn["reply"])
    # The resumed sentences' marks carry the resume's number; the caller echoed them as they played.
    assert any(name.startswith("1:") and name.endswith(".1") for name in caller.marks)


async def test_a_real_interruption_cuts_the_reply_and_is_the_next_turn(server, talker, clips, tea):
    caller, record = await over_the_reply(talker, tea, clips["Wait, stop, I have another question."].mulaw(),
                                          backchannel=False)
    first, second = record["turns"]
    [interjection] = record["interjections"]
    assert interjection["verdict"] == "interruption" and interjection["cut"] and not interjection["resumed"]
    assert len(caller.clears) == 1 and first["interrupted"]
    assert len(words(first["assistant"])) < len(words(first["reply"]))
    assert {"stop", "question"} <= set(words(second["user"]))
    statuses = await job_statuses(server, first)
    assert "CANCELLED" in statuses["llm"] + statuses["tts"]
