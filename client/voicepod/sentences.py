"""Cut text into sentences for speech, all at once or incrementally as a streamed reply arrives.

Speech synthesis goes sentence by sentence so that the first audio can leave before the whole text is
spoken; a chain that feeds an LLM's streamed deltas into speech needs the same cut on partial text, so the
splitter is incremental: :meth:`SentenceSplitter.feed` returns only sentences that can no longer change.

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
# A run of terminators, then closing quotes or brackets, seen only where whitespace (or the end) follows:
# the "." in "3.5", "U.S" or "example.com" is never a candidate.
_TERMINATOR = re.compile(r"[.!?…]+[\"'”’)\]]*(?=\s|$)")
_PARAGRAPH = re.compile(r"\n[ \t]*\n")
_WORD_BEFORE = re.compile(r"[^\s\"'“‘(\[]*$")
# Where an overlong sentence is best cut: after a clause mark, else at a space.
_CLAUSE_MARK = re.compile(r"[,;:—–](?=\s)|\s[-–—]\s")
_WORD = re.compile(r"\S+")


def _ends_sentence(word: str, terminator: str, next_char: str) -> bool:
    """Whether ``terminator`` after ``word`` ends a sentence, given the next non-space character."""
    if next_char.islower():  # "e.g. this", "Wait... what", "'Really?' she asked"
        return False
    marks = terminator.rstrip("\"'”’)]")
    if marks != ".":  # "?", "!", "...", "…", "?!"
        return True
    lowered = word.lower()
    if lowered in _ABBREVIATIONS:
        return False
    if lowered == "no" and next_char.isdigit():  # "No. 5"
        return False
    # A lone capital is an initial ("J. R. R. Tolkien"); dotted acronyms ("U.S.") do end sentences
    # when a capital follows, which misplaces a cut in "U.S. Army" but keeps "in the U.S. Then ..." right.
    return not (len(word) == 1 and word.isupper())


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
    word neither), so the last sentence stays buffered until more text or :meth:`flush`.
    """

    def __init__(self, max_chars: int = DEFAULT_MAX_CHARS, max_words: int | None = None):
        if max_chars < 10:
            raise ValueError("max_chars must be at least 10")
        if max_words is not None and max_words < 1:
            raise ValueError("max_words must be at least 1")
        self.max_chars = max_chars
        self.max_words = max_words
        self._buffer = ""

    def feed(self, text: str) -> list[str]:
        """Add text; return the sentences it completed (whitespace collapsed, in order)."""
        self._buffer += text
        sentences = self._take_complete()
        # Keep what might still grow, but never hold more than one overlong piece back.
        while len(self._buffer.strip()) > self.max_chars:
            self._buffer = self._buffer.lstrip()
            cut = _long_cut(self._buffer, self.max_chars)
            sentences.append(_normalize(self._buffer[:cut]))
            self._buffer = self._buffer[cut:]
        while self.max_words is not None and (cut := _word_cut(self._buffer, self.max_words)) is not None:
            sentences.append(_normalize(self._buffer[:cut]))
            self._buffer = self._buffer[cut:]
        return self._bounded(sentences)

    def flush(self) -> list[str]:
        """End of text: return every sentence still buffered and reset the splitter."""
        sentences = self._take_complete()
        sentences.extend(_split_long(_normalize(self._buffer), self.max_chars))
        self._buffer = ""
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

    def _take_complete(self) -> list[str]:
        sentences: list[str] = []
        while (cut := self._next_cut()) is not None:
            sentences.extend(_split_long(_normalize(self._buffer[:cut]), self.max_chars))
            self._buffer = self._buffer[cut:]
        return sentences

    def _next_cut(self) -> int | None:
        buffer = self._buffer
        paragraph = _PARAGRAPH.search(buffer)
        limit = paragraph.start() if paragraph else len(buffer)
        for match in _TERMINATOR.finditer(buffer, 0, limit):
            rest = buffer[match.end() : limit].lstrip()
            if not rest:
                # Nothing after it yet: undecidable until more text comes; at the end it is the end anyway.
                return paragraph.end() if paragraph else None
            word = _WORD_BEFORE.search(buffer, 0, match.start()).group()
            if _ends_sentence(word, match.group(), rest[0]):
                return match.end()
        return paragraph.end() if paragraph else None


def is_speakable(sentence: str) -> bool:
    """Whether a voice could say anything for ``sentence`` ("..." or "—" alone: no)."""
    return any(ch.isalnum() for ch in sentence)


def split_sentences(text: str, max_chars: int = DEFAULT_MAX_CHARS) -> list[str]:
    """Split a whole text into sentences (see :class:`SentenceSplitter` for the rules)."""
    splitter = SentenceSplitter(max_chars)
    return splitter.feed(text) + splitter.flush()
