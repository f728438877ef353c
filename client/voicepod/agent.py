"""The voice chain: spoken turns through STT, LLM and TTS endpoints, with the stages overlapped.

:meth:`VoiceAgent.respond` answers the user's audio with a :class:`~voicepod.reply.Reply` (its events: the
transcript, the reply as written, its audio in sentence order); :meth:`VoiceAgent.say` speaks a fixed text in the
same voice. Barge-in cancels the in-flight jobs on their endpoints and keeps in the history only what the listener
got to hear.
"""

from __future__ import annotations

import base64
from typing import Any

from .aggregator import FINISH_SENTENCE_WITHIN
from .endpoint import Endpoint
from .events import Audio, Done, Event, ReplyText, SentenceEnd, StageTiming, Transcript, TurnMetrics
from .reply import Reply, Speech

__all__ = [
    "VoiceAgent", "Reply", "Speech", "Transcript", "ReplyText", "Audio", "SentenceEnd", "StageTiming",
    "TurnMetrics", "Done", "Event", "DEFAULT_SYSTEM_PROMPT", "VOICE_MAX_TOKENS", "DEFAULT_STT_OPTIONS",
    "BASE_MODEL_PRIMER",
]

# Measured on SmolLM2-135M-Instruct (benchmarks/assistant.py, docs/benchmarks.md): "Answer in one or two short
# sentences." let most everyday answers run past a 60-token reply cap; naming a word limit keeps them whole.
DEFAULT_SYSTEM_PROMPT = "Answer in one short sentence of at most 20 words."

# What a caller will listen to: about 45 words, 15-20 s of speech. A longer answer is a monologue on a call,
# and a small model that runs on would otherwise speak for minutes.
VOICE_MAX_TOKENS = 60

# A turn waits for the whole transcript and has no use for segment times: decoding text tokens only took
# 0.35 s against 0.39 s on a 1.6 s question (tiny.en, beam 5, 2 CPU cores), with the same accuracy on our
# spoken test sentences. Greedy decoding (beam_size 1) is faster still but misheard more of them.
DEFAULT_STT_OPTIONS: dict[str, Any] = {"without_timestamps": True}

# An earlier exchange to start a history with when the LLM is a base model (like Gemma 3 270M base, the other
# embedded LLM, loaded with MODEL_DIR): base models copy the shape of what came before, so this shows them a
# spoken answer of a few sentences. The default embedded LLM is chat-tuned and needs none.
BASE_MODEL_PRIMER = [
    {"role": "user", "content": "Tell me about London."},
    {"role": "assistant", "content": "London is the capital of England. It stands on the river Thames. "
                                     "Millions of people visit it every year."},
]


class VoiceAgent:
    """A voice agent over three endpoints.

    ``system_prompt``: the LLM's instructions. ``voice``: a TTS voice (the worker's default when None).
    ``audio_format``: ``pcm16`` or ``mulaw`` (8 kHz telephony); ``sample_rate``: output rate (the voice's own
    when None). ``stt_options``: extra STT input (``beam_size``, ``initial_prompt``, ``hotwords``...), over
    :data:`DEFAULT_STT_OPTIONS` (left out when ``word_timestamps`` is asked for). ``llm_options``: extra LLM
    input (``max_tokens``, default :data:`VOICE_MAX_TOKENS`; ``finish_sentence_within``, tokens past it to finish
    the sentence in progress, default :data:`~voicepod.aggregator.FINISH_SENTENCE_WITHIN`, a sentence still
    unfinished is not spoken; ``temperature``, ``stop``, ``seed``).
    ``first_cut_words``: see :class:`~voicepod.aggregator.SentenceAggregator`. ``history``: earlier turns as
    ``{"role", "content"}`` dicts; each turn appends to it. ``max_history``: the most messages of it a turn
    keeps (the oldest go first; None: all), so a long conversation stays within the LLM's context and its
    memory bounded. ``confirm_playback``: a sentence counts as heard only once the reply's
    :meth:`~voicepod.reply.Reply.played` says so, not when its audio is yielded (on a phone line, audio handed
    over is only audio sent: the player's marks say what played).
    """

    def __init__(
        self,
        stt: Endpoint,
        llm: Endpoint,
        tts: Endpoint,
        *,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        voice: str | None = None,
        audio_format: str = "pcm16",
        sample_rate: int | None = None,
        language: str | None = None,
        stt_options: dict[str, Any] | None = None,
        llm_options: dict[str, Any] | None = None,
        first_cut_words: int = 5,
        history: list[dict[str, str]] | None = None,
        max_history: int | None = None,
        confirm_playback: bool = False,
    ):
        if max_history is not None and max_history < 0:
            raise ValueError("max_history must be 0 or more (None: keep every message)")
        if audio_format not in ("pcm16", "mulaw"):
            raise ValueError("audio_format must be 'pcm16' or 'mulaw' (a stream of sentences has no one header)")
        self.stt, self.llm, self.tts = stt, llm, tts
        self.system_prompt = system_prompt
        self.voice = voice
        self.audio_format = audio_format
        self.sample_rate = sample_rate
        self.language = language
        stt_options = stt_options or {}
        # Word times need the timestamps the default leaves out (the STT worker refuses the two together).
        defaults = {} if stt_options.get("word_timestamps") else DEFAULT_STT_OPTIONS
        self.stt_options = {**defaults, **stt_options}
        self.llm_options = {"max_tokens": VOICE_MAX_TOKENS, "finish_sentence_within": FINISH_SENTENCE_WITHIN,
                            "temperature": 0.7, **(llm_options or {})}
        self.first_cut_words = first_cut_words
        self.history: list[dict[str, str]] = list(history or [])
        self.max_history = max_history
        self.confirm_playback = confirm_playback
        self._replies: set[Reply] = set()  # the replies running now (each adds itself), for interrupt()

    async def interrupt(self) -> None:
        """Barge-in: stop the replies in progress; their jobs are cancelled on their endpoints. (Over a reply
        that has ended but still plays, interrupt the reply itself: :meth:`Reply.interrupt`.)"""
        for reply in list(self._replies):
            await reply.interrupt()

    def tts_input(self, text: str) -> dict[str, Any]:
        """The TTS job input that speaks ``text`` in this agent's voice, format and rate."""
        payload: dict[str, Any] = {"text": text, "format": self.audio_format}
        if self.voice:
            payload["voice"] = self.voice
        if self.sample_rate:
            payload["sample_rate"] = self.sample_rate
        return payload

    def stt_input(self, audio: bytes, audio_format: str | None = None, sample_rate: int | None = None
                  ) -> dict[str, Any]:
        """The STT job input that transcribes ``audio`` with this agent's options (``audio_format`` and
        ``sample_rate`` as for :meth:`respond`)."""
        payload: dict[str, Any] = {"audio_base64": base64.b64encode(audio).decode(), **self.stt_options}
        if audio_format:
            payload["audio_format"] = audio_format
        if sample_rate:
            payload["sample_rate"] = sample_rate
        if self.language:
            payload["language"] = self.language
        return payload

    def respond(
        self,
        audio: bytes,
        history: list[dict[str, str]] | None = None,
        *,
        audio_format: str | None = None,
        sample_rate: int | None = None,
    ) -> Reply:
        """Answer the user's ``audio``: a :class:`~voicepod.reply.Reply` whose iteration runs the turn and yields
        its events, ending with :class:`TurnMetrics` and :class:`Done`.

        ``audio``: a file (wav, mp3, ogg...) or, with ``audio_format`` (``pcm16``/``mulaw``) and
        ``sample_rate``, raw telephony audio. ``history`` replaces the agent's history for this turn.
        Errors of any stage raise the client's typed exceptions (``JobFailed``...), after the other jobs of
        the turn have been cancelled. Closing the iteration early counts as an interruption.
        """
        if history is not None:
            self.history = list(history)
        if self.max_history is not None:
            # Trimmed before the turn, not after: a turn taken back out (Reply.retract) leaves the history the
            # LLM would have seen without it.
            del self.history[:max(0, len(self.history) - self.max_history)]
        return Reply(self, self.stt_input(audio, audio_format, sample_rate))

    def say(self, text: str, *, remember: bool = False) -> Speech:
        """Speak ``text`` (a greeting, an apology) in this agent's voice: a :class:`~voicepod.reply.Speech` to
        iterate for its audio. ``remember``: add it to the history once it has played out (``Speech.played``)."""
        return Speech(self, text, remember)
