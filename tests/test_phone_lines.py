"""The call path's seams without a server or models: each line's serializer (frames in to caller events, audio,
marks and clears out) and turn-taking's decisions (barge-in, speculate, confirm, drop, begin)."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
from voicepod.phone import twilio
from voicepod.phone.browser import BrowserLine
from voicepod.phone.line import CallerAudio, CallStarted, Digit, Hangup, LineRefused, Played, Skipped
from voicepod.phone.turn_taking import (
    MAX_SILENCE,
    MAX_UTTERANCE,
    SMART,
    BargeIn,
    Begin,
    Confirm,
    Continue,
    Drop,
    Speculate,
    TurnTaking,
)
from voicepod.phone.vad import Pause, Resumed, SpeechStarted, Utterance

# --- Twilio -----------------------------------------------------------------------------------------------


def test_twilio_frames_become_caller_events_and_the_stream_sid_goes_on_every_frame_out():
    line = twilio.TwilioLine()
    assert line.parse(twilio.twilio_connected()) is None
    started = line.parse(twilio.twilio_start("MZ1", "CA1", {f"p{i}": str(i) for i in range(30)}))
    assert isinstance(started, CallStarted) and (started.call_sid, started.stream_sid) == ("CA1", "MZ1")
    assert len(started.custom_parameters) == 20
    assert line.parse(twilio.twilio_media("MZ1", b"\x01\xff", 2, 1, 20)) == CallerAudio(b"\x01\xff")
    assert line.parse(twilio.twilio_mark("MZ1", "1:0", 3)) == Played("1:0")
    assert line.parse(twilio.twilio_dtmf("MZ1", "7", 4)) == Digit("7")
    assert line.parse(twilio.twilio_stop("MZ1", "CA1", 5)) == Hangup()
    outbound = json.loads(line.media(b"x" * 200)[1])
    payload = base64.b64encode(b"x" * 40).decode()
    assert outbound == {"event": "media", "streamSid": "MZ1", "media": {"payload": payload}}
    assert json.loads(line.mark("2:1"))["streamSid"] == "MZ1" and json.loads(line.clear())["event"] == "clear"


@pytest.mark.parametrize(("frames", "code", "close_code"), [
    ([b"\x00binary"], "binary_frame", 1003),
    (["{not json"], "malformed_json", 1007),
    ([twilio.twilio_media("MZ1", b"\xff", 1, 1, 20)], "out_of_order", 1008),  # media before start
    ([twilio.twilio_start("MZ1", "CA1"), twilio.twilio_start("MZ1", "CA1")], "out_of_order", 1008),
    ([json.dumps({"event": "start", "start": {"streamSid": "MZ1", "callSid": "CA1",
                                              "mediaFormat": {"encoding": "audio/x-l16", "sampleRate": 16000}}})],
     "invalid_message", 1007),
    (["x" * 70_000], "frame_too_big", 1009),
])
def test_twilio_frames_that_break_the_protocol_are_refused_with_their_close_code(frames, code, close_code):
    line = twilio.TwilioLine()
    with pytest.raises(LineRefused) as refused:
        for frame in frames:
            line.parse(frame)
    assert refused.value.code == code
    assert line.closing(refused.value).code == close_code


def test_twilio_frames_that_harm_nothing_are_skipped():
    line = twilio.TwilioLine()
    line.parse(twilio.twilio_start("MZ1", "CA1"))
    assert isinstance(line.parse('{"event": "teleport"}'), Skipped)
    assert isinstance(line.parse('{"event": "media", "media": {"payload": "@@@"}}'), Skipped)
    outbound = '{"event": "media", "media": {"track": "outbound", "payload": "AAAA"}}'
    assert line.parse(outbound) is None  # only the caller's own track is heard


# --- the page ----------------------------------------------------------------------------------------------


def test_page_frames_become_caller_events_and_bad_ones_are_refused():
    line = BrowserLine(max_frame_bytes=1000)
    assert line.parse(b"\x01\x00" * 10) == CallerAudio(b"\x01\x00" * 10)
    assert line.parse('{"event": "mark", "name": "1:0"}') == Played("1:0")
    assert line.parse('{"event": "stop"}') == Hangup()
    for frame, code in ((b"\x00" * 3, "bad_audio"), (b"\x00" * 1002, "bad_audio"), ("nope", "malformed_json"),
                        ('{"event": "start"}', "invalid_message")):
        with pytest.raises(LineRefused) as refused:
            line.parse(frame)
        assert refused.value.code == code
    closing = line.closing(LineRefused("bad_audio", "an odd frame"))
    assert closing.code == 1007 and json.loads(closing.frames[0]) == {"event": "error", "message": "an odd frame"}
    assert line.media(b"\x00" * 20_000)[0] == b"\x00" * 9600  # 200 ms at 24 kHz
    assert json.loads(line.mark("3:2")) == {"event": "mark", "name": "3:2"} and json.loads(line.clear()) == {
        "event": "clear"}


# --- turn-taking -------------------------------------------------------------------------------------------


class Script:
    """A turn detector that reports the events it is given, one list per feed."""

    def __init__(self, *feeds: list[object]):
        self.feeds = list(feeds)
        self.closed = 0

    def feed(self, audio: bytes) -> list[object]:
        return self.feeds.pop(0)

    def close(self) -> None:
        self.closed += 1


def decide(speculate: bool, *feeds: list[object]) -> list[list[object]]:
    turns = TurnTaking(Script(*feeds), speculate)  # type: ignore[arg-type]
    return [turns.feed(b"") for _ in feeds]


def test_a_caller_who_says_nothing_after_the_pause_confirms_the_speculation():
    assert decide(True, [SpeechStarted()], [Pause(b"ab")], [Utterance(b"ab")]) == [
        [BargeIn()], [Speculate(b"ab")], [Confirm()]]


def test_a_caller_who_speaks_again_drops_the_speculation_and_the_whole_turn_begins_at_its_end():
    assert decide(True, [Pause(b"ab")], [Resumed()], [Pause(b"abcd")], [Utterance(b"abcd")]) == [
        [Speculate(b"ab")], [Drop()], [Speculate(b"abcd")], [Confirm()]]
    # The turn ends with other audio than the pause's (or is cut): the speculation is dropped, the turn begins.
    assert decide(True, [Pause(b"ab")], [Utterance(b"abc")]) == [[Speculate(b"ab")], [Drop(), Begin(b"abc")]]
    assert decide(True, [Pause(b"ab")], [Utterance(b"ab", cut=True)]) == [
        [Speculate(b"ab")], [Drop(), Begin(b"ab", cut=True, by=MAX_UTTERANCE)]]


def test_without_speculation_a_turn_begins_only_at_its_end():
    assert decide(False, [SpeechStarted(), Pause(b"ab")], [Resumed()], [Utterance(b"abc")]) == [
        [BargeIn()], [], [Begin(b"abc")]]


def test_the_smart_detector_ends_a_turn_at_once_and_closes_the_utterance():
    detector = Script([SpeechStarted(), Pause(b"ab")], [Utterance(b"ab")])
    turns = TurnTaking(detector, speculate=False, smart=True)  # type: ignore[arg-type]
    assert turns.feed(b"") == [BargeIn(), Speculate(b"ab")]  # smart always speculates
    assert turns.end_now() == [Confirm(SMART)] and detector.closed == 1 and turns.continuable
    assert turns.end_now() == []  # nothing left to end
    # Had the model said "not done", the detector's silence (the longest wait) would end it.
    waited = TurnTaking(Script([Pause(b"ab")], [Utterance(b"ab")]), smart=True)  # type: ignore[arg-type]
    assert [waited.feed(b""), waited.feed(b"")] == [[Speculate(b"ab")], [Confirm(MAX_SILENCE)]]


def test_a_caller_who_goes_on_after_an_early_end_continues_the_same_turn():
    detector = Script([Pause(b"ab")], [SpeechStarted()], [Pause(b"cd")], [SpeechStarted()], [Utterance(b"ef")])
    turns = TurnTaking(detector, smart=True)  # type: ignore[arg-type]
    assert turns.feed(b"") == [Speculate(b"ab")]
    assert turns.end_now() == [Confirm(SMART, continued=0)]
    # New speech before the reply was heard: the turn is taken back, and the next one starts with its audio.
    assert turns.feed(b"") == [Continue()] and not turns.continuable
    assert turns.feed(b"") == [Speculate(b"abcd")]
    assert turns.end_now() == [Confirm(SMART, continued=1)]
    assert turns.feed(b"") == [Continue()]
    assert turns.feed(b"") == [Begin(b"abcdef", by=MAX_SILENCE, continued=2)]


def test_once_an_early_ended_turns_reply_is_heard_new_speech_is_a_new_turn():
    detector = Script([Pause(b"ab")], [SpeechStarted()], [Pause(b"cd")], [SpeechStarted(), Pause(b"ef")])
    turns = TurnTaking(detector, smart=True)  # type: ignore[arg-type]
    turns.feed(b"")
    turns.end_now()
    assert turns.feed(b"") == [Continue()]
    assert turns.feed(b"") == [Speculate(b"abcd")] and turns.end_now() == [Confirm(SMART, continued=1)]
    turns.settle()
    assert turns.feed(b"") == [BargeIn(), Speculate(b"ef")]  # nothing of the turn before


def test_a_dismissed_utterance_drops_its_speculation_and_closes_the_detector():
    detector = Script([SpeechStarted(), Pause(b"ab")])
    turns = TurnTaking(detector, smart=True)  # type: ignore[arg-type]
    turns.feed(b"")
    assert turns.dismiss() == [Drop()] and detector.closed == 1
    assert turns.end_now() == []  # nothing to end: the speculation is gone


# --- playback: a cut that may be resumed, a hold ------------------------------------------------------------


def recording_player():
    """A Twilio line's player whose frames go to a list: ``(player, sent)``."""
    from voicepod.phone.playback import Player

    sent: list[str | bytes] = []

    async def send(frame: str | bytes) -> None:
        sent.append(frame)

    line = twilio.TwilioLine()
    line.parse(twilio.twilio_start("MZ1", "CA1"))
    return Player(line, send), sent


def test_a_paused_playback_clears_the_line_keeps_what_comes_and_resumes_from_its_cut_sentence():
    async def scenario():
        player, sent = recording_player()
        playback = player.current = player.playback(1)
        playback.release()
        played: list[int] = []
        first, second, third = b"\x01" * 320, b"\x02" * 320, b"\x03" * 320  # two 20 ms frames each
        await playback.play(0, "One.", first, played.append)
        await playback.mark(0, "One.", played.append)
        await playback.play(1, "Two.", second, played.append)
        await playback.mark(1, "Two.", played.append)
        player.marked("1:0")  # the first sentence played out; the second is on the line
        await playback.pause()
        events = [json.loads(frame)["event"] for frame in sent]
        assert events == ["media", "media", "mark", "media", "media", "mark", "clear"]
        player.marked("1:1")  # the clear gave its mark back: it did not play
        await playback.play(2, "Three.", third, played.append)  # the reply goes on while it is cut: kept
        await playback.mark(2, "Three.", played.append)
        assert len(sent) == 7 and playback.playing
        await playback.resume()
        again = [json.loads(frame) for frame in sent[7:]]
        # From the start of the cut sentence, then what came meanwhile; marks named for the resume.
        assert [base64.b64decode(f["media"]["payload"])[:1] for f in again if f["event"] == "media"] == [
            b"\x02", b"\x02", b"\x03", b"\x03"]
        assert [f["mark"]["name"] for f in again if f["event"] == "mark"] == ["1:1.1", "1:2.1"]
        player.marked("1:1")  # a stale echo of the first take: still nothing
        player.marked("1:1.1")
        player.marked("1:2.1")
        assert played == [0, 1, 2] and playback.heard() == "One. Two. Three." and not playback.playing

    asyncio.run(scenario())


def test_a_held_playback_sends_its_first_audio_only_once_let_go():
    async def scenario():
        player, sent = recording_player()
        playback = player.playback(1)
        playback.release()
        playback.hold(True)
        playing = asyncio.create_task(playback.play(0, "One.", b"\x01" * 160))
        await asyncio.sleep(0.05)
        assert sent == [] and playback.held_ready
        playback.hold(False)
        await playing
        assert len(sent) == 1 and playback.sent_audio
        playback.hold(True)  # once audio went out, a hold changes nothing
        await asyncio.wait_for(playback.play(0, "One.", b"\x01" * 160), 1)
        assert len(sent) == 2

    asyncio.run(scenario())


def test_speech_over_a_reply_cuts_it_at_its_length_unless_its_words_are_a_backchannel():
    from voicepod.phone.backchannel import classify_interjection
    from voicepod.phone.barge_in import BargeInSettings, should_cut

    settings = BargeInSettings(cut_s=0.45, backchannel_max_s=0.8)
    assert not should_cut(0.3, None, settings) and should_cut(0.45, None, settings)
    yeah, wait = classify_interjection("Yeah."), classify_interjection("Wait.")
    assert not should_cut(0.6, yeah, settings) and should_cut(0.8, yeah, settings)
    assert should_cut(0.45, wait, settings)
