"""VoiceAgent's sequencing, with endpoint doubles whose timing we control: audio in sentence order although
later sentences finish synthesis first, and barge-in cancels what is in flight. (The real workers are
exercised end to end in test_agent.py; here only the agent is under test.)"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import time

from voicepod.agent import VOICE_MAX_TOKENS, Audio, Done, SentenceEnd, VoiceAgent
from voicepod.endpoint import Endpoint

_ids = itertools.count()


class FakeJob:
    def __init__(self, chunks, delay):
        self.id = f"job-{next(_ids)}"
        self._chunks = chunks
        self._delay = delay
        self.finished = False
        self.cancelled = False

    async def chunks(self):
        from voicepod.protocol import parse_chunk

        for seq, body in enumerate(self._chunks):
            await asyncio.sleep(self._delay(seq))
            yield parse_chunk({"seq": seq, **body})
        self.finished = True

    async def cancel(self):
        self.cancelled = self.finished = True


class FakeEndpoint:
    def __init__(self, respond, submit_delay: float = 0.0):
        self.respond = respond
        self.submit_delay = submit_delay  # how long POST /run takes to answer
        self.jobs: list[FakeJob] = []
        self.submitted_at: list[float] = []
        self.payloads: list[dict] = []

    # The agent submits as with a real endpoint: the job owned by an `async with` block.
    submit = Endpoint.submit

    async def run(self, payload, policy=None):
        self.submitted_at.append(time.monotonic())
        self.payloads.append(payload)
        await asyncio.sleep(self.submit_delay)
        job = self.respond(payload)
        self.jobs.append(job)
        return job


METRICS = {"compute_s": 0.1, "load_s": 0.0}


def stt():
    done = {"type": "done", "kind": "transcript", "text": "hello", "language": "en", "language_probability": 1,
            "duration": 1, "metrics": METRICS}
    return FakeEndpoint(lambda payload: FakeJob([done], lambda seq: 0))


def llm(reply: str, pace: float = 0.01):
    def respond(payload):
        deltas = [{"type": "delta", "chunk": {"choices": [{"delta": {"content": word}}]}}
                  for word in reply.split(" ")[:1] + [" " + w for w in reply.split(" ")[1:]]]
        done = {"type": "done", "kind": "completion", "text": reply, "finish_reason": "stop",
                "usage": {"prompt_tokens": 1, "completion_tokens": len(deltas)}, "metrics": METRICS}
        return FakeJob([*deltas, done], lambda seq: pace)
    return FakeEndpoint(respond)


def tts(delay_for, submit_delay: float = 0.0):
    def respond(payload):
        text = payload["text"]
        audio = {"type": "audio", "sentence": 0, "format": "pcm16", "sample_rate": 16000}
        parts = [{**audio, "audio": base64.b64encode(f"{text}|{i};".encode()).decode()} for i in range(2)]
        done = {"type": "done", "kind": "speech", "duration": 1, "sentences": 1, "metrics": METRICS}
        return FakeJob([*parts, done], lambda seq: delay_for(text) if seq == 0 else 0.01)
    return FakeEndpoint(respond, submit_delay)


async def test_audio_comes_in_sentence_order_when_later_sentences_finish_first():
    # The first sentence takes longest to synthesize, the last the shortest.
    reply = "First one is slow. Second is faster. Third is instant."
    delays = {"First one is slow.": 0.5, "Second is faster.": 0.2, "Third is instant.": 0.0}
    speaker = tts(lambda text: delays[text])
    agent = VoiceAgent(stt(), llm(reply), speaker, first_cut_words=0)
    events, first_audio_at = [], None
    async for event in agent.respond(b"audio"):
        events.append(event)
        if isinstance(event, Audio) and first_audio_at is None:
            first_audio_at = time.monotonic()
    audio = [e for e in events if isinstance(e, Audio)]
    assert [e.data.decode() for e in audio] == [f"{s}|{i};" for s in delays for i in range(2)]
    assert [e.sentence for e in audio] == [0, 0, 1, 1, 2, 2]
    # Every sentence went to TTS before the first one's audio came back (0.5 s): the jobs ran side by side.
    assert len(speaker.submitted_at) == 3 and max(speaker.submitted_at) < first_audio_at
    assert events[-1].reply == reply


async def test_interrupt_cancels_in_flight_jobs_and_trims_history():
    reply = "One is said. Two is slow to say. Three never comes."
    speaker = tts(lambda text: 5.0 if text.startswith("Two") else 0.0)
    writer = llm(reply, pace=0.05)
    agent = VoiceAgent(stt(), writer, speaker, first_cut_words=0)
    events = []
    async for event in agent.respond(b"audio"):
        events.append(event)
        if isinstance(event, Audio) and event.sentence == 0 and len(events) > 2:
            await agent.interrupt()
    done = events[-1]
    assert isinstance(done, Done) and done.interrupted
    assert done.reply == "One is said."
    assert agent.history == [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "One is said."}]
    assert any(job.cancelled for job in speaker.jobs)


async def test_first_sentence_is_cut_early_at_a_comma():
    reply = "Well, the answer to that question, as far as I know, is forty two. Thanks."
    speaker = tts(lambda text: 0.0)
    agent = VoiceAgent(stt(), llm(reply), speaker, first_cut_words=5)
    events = [e async for e in agent.respond(b"audio")]
    spoken = list(dict.fromkeys(e.text for e in events if isinstance(e, Audio)))
    assert spoken[0] == "Well, the answer to that question,"
    assert " ".join(spoken) == reply


async def test_barge_in_during_transcription_starts_no_reply():
    writer = llm("Never said.")
    agent = VoiceAgent(stt(), writer, tts(lambda text: 0.0))
    await agent.interrupt()  # e.g. the caller spoke again before this turn's transcript was in
    events = []
    async for event in agent.respond(b"audio"):
        events.append(event)
        if len(events) == 1:
            await agent.interrupt()
    assert events[-1].interrupted and events[-1].reply == ""
    assert writer.jobs == []
    assert agent.history == [{"role": "user", "content": "hello"}]


async def test_a_job_submitted_while_interrupting_is_cancelled_once_the_endpoint_accepts_it():
    # POST /run takes 0.3 s: the barge-in lands while the first sentence's job is being submitted.
    speaker = tts(lambda text: 0.0, submit_delay=0.3)
    agent = VoiceAgent(stt(), llm("One two three. Four five six.", pace=0.01), speaker, first_cut_words=0)
    async for _event in agent.respond(b"audio"):
        if speaker.submitted_at and not speaker.jobs:
            await agent.interrupt()
    assert speaker.submitted_at and speaker.jobs == []  # the turn ended before /run answered
    await asyncio.sleep(0.5)
    assert speaker.jobs and all(job.cancelled for job in speaker.jobs)


async def test_stt_job_gets_the_fast_defaults_and_the_callers_options():
    listener = stt()
    agent = VoiceAgent(listener, llm("Fine."), tts(lambda text: 0.0), language="en",
                       stt_options={"beam_size": 1, "hotwords": "voicepod"})
    [e async for e in agent.respond(b"RIFF", audio_format="mulaw", sample_rate=8000)]
    (payload,) = listener.payloads
    assert base64.b64decode(payload.pop("audio_base64")) == b"RIFF"
    assert payload == {"beam_size": 1, "without_timestamps": True, "hotwords": "voicepod", "audio_format": "mulaw",
                       "sample_rate": 8000, "language": "en"}


async def test_asking_for_word_times_drops_the_default_that_would_conflict():
    listener = stt()
    agent = VoiceAgent(listener, llm("Fine."), tts(lambda text: 0.0), stt_options={"word_timestamps": True})
    [e async for e in agent.respond(b"RIFF")]
    assert "without_timestamps" not in listener.payloads[0] and listener.payloads[0]["word_timestamps"] is True


async def test_a_reply_that_never_ends_a_sentence_reaches_tts_within_a_few_words():
    # A base model's run-on answer: 60 words, no punctuation, written at 20 words a second (3 s in all).
    reply = " ".join(f"word{i}" for i in range(60))
    writer, speaker = llm(reply, pace=0.05), tts(lambda text: 0.0)
    agent = VoiceAgent(stt(), writer, speaker)
    events = [e async for e in agent.respond(b"audio")]
    llm_started = writer.submitted_at[0]
    first_tts = speaker.payloads[0]["text"]
    assert first_tts == " ".join(f"word{i}" for i in range(10))
    # Sent to TTS about 11 deltas in (0.55 s), long before the LLM's 3 s: not held for a full stop.
    assert speaker.submitted_at[0] - llm_started < 1.5
    assert " ".join(p["text"] for p in speaker.payloads) == reply
    assert events[-1].reply == reply


def test_voice_defaults_cap_the_reply():
    agent = VoiceAgent(stt(), llm("Fine."), tts(lambda text: 0.0))
    assert agent.llm_options["max_tokens"] == VOICE_MAX_TOKENS <= 80


async def test_each_sentence_ends_with_a_sentence_end_right_after_its_last_audio():
    # The second sentence is slow to write: the first one's end must be announced before it, not when it starts.
    reply = "One is quick. Two comes late."
    writer = llm(reply, pace=0.2)
    agent = VoiceAgent(stt(), writer, tts(lambda text: 0.0), first_cut_words=0)
    events = [e async for e in agent.respond(b"audio")]
    kinds = [(type(e).__name__, getattr(e, "sentence", None)) for e in events if isinstance(e, (Audio, SentenceEnd))]
    assert kinds == [("Audio", 0), ("Audio", 0), ("SentenceEnd", 0), ("Audio", 1), ("Audio", 1), ("SentenceEnd", 1)]
    first_end = next(e for e in events if isinstance(e, SentenceEnd))
    assert first_end.text == "One is quick." and first_end.t < events[-1].metrics.llm.finished


async def test_the_history_keeps_its_latest_messages_and_a_retracted_turn_leaves_what_the_llm_saw():
    earlier = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"m{i}"} for i in range(6)]
    writer = llm("Fine.")
    agent = VoiceAgent(stt(), writer, tts(lambda text: 0.0), history=earlier, max_history=4)
    reply = agent.respond(b"audio")
    [e async for e in reply]
    # The LLM saw the latest 4 earlier messages, then the new question.
    assert [m["content"] for m in writer.payloads[0]["messages"][1:]] == ["m2", "m3", "m4", "m5", "hello"]
    assert [m["content"] for m in agent.history] == ["m2", "m3", "m4", "m5", "hello", "Fine."]
    reply.retract()  # a speculative turn that was not the user's: what the next turn sees is as without it
    assert [m["content"] for m in agent.history] == ["m2", "m3", "m4", "m5"]
    [e async for e in agent.respond(b"audio")]
    assert [m["content"] for m in writer.payloads[1]["messages"][1:]] == ["m2", "m3", "m4", "m5", "hello"]


async def test_a_reply_interrupted_after_it_ended_keeps_only_what_played():
    agent = VoiceAgent(stt(), llm("One is said. Two is not."), tts(lambda text: 0.0), first_cut_words=0,
                       confirm_playback=True)
    reply = agent.respond(b"audio")
    events = [e async for e in reply]
    assert not events[-1].interrupted and agent.history[-1]["content"] == "One is said. Two is not."
    reply.played(0)
    await agent.interrupt()  # only replies in progress: this one has ended, the history stands
    assert agent.history[-1]["content"] == "One is said. Two is not."
    await reply.interrupt()  # the caller cut in while the second sentence played
    assert agent.history[-1] == {"role": "assistant", "content": "One is said."}
    assert reply.job_ids["tts"] == [job.id for job in agent.tts.jobs] and len(reply.job_ids["llm"]) == 1


async def test_say_speaks_in_the_agents_voice_and_remembers_only_what_played():
    speaker = tts(lambda text: 0.0)
    agent = VoiceAgent(stt(), llm("Fine."), speaker, voice="joe", audio_format="mulaw", sample_rate=8000)
    greeting = agent.say("Hello! How can I help?", remember=True)
    events = [e async for e in greeting]
    assert [type(e).__name__ for e in events] == ["Audio", "Audio", "SentenceEnd"]
    assert {(e.sentence, e.text) for e in events} == {(0, "Hello! How can I help?")}
    assert speaker.payloads == [{"text": "Hello! How can I help?", "format": "mulaw", "voice": "joe",
                                 "sample_rate": 8000}]
    assert agent.history == []  # said, but not yet heard
    greeting.played()
    assert agent.history == [{"role": "assistant", "content": "Hello! How can I help?"}]
    apology = agent.say("Sorry.")
    [e async for e in apology]
    apology.played()
    assert len(agent.history) == 1


async def test_leaving_a_speech_early_cancels_its_job():
    speaker = tts(lambda text: 5.0)  # the audio would take 5 s
    agent = VoiceAgent(stt(), llm("Fine."), speaker)
    speech = agent.say("Hello there.")
    async with asyncio.timeout(2):
        waiting = asyncio.create_task(anext(aiter(speech)))
        await asyncio.sleep(0.1)
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
    assert speaker.jobs and speaker.jobs[0].cancelled
