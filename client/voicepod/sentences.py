"""Cut text into sentences for speech, all at once or incrementally as a streamed reply arrives.

Speech synthesis goes sentence by sentence so that the first audio can leave before the whole text is
spoken; a chain that feeds an LLM's streamed deltas into speech needs the same cut on partial text, so the
splitter is incremental: :meth:`SentenceSplitter.feed` returns only sentences that can no longer change.

LLM replies are markdown more often than not, so the line structure counts too: a bullet, a numbered item or a
heading is a piece of its own (the "1." of "1. Dune" never ends a sentence), and a line break ends one when its
line is such an item or the next line starts one. :func:`ends_sentence` judges the end of a text without what
follows, for a reply cut at its token cap (the LLM worker's allowance and the aggregator's last piece).

Written by hand because the sentence tokenizers that handle abbreviations (nltk's punkt, spaCy) are large
dependencies for a client that must stay thin, and none of them works on a growing buffer.
"""

from __future__ import annotations

import re

DEFAULT_MAX_CHARS = 250

# Words whose trailing period does not end a sentence (compared lower-cased, without that period).
_ABBREVIATIONS = frozenset(
    {
        "mr", "mrs", "ms", "mx", "dr", "prof", "rev", "fr", "sr", "jr", "st", "mt", "ft", "gen", "sen", "rep",
        "gov", "pres", "capt", "col", "lt", "sgt", "cpl", "maj", "cmdr", "hon", "vs", "cf", "e.g", "i.e",
        "eg", "ie", "approx", "dept", "est", "fig", "figs", "vol", "vols", "ch", "sec", "ca", "inc",
        "ltd", "co", "corp", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct",
        "nov", "dec",
    }
)
# What may close a sentence after its terminator: quotes, brackets, markdown's emphasis marks ("**Done.**").
_CLOSERS = "\"'”’)]*_"
# A run of terminators, then closers, seen only where whitespace (or the end) follows: the "." in "3.5", "U.S"
# or "example.com" is never a candidate.
_TERMINATOR = re.compile(rf"[.!?…]+[{re.escape(_CLOSERS)}]*(?=\s|$)")
# Where a piece may end: a terminator, or a line break (which ends one when markdown's lines say so).
_BREAK = re.compile(rf"{_TERMINATOR.pattern}|\n")
_FINAL_TERMINATOR = re.compile(rf"[.!?…]+[{re.escape(_CLOSERS)}]*$")
_PARAGRAPH = re.compile(r"\n[ \t]*\n")
_WORD_BEFORE = re.compile(r"[^\s\"'“‘(\[]*$")
# The start of a markdown line that is a piece of its own: a bullet, a numbered item, a heading.
_ITEM_START = re.compile(r"[ \t]*(?:[-*+•]|\d{1,3}[.)]|#{1,6})[ \t]+")
# A line that starts as an item does: its marker, then whitespace or (so far) nothing.
_ITEM_LINE = re.compile(r"[ \t]*(?:[-*+•]|\d{1,3}[.)]|#{1,6})(?:[ \t]|$)")
# What may still grow into _ITEM_START (the next line has not shown yet whether it starts an item).
_ITEM_START_SO_FAR = re.compile(r"[ \t]*(?:[-*+•]|\d{1,3}[.)]?|#{1,6})?")
# Initials and dotted capitals ("J.K", "J.R.R", "U.S"): their last period is not taken for a sentence end, so
# "J.K. Rowling" is never cut (at the cost of "in the U.S. Then ..." staying one piece).
_INITIALS = re.compile(r"(?:[A-Z]\.)+[A-Z]")
# Where an overlong sentence is best cut: after a clause mark, else at a space.
_CLAUSE_MARK = re.compile(r"[,;:—–](?=\s)|\s[-–—]\s")
_WORD = re.compile(r"\S+")


def _ends_sentence(word: str, terminator: str, next_char: str) -> bool:
    """Whether ``terminator`` after ``word`` ends a sentence, given the next non-space character."""
    if next_char.islower():  # "e.g. this", "Wait... what", "'Really?' she asked"
        return False
    marks = terminator.rstrip(_CLOSERS)
    if marks != ".":  # "?", "!", "...", "…", "?!"
        return True
    lowered = word.lower()
    if lowered in _ABBREVIATIONS:
        return False
    if lowered == "no" and next_char.isdigit():  # "No. 5"
        return False
    # A lone capital is an initial ("J. R. R. Tolkien"), and so are dotted capitals ("J.K. Rowling").
    return not ((len(word) == 1 and word.isupper()) or _INITIALS.fullmatch(word))


def ends_sentence(text: str) -> bool:
    """Whether ``text`` ends where a sentence or a list item ends, judged from ``text`` alone.

    Used where nothing more will follow, or where writing stops at the first end it sees: a terminator
    ("?", "!", or a "." that is not an abbreviation's, an initial's, or a number's, since "$3." may still become
    "$3.99"), or a line break that ends a bullet, a numbered item, a heading or a paragraph (but not a line ending
    in ":", which announces what follows). An ellipsis is not taken for an end.
    """
    body = text.rstrip(" \t")
    content = body.rstrip()
    if not content or content.endswith(":"):
        return False
    if body.endswith("\n"):
        line = content.rsplit("\n", 1)[-1]
        if _ITEM_START.match(line) or _PARAGRAPH.search(body[len(content) :]):
            return True
    final = _FINAL_TERMINATOR.search(content)
    if final is None:
        return False
    marks = final.group().rstrip(_CLOSERS)
    if "?" in marks or "!" in marks:
        return True
    if marks != ".":  # "...", "…"
        return False
    word = _word_before(content, final.start())
    if not word or word[-1].isdigit():
        return False
    return _ends_sentence(word, final.group(), "X")


def _word_before(text: str, end: int) -> str:
    """The word that ends at ``end``, without markdown's emphasis marks around it."""
    return _WORD_BEFORE.search(text, 0, end).group().strip("*_`")


def _normalize(text: str) -> str:
    return " ".join(text.split())


def _split_long(sentence: str, max_chars: int) -> list[str]:
    """Cut a sentence longer than ``max_chars`` at clause marks, else at spaces, else anywhere."""
    pieces = []
    while len(sentence) > max_chars:
        cut = _long_cut(sentence, max_chars)
        pieces.append(sentence[:cut].strip())
        sentence = sentence[cut:].strip()
    if sentence:
        pieces.append(sentence)
    return pieces


def _long_cut(text: str, max_chars: int) -> int:
    window = text[: max_chars + 1]
    floor = max_chars // 3  # a cut this early would leave a fragment too short to say naturally
    marks = [m.end() for m in _CLAUSE_MARK.finditer(window) if m.end() > floor]
    if marks:
        return marks[-1]
    space = max(window.rfind(" "), window.rfind("\n"), window.rfind("\t"))
    return space if space > floor else max_chars


def _word_cut(text: str, max_words: int) -> int | None:
    """Where to cut ``text`` so the first piece has at most ``max_words`` words: after the last clause mark
    past a third of them, else after the last of them; ``None`` while fewer than ``max_words`` words are
    complete (a word is complete once whitespace follows it)."""
    ends = [m.end() for m in _WORD.finditer(text) if m.end() < len(text)]
    if len(ends) < max_words:
        return None
    limit = ends[max_words - 1]
    floor = ends[max(max_words // 3 - 1, 0)]
    marks = [m.end() for m in _CLAUSE_MARK.finditer(text, 0, limit + 1) if floor <= m.end() <= limit + 1]
    return marks[-1] if marks else limit


class SentenceSplitter:
    """Split text into sentences as it arrives.

    Args:
        max_chars: Longest sentence returned. Longer ones are cut at the last comma, semicolon, colon or
            dash within the limit, else at the last space; text without a sentence end is also released
            in such pieces once it grows past the limit, so a run-on reply still streams.
        max_words: When set, text that has reached this many complete words without a sentence end is
            released too, cut at its last clause mark, else after that many words: a voice must not wait
            for a full stop that may never come. ``None`` (the default, what the TTS worker uses on whole
            texts) cuts by characters only. May be changed between :meth:`feed` calls.

    ``feed`` returns the sentences completed by the text fed so far. A sentence end is only known once the
    next non-space character has arrived ("Dr." followed by "Smith" does not end one, followed by a lowercase
    word neither; a line break ends one if the next line starts a list item), so the last sentence stays
    buffered until more text or :meth:`flush`.
    """

    def __init__(self, max_chars: int = DEFAULT_MAX_CHARS, max_words: int | None = None):
        if max_chars < 10:
            raise ValueError("max_chars must be at least 10")
        if max_words is not None and max_words < 1:
            raise ValueError("max_words must be at least 1")
        self.max_chars = max_chars
        self.max_words = max_words
        self._buffer = ""
        # The line the buffer starts in: "start" (the buffer starts a line), "item" (inside a list item's or a
        # heading's line), "text" (inside another line). Lines are markdown's structure; the buffer only holds
        # what is left after the last cut, so this is what it no longer shows.
        self._line = "start"

    @property
    def pending(self) -> str:
        """The text fed and not yet returned."""
        return self._buffer

    def feed(self, text: str) -> list[str]:
        """Add text; return the sentences it completed (whitespace collapsed, in order)."""
        self._buffer += text
        sentences = self._take_complete()
        # Keep what might still grow, but never hold more than one overlong piece back.
        while len(self._buffer.strip()) > self.max_chars:
            self._drop(len(self._buffer) - len(self._buffer.lstrip()))
            sentences.append(_normalize(self._drop(_long_cut(self._buffer, self.max_chars))))
        while self.max_words is not None and (cut := _word_cut(self._buffer, self.max_words)) is not None:
            sentences.append(_normalize(self._drop(cut)))
        return self._bounded(sentences)

    def take(self, length: int) -> str:
        """Take the first ``length`` characters of the pending text out as a piece of their own (whitespace
        collapsed): a caller's own early cut, which the rules above did not make."""
        return _normalize(self._drop(length))

    def flush(self) -> list[str]:
        """End of text: return every sentence still buffered and reset the splitter."""
        sentences = self._take_complete()
        sentences.extend(_split_long(_normalize(self._buffer), self.max_chars))
        self._buffer, self._line = "", "start"
        return self._bounded(sentences)

    def _bounded(self, sentences: list[str]) -> list[str]:
        """Drop empty pieces and, with ``max_words``, cut longer ones by words as :func:`_word_cut` does."""
        pieces = []
        for sentence in filter(None, sentences):
            while self.max_words is not None and (cut := _word_cut(sentence + " ", self.max_words)) is not None:
                pieces.append(sentence[:cut].strip())
                sentence = sentence[cut:].strip()
            if sentence:
                pieces.append(sentence)
        return pieces

    def _drop(self, length: int) -> str:
        """Remove the first ``length`` characters of the buffer and return them, keeping track of the line the
        rest starts in."""
        taken, self._buffer = self._buffer[:length], self._buffer[length:]
        newline = taken.rfind("\n")
        if newline >= 0:
            rest_of_line = taken[newline + 1 :]
            self._line = "start" if not rest_of_line.strip(" \t") else _kind_of_line(rest_of_line)
        elif self._line == "start" and taken.strip(" \t"):
            self._line = _kind_of_line(taken)
        return taken

    def _take_complete(self) -> list[str]:
        sentences: list[str] = []
        while (cut := self._next_cut()) is not None:
            sentences.extend(_split_long(_normalize(self._drop(cut)), self.max_chars))
        return sentences

    def _next_cut(self) -> int | None:
        buffer = self._buffer
        paragraph = _PARAGRAPH.search(buffer)
        limit = paragraph.start() if paragraph else len(buffer)
        at_paragraph = paragraph.end() if paragraph else None
        for match in _BREAK.finditer(buffer, 0, limit):
            if match.group() == "\n":
                at = match.start()
                if self._item_line_ends_at(at) or _ITEM_START.match(buffer, at + 1, limit):
                    return at + 1
                if _ITEM_START_SO_FAR.fullmatch(buffer, at + 1, limit):
                    return at_paragraph  # the next line may still turn out to start an item
                continue
            rest = buffer[match.end() : limit].lstrip()
            if not rest:
                # Nothing after it yet: undecidable until more text comes; at the end it is the end anyway.
                return at_paragraph
            word = _word_before(buffer, match.start())
            if self._is_item_number(match.start()):
                continue
            if _ends_sentence(word, match.group(), rest[0]):
                return match.end()
        return at_paragraph

    def _item_line_ends_at(self, newline: int) -> bool:
        """Whether the line that the buffer's line break at ``newline`` ends is a list item or a heading."""
        start = self._buffer.rfind("\n", 0, newline) + 1
        if start == 0 and self._line != "start":
            return self._line == "item"
        return _kind_of_line(self._buffer[start:newline]) == "item"

    def _is_item_number(self, period: int) -> bool:
        """Whether the terminator at ``period`` is the "." of a numbered item's "1." at the start of a line."""
        raw = _WORD_BEFORE.search(self._buffer, 0, period).group()
        if not (raw.isdigit() and len(raw) <= 3):
            return False
        before = self._buffer[: period - len(raw)].rstrip(" \t")
        return before.endswith("\n") or (not before and self._line == "start")


def _kind_of_line(line: str) -> str:
    """``"item"`` for a line (or its start) that is a bullet, a numbered item or a heading, else ``"text"``."""
    return "item" if _ITEM_LINE.match(line) else "text"


def is_speakable(sentence: str) -> bool:
    """Whether a voice could say anything for ``sentence`` ("..." or "—" alone: no)."""
    return any(ch.isalnum() for ch in sentence)


def split_sentences(text: str, max_chars: int = DEFAULT_MAX_CHARS) -> list[str]:
    """Split a whole text into sentences (see :class:`SentenceSplitter` for the rules)."""
    splitter = SentenceSplitter(max_chars)
    return splitter.feed(text) + splitter.flush()
