"""The sentence splitter: hard cases of English punctuation, overlong sentences, and incremental feeding."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from voicepod.sentences import SentenceSplitter, ends_sentence, split_sentences


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Hello there. How are you? Fine!", ["Hello there.", "How are you?", "Fine!"]),
        ("Dr. Smith met Mr. Jones and Mrs. Brown.", ["Dr. Smith met Mr. Jones and Mrs. Brown."]),
        ("Bring fruit, e.g. apples. Or bread, i.e. carbs.", ["Bring fruit, e.g. apples.", "Or bread, i.e. carbs."]),
        ("It costs 3.5 dollars. That is 0.5 more.", ["It costs 3.5 dollars.", "That is 0.5 more."]),
        ("The U.S. economy grew. It was fast.", ["The U.S. economy grew.", "It was fast."]),
        # Dotted capitals are initials: never cut after them (a cut in "J.K. Rowling" would be heard, a missed
        # one after "U.S." hardly).
        ("I moved to the U.S. Then I stayed.", ["I moved to the U.S. Then I stayed."]),
        ("Harry Potter by J.K. Rowling. Read it.", ["Harry Potter by J.K. Rowling.", "Read it."]),
        ("J. R. R. Tolkien wrote it.", ["J. R. R. Tolkien wrote it."]),
        ("Wait... what? Well… Okay.", ["Wait... what?", "Well…", "Okay."]),
        ("I was thinking... maybe not.", ["I was thinking... maybe not."]),
        ('He said "Stop." Then he left.', ['He said "Stop."', "Then he left."]),
        ('"Really?" she asked. Yes.', ['"Really?" she asked.', "Yes."]),
        ("(It is late.) We go.", ["(It is late.)", "We go."]),
        ("Visit example.com today. Bye.", ["Visit example.com today.", "Bye."]),
        ("See No. 5 here. Done", ["See No. 5 here.", "Done"]),
        ("Title without period\n\nNext paragraph.", ["Title without period", "Next paragraph."]),
        ("  Lots   of\n spaces .  ", ["Lots of spaces ."]),
        ("What?! No way.", ["What?!", "No way."]),
        ("", []),
        ("   \n ", []),
        # Markdown's lines: each item and heading is a piece; "1." starts an item, it ends nothing.
        ("Here are three books:\n1. The Hobbit by J.R.R. Tolkien\n2. Dune by Frank Herbert\n3. Emma, by Austen.",
         ["Here are three books:", "1. The Hobbit by J.R.R. Tolkien", "2. Dune by Frank Herbert",
          "3. Emma, by Austen."]),
        ("Steps:\n- Boil water.\n- Add the tea\n* Wait 3.5 minutes\n\n## Tips\nUse fresh water.",
         ["Steps:", "- Boil water.", "- Add the tea", "* Wait 3.5 minutes", "## Tips", "Use fresh water."]),
        ("1. The Hobbit. A classic\n2. Dune", ["1. The Hobbit.", "A classic", "2. Dune"]),
        ("It has 2 parts\n10 people came.", ["It has 2 parts 10 people came."]),
        ("A line\nwrapped here. Next.", ["A line wrapped here.", "Next."]),
        ("**Note.** Then go.", ["**Note.**", "Then go."]),
        ("It costs $5.99, e.g. at 3:30 p.m. on Dr. Oz's show... Ok.", ["It costs $5.99, e.g. at 3:30 p.m. on Dr. "
                                                                       "Oz's show...", "Ok."]),
    ],
)
def test_split_hard_cases(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected


def test_overlong_sentence_is_cut_at_commas_within_the_limit() -> None:
    clause = "the quick brown fox jumps over the lazy dog"
    text = ", ".join([clause] * 8) + "."
    pieces = split_sentences(text, max_chars=100)
    assert len(pieces) > 1
    assert all(len(p) <= 100 for p in pieces)
    assert all(p.endswith((",", ".")) for p in pieces)  # cut after a comma, never inside a clause
    assert " ".join(pieces) == text


def test_overlong_text_without_commas_is_cut_at_spaces() -> None:
    text = " ".join(["word"] * 100)
    pieces = split_sentences(text, max_chars=50)
    assert all(len(p) <= 50 for p in pieces)
    assert " ".join(pieces) == text


def test_overlong_word_is_cut_hard() -> None:
    pieces = split_sentences("x" * 120, max_chars=50)
    assert [len(p) for p in pieces] == [50, 50, 20]


def test_feed_returns_a_sentence_only_once_the_next_one_starts() -> None:
    splitter = SentenceSplitter()
    assert splitter.feed("Hello Dr.") == []
    assert splitter.feed(" Smith.") == []  # "Smith." may still be followed by a lowercase word
    assert splitter.feed(" How") == ["Hello Dr. Smith."]
    assert splitter.feed(" are you? I") == ["How are you?"]
    assert splitter.feed(" am fine") == []
    assert splitter.flush() == ["I am fine"]
    assert splitter.flush() == []


def test_feed_releases_run_on_text_before_it_ends() -> None:
    splitter = SentenceSplitter(max_chars=60)
    released = []
    for _ in range(20):
        released += splitter.feed("and then, ")
    assert released and all(len(s) <= 60 for s in released)


_pieces = st.sampled_from(
    ["Dr.", " Smith", " paid", " 3.5", " dollars", ", e.g.", " cash", ".", " The", " U.S.", " economy", "?",
     " Wait", "...", " what", "!", ' "Go."', " he", " said", "\n\n", "  ", "x" * 30, "\n", "1.", " 2",
     "- ", "## ", "**", ":"]
)


@settings(max_examples=200, deadline=None)
@given(parts=st.lists(_pieces, max_size=40), cuts=st.lists(st.integers(0, 400), max_size=8))
def test_feeding_in_any_pieces_equals_splitting_at_once(parts: list[str], cuts: list[int]) -> None:
    text = "".join(parts)
    bounds = sorted({0, len(text), *(c for c in cuts if c < len(text))})
    splitter = SentenceSplitter(max_chars=80)
    streamed = []
    for start, end in zip(bounds, bounds[1:], strict=False):
        streamed += splitter.feed(text[start:end])
    streamed += splitter.flush()
    assert streamed == split_sentences(text, max_chars=80)
    assert "".join("".join(streamed).split()) == "".join(text.split())  # nothing lost, nothing invented


@pytest.mark.parametrize(
    "text, ends",
    [
        ("Hello.", True), ("Really?", True), ("Go!", True), ('He said "Stop."', True), ("Read **Dune.**", True),
        ("It opens at 9 a.m.", True), ("1. The Hobbit\n", True), ("## Tips\n", True), ("A title\n\n", True),
        ("Ask Dr.", False), ("Bring fruit, e.g.", False), ("It costs $3.", False), ("Back in 1999.", False),
        ("Books by J.K.", False), ("J.", False), ("Well...", False), ("Here are three:\n", False),
        ("Here are three:\n\n", False), ("A plain line\n", False), ("It was", False), ("", False),
        ("1. The Hobbit", False),
    ],
)
def test_ends_sentence_judges_an_end_without_what_follows(text: str, ends: bool) -> None:
    assert ends_sentence(text) is ends
