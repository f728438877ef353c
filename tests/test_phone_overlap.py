"""The call's moving parts when the caller talks over a reply, driven step by step with scripted endpoints: the
races that real-time calls (tests/test_phone_turns.py) hit only by chance."""

from __future__ import annotations

import asyncio
import contextlib
import json

from voicepod.phone import twilio
from voicepod.phone.barge_in import BargeInSettings, Overlap
from voicepod.phone.call import Call, CallSettings
from voicepod.phone.playback import Player
from voicepod.phone.turn_taking import Begin
from voicepod.protocol import TranscriptDone


def twilio_line() -> twilio.TwilioLine:
    line = twilio.TwilioLine()
    line.parse(twilio.twilio_start("MZ1", "CA1"))
    return line


class ScriptedSTT:
    """An STT endpoint whose every job transcribes to ``text``."""

    def __init__(self, text: str):
        self.text = text

    @contextlib.asynccontextmanager
    async def submit(self, payload: object):
        text = self.text

        class Job:
            id = "stt-job"

            async def chunks(self):
                yield TranscriptDone.model_construct(text=text)

        yield Job()


class Reply:
    """A reply with nothing to say, as ``VoiceAgent.respond`` returns it."""

    job_ids: dict[str, list[str]] = {}

    def __aiter__(self):
        return self

    async def __anext__(self):
        raise StopAsyncIteration

    async def aclose(self) -> None:
        pass

    def retract(self) -> None:
        pass


class Agent:
    def __init__(self, text: str = ""):
        self.stt = ScriptedSTT(text)
        self.replies = 0

    def stt_input(self, audio: bytes, audio_format: str, sample_rate: int) -> dict[str, object]:
        return {"audio": len(audio)}

    def respond(self, audio: bytes, **options: object) -> Reply:
        self.replies += 1
        return Reply()


def test_a_frame_sent_while_a_cut_clears_the_line_is_not_cleared_twice():
    async def scenario():
        sent: list[str | bytes] = []
        sending = asyncio.Event()
        go_on = asyncio.Event()

        async def send(frame: str | bytes) -> None:
            if len(sent) == 1:  # the second frame takes its time: the socket is slow
                sending.set()
                await go_on.wait()
            sent.append(frame)

        player = Player(twilio_line(), send)
        playback = player.current = player.playback(1)
        playback.release()
        playing = asyncio.create_task(playback.play(0, "One.", b"\x01" * 320))  # two frames
        await sending.wait()
        pausing = asyncio.create_task(playback.pause())  # the caller talks over it mid-send: clear
        await asyncio.sleep(0.01)
        go_on.set()
        await asyncio.gather(playing, pausing)
        await player.clear()  # then a barge-in: the cut's clear was the line's last word, nothing to clear again
        events = [json.loads(frame)["event"] for frame in sent]
        assert events.count("clear") == 1, events

    asyncio.run(scenario())


def test_an_interruption_decided_before_the_caller_goes_on_still_reaches_the_call():
    async def scenario():
        stopping, stopped = asyncio.Event(), asyncio.Event()
        verdicts: list[tuple[bool, bytes | None]] = []

        async def stop() -> None:  # the call's barge-in: a clear, then the reply's cancels over HTTP
            stopping.set()
            await stopped.wait()

        async def verdict(backchannel: bool, pause: bytes | None) -> None:
            verdicts.append((backchannel, pause))

        player = Player(twilio_line(), lambda frame: asyncio.sleep(0))
        overlap = Overlap(Agent("Wait, stop, I have another question."), twilio_line(), player.playback(1),
                          BargeInSettings(), stop, verdict, {})
        overlap.paused(b"\xff" * 800)  # the caller pauses: their words are an interruption
        await asyncio.wait_for(stopping.wait(), 5)
        overlap.resumed()  # and goes on talking while the reply is being stopped
        stopped.set()
        await asyncio.sleep(0.05)
        assert verdicts == [(False, b"\xff" * 800)]
        await overlap.close()

    asyncio.run(scenario())


def test_a_turn_that_ends_while_an_overlaps_verdict_is_on_its_way_begins_once():
    class DecidedOverlap:
        decided = True  # its verdict is on its way: interrupting it does nothing

        async def interrupt(self, reason: str) -> None:
            pass

        async def close(self) -> None:
            pass

    async def scenario():
        agent = Agent()
        call = Call(agent, twilio_line(), lambda frame: asyncio.sleep(0), CallSettings(turn_detector="silence"))
        call._overlap = DecidedOverlap()  # type: ignore[assignment]
        await asyncio.wait_for(call._act(Begin(b"\xff" * 800)), 5)  # before: recursion without end
        record = await call.end("stop")
        assert agent.replies == 1 and len(record.turns) == 1 and call._overlap is None

    asyncio.run(scenario())
