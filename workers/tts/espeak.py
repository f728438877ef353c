"""IPA phonemes from the ``espeak-ng`` program, in the form Piper voices were trained on.

espeak-ng runs as a subprocess (not through a binding) so that no GPL code is linked into the worker. Piper
asks espeak-ng's library for one clause at a time and puts each clause's closing punctuation back into the
phoneme string (the voices learned pauses and intonation from it); the command line drops punctuation, so
the sentence is cut into clauses here and each clause's punctuation is appended the same way.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import unicodedata

ESPEAK = "espeak-ng"
_TIMEOUT_S = 30

# A clause ends at one of these marks when whitespace or the end follows ("1,000" and "3.5" stay whole).
# Periods inside a sentence are abbreviations ("Dr."), left in the text for espeak-ng to expand.
_CLAUSE_END = re.compile(r"([,;:]|[.!?…]+)[\"'”’)\]]*(?:\s+|$)")
_FINAL_MARKS = {"!": "!", "?": "?"}


def check_espeak() -> str:
    """Return the path of the espeak-ng program, or raise ``RuntimeError`` if it is not installed."""
    path = shutil.which(ESPEAK)
    if path is None:
        raise RuntimeError("the espeak-ng program is not installed (Debian/Ubuntu: apt-get install espeak-ng)")
    return path


def _clauses(sentence: str) -> list[tuple[str, str]]:
    """``(text, mark)`` pairs: the sentence cut after each clause mark that whitespace or the end follows."""
    pieces: list[tuple[str, str]] = []
    start = 0
    for match in _CLAUSE_END.finditer(sentence):
        marks = match.group(1)
        at_end = match.end() == len(sentence)
        if marks[0] in ".…" and not at_end:
            continue  # an abbreviation's period or an ellipsis mid-sentence: espeak-ng reads it itself
        mark = marks if marks in ",;:" else _FINAL_MARKS.get(marks[-1], ".")
        pieces.append((sentence[start : match.start()], mark))
        start = match.end()
    if sentence[start:].strip():
        pieces.append((sentence[start:], ""))
    return [(text, mark) for text, mark in pieces if text.strip()]


def _ipa(text: str, voice: str) -> str:
    # Text goes through stdin so that a leading "-" is never taken for an option. espeak-ng prints one line
    # per clause it finds itself (an abbreviation's period makes one): those are parts of our clause.
    result = subprocess.run(
        [ESPEAK, "-q", "--ipa", "-v", voice],
        input=text,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=_TIMEOUT_S,
        check=True,
    )
    return " ".join(line.strip() for line in result.stdout.splitlines() if line.strip())


def phonemize(sentence: str, voice: str) -> str:
    """IPA phonemes of one sentence, with clause punctuation, NFD-normalized as Piper's id maps expect.

    Args:
        sentence: Text of one sentence (several work, but Piper voices are trained on one at a time).
        voice: espeak-ng voice name, e.g. ``en-us`` (a Piper voice's ``espeak.voice``).
    """
    parts = [f"{_ipa(text, voice)}{mark}" for text, mark in _clauses(sentence)]
    return unicodedata.normalize("NFD", " ".join(p for p in parts if p))
