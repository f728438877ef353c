"""Cut a streamed LLM reply into speakable pieces, with an early first cut so the first sound comes sooner, and
drop an unfinished sentence where a reply was cut at its token cap.

The cap, in two halves. The LLM worker cannot take back text it has streamed, so it can only help a sentence
finish: with ``finish_sentence_within`` it writes on past ``max_tokens`` until a sentence or list item ends,
within that many more tokens. Whatever it still cut short is dropped here, where the reply's sentences are
aggregated and nothing of the unfinished sentence has been spoken yet: ``flush(cut_off=True)``.
"""

from __future__ import annotations

import re

from .sentences import DEFAULT_MAX_CHARS, SentenceSplitter, ends_sentence

_COMMA = re.compile(r"[,;:](?=\s)")


# A reply that never ends a sentence must still be heard: the first piece goes to speech after at most this
# many words (about 4 s of speech, written in well under a second), later ones after this many (the first
# piece's playback covers their writing).
FIRST_MAX_WORDS = 10
MAX_WORDS = 25

# Tokens a capped voice reply may run past its cap to finish the sentence in progress (the LLM input
# ``finish_sentence_within``). On the embedded SmolLM2, questions that invite lists at a 60-token cap: see
# docs/benchmarks.md ("Replies at the cap") for how many replies each allowance lets finish.
FINISH_SENTENCE_WITHIN = 20


class SentenceAggregator:
    """Feed reply deltas; get back finished sentences to speak, in order.

    The rules are :class:`~voicepod.sentences.SentenceSplitter`'s (the TTS worker's), with two additions for
    a voice that must not wait for a full stop. The first piece may end at a comma, semicolon or colon once it
    has ``first_cut_words`` words, because on a voice call the first sound matters most and a clause is a
    natural place to breathe (``first_cut_words=0`` turns that off). And no piece waits for a sentence end
    past ``first_max_words`` words (the first) or ``max_words`` (the others): it is cut at its last clause
    mark, else at a word boundary (``None`` turns the bound off). A piece released by those two rules is spoken
    even if the reply is cut at its cap later: only what is still held can be dropped.
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
        self._released = False  # some piece has been handed out

    @property
    def pending(self) -> str:
        """The reply text fed and not yet handed out."""
        return self._splitter.pending

    def feed(self, delta: str) -> list[str]:
        """Add a delta of the reply; return the pieces it completed."""
        return self._out(self._feed(delta))

    def flush(self, cut_off: bool = False) -> list[str]:
        """The reply ended: return what is still held.

        Args:
            cut_off: The reply was cut at its token cap (an LLM ``finish_reason`` of ``"length"``). Then a last
                sentence that did not end (:func:`~voicepod.sentences.ends_sentence`) is dropped, unless nothing
                at all has been handed out: a fragment is worse than stopping a sentence early, silence worse
                than a fragment.
        """
        if cut_off and self._released and not ends_sentence(self._splitter.pending):
            self._splitter = SentenceSplitter(self.max_chars, self.max_words)
            return []
        sentences = self._splitter.flush()
        if self._first_pending and sentences:
            sentences = [*self._cut(sentences[0]), *sentences[1:]]
        self._first_pending = False
        return self._out(sentences)

    def _feed(self, delta: str) -> list[str]:
        sentences = self._splitter.feed(delta)
        if sentences:
            self._splitter.max_words = self.max_words  # the first piece is out: the later bound applies
        if not self._first_pending:
            return sentences
        if sentences:
            self._first_pending = False
            return [*self._cut(sentences[0]), *sentences[1:]]
        if (head := self._head(self._splitter.pending)) is None:
            return []
        # Nothing has left the splitter yet, so its pending text is all that was fed: the head comes out of it.
        self._first_pending = False
        self._splitter.max_words = self.max_words
        return [self._splitter.take(len(head)), *self._splitter.feed("")]

    def _out(self, pieces: list[str]) -> list[str]:
        self._released |= bool(pieces)
        return pieces

    def _head(self, text: str) -> str | None:
        """The text up to the first clause mark with enough words before it, if there is one."""
        for match in _COMMA.finditer(text):
            if len(text[: match.end()].split()) >= self.first_cut_words:
                return text[: match.end()]
        return None

    def _cut(self, sentence: str) -> list[str]:
        head = self._head(sentence)
        return [sentence] if head is None else [head, sentence[len(head) :].strip()]
