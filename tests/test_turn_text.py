"""The text evidence for an end of turn (voicepod.phone.turn_text) and the decision that combines it with the turn
model's probability (voicepod.phone.end_of_turn), on transcripts as Whisper writes them."""

from __future__ import annotations

import pytest
from voicepod.phone.end_of_turn import EndOfTurnSettings, decide
from voicepod.phone.turn_text import TextEvidence, read_transcript, words


@pytest.mark.parametrize("text", [
    "I'd like to book a table for",  # preposition
    "Can you tell me the",  # article
    "Could you send the invoice to my",  # possessive
    "I want to order a pizza and",  # conjunction
    "I was wondering if.",  # Whisper's full stop after a conjunction
    "I'm calling because",
    "I need to",  # infinitive to
    "I'd like to um",  # filler
    "My account number is",  # copula
    "I want to order a pizza and...",  # Whisper's ellipsis where speech trails off
    "I'd like to, um...",
    "My account number...",  # only the ellipsis says so
    "So the thing is —",
])
def test_unfinished_utterances_read_as_unfinished_with_confidence(text):
    evidence = read_transcript(text)
    assert evidence.unfinished, evidence
    assert evidence.confidence >= EndOfTurnSettings().text_veto, evidence


@pytest.mark.parametrize("text", [
    "What time do you close today?",
    "Can you book me a table for 4 at 7?",
    "I'd like to cancel my order.",
    "I need a taxi.",
    "Yes, I can.",  # an auxiliary after its subject: a short answer
    "That's what it is.",
    "Do you know where the nearest pharmacy is?",  # a wh-clause ending on its verb
    "I'd like to come in May.",
    "Thank you",
])
def test_finished_sentences_do_not_read_as_unfinished(text):
    evidence = read_transcript(text)
    assert not evidence.unfinished, evidence


@pytest.mark.parametrize("text", ["Who should I talk to?", "Where are you from?", "What's the weather like in?",
                                  "Can you tell me who I should talk to?", "I don't know what to"])
def test_a_question_ending_on_a_preposition_is_only_weak_evidence(text):
    # Stranded prepositions end whole questions; too weak to hold the turn open against the model.
    evidence = read_transcript(text)
    assert evidence.unfinished and evidence.confidence < EndOfTurnSettings().text_veto, evidence


def test_no_words_is_no_evidence():
    for text in ("", "  ", "[BLANK_AUDIO]", "(coughs)", "..."):
        assert read_transcript(text) == TextEvidence(False, 0.0, "no words")


def test_words_drop_punctuation_and_annotations_and_keep_contractions():
    assert words("I'd like, uh-huh... [BLANK_AUDIO] (coughs) *sighs* Paris’s") == ["i'd", "like", "uh-huh", "paris's"]


def test_the_model_decides_and_the_text_can_only_hold_the_turn_open():
    unfinished = read_transcript("I'd like to book a table for")
    finished = read_transcript("What time do you close today?")
    assert decide(0.9).done and decide(0.9, finished).done
    assert not decide(0.9, unfinished).done
    assert "for" in decide(0.9, unfinished).reason
    assert not decide(0.3, finished).done  # a finished-looking transcript never ends a turn the model holds
    assert not decide(0.5).done  # the threshold itself is not done (the model's own rule: p > 0.5)
    weak = read_transcript("Who should I talk to?")
    assert decide(0.9, weak).done
    assert decide(0.9, unfinished, EndOfTurnSettings(text_veto=1.1)).done  # text off
    assert not decide(0.7, None, EndOfTurnSettings(threshold=0.8)).done
