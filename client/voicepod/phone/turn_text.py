"""Text evidence for the end of a turn: does the transcript of the caller's words so far read as unfinished?

At the caller's first pause the speculative turn already has a transcript of the utterance so far; "I'd like to book
a table for" cannot be a whole request, whatever the voice did. :func:`read_transcript` looks at how it ends:
Whisper's ellipsis (it writes "..." where speech trails off mid-clause), or a last word that English does not end
a sentence on (an article, a possessive, a conjunction, "to", a filler; a preposition or an auxiliary, with less
confidence, and none after a wh-word or a subject, since "Who should I talk to?", "Do you know where the station
is?" and "Yes, I can." are whole).

Plain word lists, written here: the question is about a dozen closed classes of English function words, which a
list states exactly and a reader can check, where a tagger (spaCy, NLTK) would be a large dependency that still
needs these rules on top, and a language model a second model per decision. Whisper often rounds a fragment off
into a sentence ("...my appointment to" heard as "...my appointment too."): the text misses those and the audio
model has to catch them, so the text only ever vetoes an end (:mod:`voicepod.phone.end_of_turn`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Confidence that a transcript ending on a word of this class is unfinished. Articles and possessives want a noun
# next; conjunctions and "to" a clause or a verb; fillers say the caller is still finding words. The weaker
# classes can end a sentence in some turns: prepositions in questions ("Who should I talk to?"), auxiliaries and
# subject pronouns in short answers ("Yes, I can.").
_CLASSES: dict[str, tuple[float, frozenset[str]]] = {
    "article or possessive": (0.95, frozenset(
        "a an the my your our their its every each".split())),
    "conjunction": (0.9, frozenset(
        "and or but nor because cause 'cause if unless although whether than".split())),
    "infinitive to": (0.9, frozenset({"to"})),
    "filler": (0.9, frozenset("um umm uh uhh er erm".split())),
    "preposition": (0.8, frozenset(
        "for of with at in on from about into onto by near after before between through without towards toward "
        "until during per via under over around across against among behind beside".split())),
    "auxiliary or copula": (0.75, frozenset(
        "is are was were am be been being will would can could should shall must might have has do does "
        "i'm you're we're they're it's that's there's i'd i'll we'll".split())),
    "subject pronoun": (0.8, frozenset("i we they he she".split())),
}
_WH_WORDS = frozenset("what what's who who's whom where where's which how how's".split())
_SUBJECTS = frozenset("i you we they he she it that there".split())
_TRAILING_OFF = re.compile(r"(\.\.\.|…|--|—|-)\s*$")
_ANNOTATION = re.compile(r"\[[^\]]*\]|\([^)]*\)|\*[^*]*\*")  # Whisper's "[BLANK_AUDIO]", "(coughs)", "*sighs*"
_WORD = re.compile(r"[a-z0-9]+(?:['’-][a-z0-9]+)*")


def words(text: str) -> list[str]:
    """The spoken words of a transcript: lower case, apostrophes and hyphens kept ("i'd", "uh-huh"),
    punctuation and Whisper's non-speech annotations ("[BLANK_AUDIO]", "(coughs)") dropped."""
    return _WORD.findall(_ANNOTATION.sub(" ", text).lower().replace("’", "'"))


@dataclass(frozen=True)
class TextEvidence:
    """What a transcript says about the end of the turn.

    ``unfinished``: it reads as an utterance that goes on. ``confidence``: how sure that verdict is, 0 to 1 (a
    rank from the word class that decided it, not a calibrated probability; 0 when there are no words).
    ``reason``: which rule decided, for the call record and for tuning.
    """

    unfinished: bool
    confidence: float
    reason: str


def read_transcript(text: str) -> TextEvidence:
    """Whether ``text`` (a transcript of the caller's turn so far, as Whisper writes it) reads as unfinished.

    Args:
        text: The transcript, punctuation included: Whisper's trailing "..." and "?" are evidence.
    """
    spoken = words(text)
    if not spoken:
        return TextEvidence(False, 0.0, "no words")
    stripped = _ANNOTATION.sub(" ", text).strip()
    if _TRAILING_OFF.search(stripped):
        return TextEvidence(True, 0.9, "ends trailing off ('...')")
    last = spoken[-1]
    # A wh-word earlier makes a question or a clause whose verb or preposition may end it: "Do you know where the
    # station is?", "Who should I talk to?".
    wh_clause = any(w in _WH_WORDS for w in spoken[:-1])
    for name, (confidence, members) in _CLASSES.items():
        if last not in members:
            continue
        before = spoken[-2] if len(spoken) > 1 else ""
        if name == "auxiliary or copula" and (before in _SUBJECTS or wh_clause):
            continue  # "Yes, I can." "Do you know where the pharmacy is?": whole
        if name in ("preposition", "infinitive to") and wh_clause:
            return TextEvidence(True, 0.55, f"a wh-clause ending on '{last}' (may be stranded: 'Who is it for?')")
        return TextEvidence(True, confidence, f"ends on the {name} '{last}'")
    if stripped.endswith((".", "?", "!")):
        # Whisper punctuates fragments too ("I need a taxi."), so a full stop is weak evidence.
        return TextEvidence(False, 0.6, "ends a sentence")
    return TextEvidence(False, 0.3, "ends on a word that can end a sentence")
