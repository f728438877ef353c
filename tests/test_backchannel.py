"""The backchannel classifier (voicepod.phone.backchannel) on transcripts of what a caller says over a reply, as
Whisper writes them on 8 kHz phone audio of the Piper voice (benchmarks/turn_model.py measured these)."""

from __future__ import annotations

import pytest
from voicepod.phone.backchannel import classify_interjection


@pytest.mark.parametrize("text", [
    "Uh-huh.", "Mm-hmm.", "Okay.", "okay", "Right.", "Yeah.", "Yes.", "Sure.", "I see.", "Got it.", "Alright.",
    "All right", "Thank you.", "Oh, okay.", "Yeah, yeah.",
    "Wow.", "MMM.", "MMO.", "Hmm.", "Mm.",  # how Whisper wrote "uh-huh" and "mm-hmm" on the phone line
    "", "(coughs)", "[BLANK_AUDIO]",  # a cough: no words, or an annotation
])
def test_backchannels_leave_the_reply_playing(text):
    verdict = classify_interjection(text)
    assert verdict.backchannel, verdict


@pytest.mark.parametrize("text", [
    "Wait, stop, I have another question.", "Wait", "Hold on, that's not what I asked.", "Hold",
    "No, no, I meant tomorrow.", "No.", "Sorry, can you repeat that?", "Actually, I want to change my order.",
    "Stop, please.", "Excuse me, that's wrong.",
    "Okay, but what about Sunday?",  # starts as a backchannel
    "Yeah, I need a taxi.",  # an acknowledgement, then a request
    "Paris",
])
def test_interruptions_cut_the_reply(text):
    verdict = classify_interjection(text)
    assert not verdict.backchannel, verdict


def test_a_word_that_asks_to_stop_is_surer_than_other_words():
    assert classify_interjection("Wait").confidence > classify_interjection("Paris").confidence
    assert "wait" in classify_interjection("Okay wait").reason
