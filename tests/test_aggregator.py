"""The reply sentence aggregator on deltas split anywhere, and the shared audio codecs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from voicepod.aggregator import SentenceAggregator
from voicepod.audio import mulaw_decode, mulaw_encode, read_wav, write_wav
from voicepod.sentences import split_sentences

TEXT = ("Dr. Smith paid $3.50 for it, e.g. at the U.S. store. Was it worth it? Yes... mostly! "
        "Then, after a long pause, he said: \"fine.\" The end")


def feed_in_pieces(aggregator: SentenceAggregator, text: str, cuts: list[int], cut_off: bool = False) -> list[str]:
    out, start = [], 0
    for cut in sorted(set(cuts)) + [len(text)]:
        out += aggregator.feed(text[start:cut])
        start = cut
    return out + aggregator.flush(cut_off=cut_off)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(TEXT)), max_size=30))
def test_streamed_deltas_split_anywhere_give_the_whole_text_sentences(cuts):
    aggregator = SentenceAggregator(first_cut_words=0, first_max_words=None, max_words=None)
    assert feed_in_pieces(aggregator, TEXT, cuts) == split_sentences(TEXT)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(TEXT)), max_size=30))
def test_early_first_cut_keeps_every_word_in_order(cuts):
    pieces = feed_in_pieces(SentenceAggregator(first_cut_words=4), TEXT, cuts)
    assert " ".join(pieces).split() == TEXT.split()
    assert pieces[0] == "Dr. Smith paid $3.50 for it,"


def test_no_early_cut_before_enough_words():
    aggregator = SentenceAggregator(first_cut_words=6)
    assert aggregator.feed("Yes, of course. ") == []  # "of course." is not complete until more text arrives
    assert aggregator.feed("It") == ["Yes, of course."]


def test_mulaw_round_trip_error_is_within_the_codec_step():
    x = (0.8 * np.sin(np.linspace(0, 200, 16000))).astype(np.float32)
    y = mulaw_decode(mulaw_encode(x))
    assert y.shape == x.shape
    # mu-law's step grows with amplitude: about 3% of the value, plus a small floor near zero.
    assert np.all(np.abs(x - y) <= 0.035 * np.abs(x) + 2e-3)


def test_mulaw_matches_the_itu_reference_coder():
    audioop = __import__("pytest").importorskip("audioop")  # gone in Python 3.13
    pcm = np.arange(-32768, 32767, dtype="<i2")
    ours = mulaw_encode(pcm.astype(np.float32) / 32767.0)
    assert ours == audioop.lin2ulaw(pcm.tobytes(), 2)
    every_code = bytes(range(256))
    reference = np.frombuffer(audioop.ulaw2lin(every_code, 2), dtype="<i2") / 32768.0
    assert np.array_equal(mulaw_decode(every_code), reference.astype(np.float32))


def test_wav_round_trip():
    x = (0.5 * np.sin(np.linspace(0, 50, 4410))).astype(np.float32)
    y, rate = read_wav(write_wav(x, 22050))
    assert rate == 22050 and np.max(np.abs(x - y)) < 1e-4


RUN_ON = ("i think it is about one million miles away from here but nobody really knows how far it is "
          "because it moves around a lot and the numbers keep changing every single year so")


def test_a_reply_without_punctuation_is_spoken_after_a_bounded_number_of_words():
    aggregator = SentenceAggregator(first_max_words=10, max_words=20)
    pieces, fed_words = [], 0
    for word in RUN_ON.split():
        out = aggregator.feed(word + " ")
        fed_words += 1
        if out and not pieces:
            assert fed_words <= 11  # the tenth word is complete once the eleventh's space arrives
        pieces += out
    pieces += aggregator.flush()
    assert len(pieces[0].split()) == 10
    assert all(len(piece.split()) <= 20 for piece in pieces)
    assert " ".join(pieces).split() == RUN_ON.split()


def test_the_word_bound_prefers_the_last_clause_mark():
    aggregator = SentenceAggregator(first_cut_words=0, first_max_words=10, max_words=10)
    text = "well you see the moon is far, very far away from us and from everyone"
    pieces = aggregator.feed(text + " ") + aggregator.flush()
    assert pieces[0] == "well you see the moon is far,"
    assert " ".join(pieces).split() == text.split()


def test_the_word_bound_off_keeps_waiting_for_a_sentence_end():
    aggregator = SentenceAggregator(first_max_words=None, max_words=None)
    assert aggregator.feed(RUN_ON[:100] + " ") == []


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(TEXT)), max_size=30))
def test_word_bounds_keep_every_word_in_order(cuts):
    pieces = feed_in_pieces(SentenceAggregator(first_cut_words=3, first_max_words=4, max_words=6), TEXT, cuts)
    assert " ".join(pieces).split() == TEXT.split()
    assert len(pieces[0].split()) <= 4
    assert all(len(piece.split()) <= 6 for piece in pieces)


# --- the reply cap: what is left held when the LLM was cut at its token cap -------------------------------

LIST_CUT = "Here are three books.\n1. The Hobbit by J.R.R. Tolkien\n2. The Immaculate"


@pytest.mark.parametrize("cuts", [[], [5, 30, 40, 66], list(range(len(LIST_CUT)))])
def test_a_reply_cut_off_at_its_cap_drops_its_unfinished_sentence(cuts):
    pieces = feed_in_pieces(SentenceAggregator(), LIST_CUT, cuts, cut_off=True)
    assert pieces == ["Here are three books.", "1. The Hobbit by J.R.R. Tolkien"]


def test_a_reply_that_ended_keeps_its_last_words_even_without_a_full_stop():
    assert feed_in_pieces(SentenceAggregator(), LIST_CUT, [], cut_off=False)[-1] == "2. The Immaculate"


@pytest.mark.parametrize("tail", ["3. Emma by Jane Austen\n", "It is a classic.", "Is that all?"])
def test_a_reply_cut_off_at_the_end_of_a_sentence_or_item_keeps_it(tail):
    pieces = feed_in_pieces(SentenceAggregator(), "Here are three books.\n" + tail, [], cut_off=True)
    assert pieces[-1] == tail.strip()


def test_a_reply_cut_off_before_anything_was_said_is_spoken_anyway():
    # Silence is worse than a fragment.
    pieces = feed_in_pieces(SentenceAggregator(), "I think the best book", [], cut_off=True)
    assert pieces == ["I think the best book"]
