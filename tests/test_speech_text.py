"""The TTS worker's speech text: what an LLM writes, rewritten as a person reads it aloud (no model, no voice)."""

from __future__ import annotations

import re

import pytest
from voicepod.sentences import split_sentences

from workers.tts.speech_text import speech_text


@pytest.mark.parametrize(
    "written, said",
    [
        # prices, percentages
        ("It costs $5.99 today.", "It costs five dollars ninety-nine today."),
        ("Only $0.50!", "Only fifty cents!"),
        ("$1,299.99 or $2.5 million", "one thousand two hundred ninety-nine dollars ninety-nine or two point five "
                                      "million dollars"),
        ("A $1 fee, €20 and £3.", "A one dollar fee, twenty euros and three pounds."),
        ("Save 20% now, or 3.5% later.", "Save twenty percent now, or three point five percent later."),
        # times
        ("Meet at 3:30 pm.", "Meet at three thirty p m."),
        ("At 3 p.m. sharp", "At three p m sharp"),
        ("Open 9:05 AM to 5 PM.", "Open nine oh five a m to five p m."),
        ("At 7:00, or 15:00.", "At seven o'clock, or fifteen hundred."),
        # dates, years, ordinals
        ("On 2024-03-05.", "On March fifth, twenty twenty-four."),
        ("By 3/5/2024 or March 5th, 2024.", "By March fifth, twenty twenty-four or March fifth, twenty twenty-four."),
        ("On 5 March.", "On the fifth of March."),
        ("In the 1990s, in 1999 and in 2005.", "In the nineteen nineties, in nineteen ninety-nine and in two thousand "
                                               "five."),
        ("The 21st century, the 2nd time.", "The twenty-first century, the second time."),
        # phone numbers, e-mail addresses, URLs
        ("Call (555) 123-4567.", "Call five five five, one two three, four five six seven."),
        ("Call +44 20 7946 0958.", "Call plus four four, two zero, seven nine four six, zero nine five eight."),
        ("Email support@acme.com now.", "Email support at acme dot com now."),
        ("Write to jane.doe@mail.example.org.", "Write to jane dot doe at mail dot example dot org."),
        ("Visit https://www.acme.com/pricing?x=1.", "Visit acme dot com slash pricing."),
        ("See acme.io/docs for more.", "See acme dot io slash docs for more."),
        # numbers, ranges, fractions, symbols
        ("Pick 1, 2 or 3 of 1,000.", "Pick one, two or three of one thousand."),
        ("Sleep 7-9 hours, 24/7.", "Sleep seven to nine hours, twenty-four seven."),
        ("Add 1/2 cup and 2/3 cup.", "Add one half cup and two thirds cup."),
        ("A 9x13 pan at 350°F.", "A nine by thirteen pan at three hundred fifty degrees Fahrenheit."),
        ("Salt & pepper, #1, ~5 left, a+b=c.", "Salt and pepper, number one, about five left, a plus b equals c."),
        ("Bring fruit, e.g. apples, etc.", "Bring fruit, for example apples, et cetera"),
        # markdown
        ("**Bold**, *it*, _em_, `code` and ~~gone~~.", "Bold, it, em, code and gone."),
        ("Read [the guide](https://acme.com/guide) first.", "Read the guide first."),
        ("1. The Hobbit by J.R.R. Tolkien", "First, The Hobbit by J.R.R. Tolkien."),
        ("2) Dune", "Second, Dune."),
        ("- Boil water", "Boil water."),
        ("* **Dune** by Frank Herbert.", "Dune by Frank Herbert."),
        ("## Tips", "Tips."),
        ("> A quote.", "A quote."),
        ("| Name | Price |", "Name, Price."),
        ("---", ""),
        # emoji and symbols with no spoken form
        ("Great job 🎉🔥👍🏽!", "Great job!"),
        ("Done ✅ → next ★", "Done next"),
        # left as written
        ("Dr. Smith said so... maybe.", "Dr. Smith said so... maybe."),
        ("Well — maybe.", "Well, maybe."),
    ],
)
def test_written_text_is_said_as_a_person_reads_it(written: str, said: str) -> None:
    assert speech_text(written) == said


LLM_REPLY = """## Top picks 📚

Here are **three** books I'd recommend:

1. *The Hobbit* by J.R.R. Tolkien — a classic ($9.99 at [Acme](https://acme.com/books)).
2. **Dune** by Frank Herbert, e.g. for sci-fi fans 🚀
3. `Emma` by Jane Austen; ~40% off until 3/15/2025 at 5:30 pm!

Questions? Email help@acme.com or call 555-123-4567. 😊
"""


def test_a_markdown_reply_has_no_marks_symbols_or_digits_left() -> None:
    said = " ".join(speech_text(piece) for piece in split_sentences(LLM_REPLY))
    assert not re.search(r"[*#_`~\[\]()<>|/@$%&+=\d]", said), said
    assert "http" not in said and not any(ord(ch) > 0x2000 for ch in said), said
    for words in ("Top picks.", "First, The Hobbit", "Second, Dune", "Third, Emma", "nine dollars ninety-nine",
                  "forty percent", "March fifteenth, twenty twenty-five", "five thirty p m", "help at acme dot com",
                  "five five five, one two three, four five six seven"):
        assert words in said, (words, said)


@pytest.mark.parametrize(
    "sentence",
    ["Dr. Smith paid $5.99, e.g. at 3:30 p.m. on 3/5/2024.", "It grew 3.5% in the U.S... really.",
     "1. The Hobbit by J.R.R. Tolkien", "Mr. Jones sent 1,299.50 euros to jane.doe@acme.com."],
)
def test_the_splitter_keeps_a_rewritten_sentence_whole(sentence: str) -> None:
    # The worker cuts first and rewrites each piece; a piece rewritten must not read as several sentences.
    assert len(split_sentences(sentence)) == 1
    assert len(split_sentences(speech_text(sentence))) == 1, speech_text(sentence)
