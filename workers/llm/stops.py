"""Cut streamed text at the first stop string, without ever letting part of a stop string out.

Text arrives in pieces that split anywhere (one token may end with ``"\\nUs"`` and the next start with
``"er:"``), so any tail that could still grow into a stop string is held back until the next piece shows
whether it does. transformers' own ``stop_strings`` ends generation but does not trim or hold the streamed
text, hence this small matcher.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from voicepod.sentences import ends_sentence


class StopMatcher:
    """Feed text pieces in order; get back the text that is safe to emit.

    ``stops`` are the strings that end the completion (empty strings are ignored). The completion ends at the
    first character where some stop string is complete; the text is cut where that stop begins (the earliest
    begin, if several complete there). After that :attr:`stopped` is true and the rest is dropped.
    """

    def __init__(self, stops: Iterable[str]):
        self.stops = tuple(stop for stop in stops if stop)
        self.stopped = False
        self._held = ""

    def feed(self, piece: str) -> str:
        """Take the next piece of text; return the part of it (and of earlier held text) now safe to emit."""
        if self.stopped:
            return ""
        text = self._held + piece
        # Generation ends where a stop string first completes, as if the text had come one character at a time;
        # so the cut does not depend on how the text was split into tokens (see the class docstring).
        found = [(index + len(stop), index) for stop in self.stops if (index := text.find(stop)) >= 0]
        if found:
            self.stopped = True
            self._held = ""
            return text[: min(found)[1]]
        keep = self._longest_partial_stop(text)
        self._held = text[len(text) - keep :]
        return text[: len(text) - keep]

    def flush(self) -> str:
        """The generation ended: release the held text (it never became a stop string)."""
        held, self._held = self._held, ""
        return "" if self.stopped else held

    def _longest_partial_stop(self, text: str) -> int:
        # Length of the longest suffix of `text` that is a proper prefix of some stop string.
        best = 0
        for stop in self.stops:
            for length in range(min(len(stop) - 1, len(text)), best, -1):
                if text.endswith(stop[:length]):
                    best = length
                    break
        return best


def contains_stop(text: str, stops: Iterable[str]) -> bool:
    """Whether any non-empty stop string occurs in ``text``."""
    return any(stop and stop in text for stop in stops)


# Tokens decoded to judge a sentence end: enough for the whole line of a list item, whose start says it is one.
_SENTENCE_WINDOW = 64


def sentence_ended(tokenizer: Any, new_ids: Sequence[int], after: int | None) -> bool:
    """Whether a generation allowed to finish its sentence past ``after`` tokens should end now: it has written
    ``after`` or more, and its text ends where a sentence or list item does (:func:`voicepod.sentences.ends_sentence`,
    the rule the client's aggregator keeps or drops a last sentence by). ``after`` None: never."""
    if after is None or len(new_ids) < after:
        return False
    return ends_sentence(tokenizer.decode(list(new_ids[-_SENTENCE_WINDOW:]), skip_special_tokens=True))
