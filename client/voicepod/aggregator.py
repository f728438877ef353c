"""Cut a streamed LLM reply into speakable pieces, with an early first cut so the first sound comes sooner."""

from __future__ import annotations

import re

from .sentences import DEFAULT_MAX_CHARS, SentenceSplitter

_COMMA = re.compile(r"[,;:](?=\s)")


# A reply that never ends a sentence must still be heard: the first piece goes to speech after at most this
# many words (about 4 s of speech, written in well under a second), later ones after this many (the first
# piece's playback covers their writing).
FIRST_MAX_WORDS = 10
MAX_WORDS = 25


class SentenceAggregator:
    """Feed reply deltas; get back finished sentences to speak, in order.

    The rules are :class:`~voicepod.sentences.SentenceSplitter`'s (the TTS worker's), with two additions for
    a voice that must not wait for a full stop. The first piece may end at a comma, semicolon or colon once it
    has ``first_cut_words`` words, because on a voice call the first sound matters most and a clause is a
    natural place to breathe (``first_cut_words=0`` turns that off). And no piece waits for a sentence end
    past ``first_max_words`` words (the first) or ``max_words`` (the others): it is cut at its last clause
    mark, else at a word boundary (``None`` turns the bound off).
    """

    def __init__(
        self,
        first_cut_words: int = 5,
        max_chars: int = DEFAULT_MAX_CHARS,
        *,
        first_max_words: int | None = FIRST_MAX_WORDS,
        max_words: int | None = MAX_WORDS,
    ):
        self.first_cut_words = first_cut_words
        self.max_chars = max_chars
        self.max_words = max_words
        self._splitter = SentenceSplitter(max_chars, first_max_words)
        self._first_pending = first_cut_words > 0
        self._seen = ""  # everything fed while the first piece is still pending

    def feed(self, delta: str) -> list[str]:
        sentences = self._splitter.feed(delta)
        if sentences:
            self._splitter.max_words = self.max_words  # the first piece is out: the later bound applies
        if not self._first_pending:
            return sentences
        if sentences:
            self._first_pending = False
            return [*self._cut(sentences[0]), *sentences[1:]]
        self._seen += delta
        if (head := self._head(self._seen)) is None:
            return []
        self._first_pending = False
        # Nothing has left the splitter yet, so its buffer is exactly what was seen: restart it after the cut.
        self._splitter = SentenceSplitter(self.max_chars, self.max_words)
        return [" ".join(head.split()), *self._splitter.feed(self._seen[len(head) :])]

    def flush(self) -> list[str]:
        sentences = self._splitter.flush()
        if self._first_pending and sentences:
            sentences = [*self._cut(sentences[0]), *sentences[1:]]
        self._first_pending = False
        return sentences

    def _head(self, text: str) -> str | None:
        """The text up to the first clause mark with enough words before it, if there is one."""
        for match in _COMMA.finditer(text):
            if len(text[: match.end()].split()) >= self.first_cut_words:
                return text[: match.end()]
        return None

    def _cut(self, sentence: str) -> list[str]:
        head = self._head(sentence)
        return [sentence] if head is None else [head, sentence[len(head) :].strip()]
