"""Speculative turns: the caller's turn started at a short pause, before the end-of-turn silence has passed.

The turn detector reports a :class:`~voicepod.phone.vad.Pause` ``pause_s`` into a silence and ends the turn
``end_silence_s`` into it. At the pause the call starts the turn as it would at the end (the same
``VoiceAgent.respond``, the same turn code), so its STT job, and after it the LLM's first sentence and its
speech, are made while the caller is still being listened to. Nothing of it reaches the caller until the turn is
confirmed: its audio and marks wait.

- The caller says nothing more: the detector's :class:`~voicepod.phone.vad.Utterance` carries the same audio as
  the pause (it ends where the pause was); the speculation *is* the turn, and its held audio goes out at once.
- The caller speaks again (:class:`~voicepod.phone.vad.Resumed`): the speculative turn is cancelled, its jobs
  with it (CANCELLED on their endpoints), and taken out of the agent's history; the turn is made again on the
  whole utterance when it ends. The cancelled jobs' ids go into the call record: they were billed for nothing.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from .vad import Utterance


@dataclass
class Speculation:
    """One speculative turn. ``audio``: the turn so far, at the pause. ``playback``: the turn's playback
    (held). ``task``: the turn's task."""

    audio: bytes
    playback: Any
    task: asyncio.Task[None]

    def matches(self, utterance: Utterance) -> bool:
        """Whether ``utterance`` is the speculated turn: the caller said nothing after the pause."""
        return not utterance.cut and utterance.audio == self.audio
