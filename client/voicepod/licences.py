"""The licences of the models voicepod's workers load by default or by name: what ``voicepod deploy`` prints for
each image it deploys, and what the TTS worker says in its log when it loads a voice that may not be sold with.

Read from each model's card (2026-12): a model not listed here is printed as unknown, to be checked by whoever
ships it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Licence:
    """``name``: the licence as its model card gives it; ``commercial``: whether a business may ship it."""

    name: str
    commercial: bool


# By the names the images and workers use: a faster-whisper size or a hub id, and the embedded models' names.
MODEL_LICENCES = {
    # STT
    "large-v3-turbo": Licence("MIT", True),
    "openai/whisper-large-v3-turbo": Licence("MIT", True),
    "tiny.en": Licence("MIT", True),
    # LLM
    "Qwen/Qwen2.5-1.5B-Instruct": Licence("Apache-2.0", True),
    "smollm2-135m-instruct": Licence("Apache-2.0", True),
    "HuggingFaceTB/SmolLM2-135M-Instruct": Licence("Apache-2.0", True),
    "gemma-3-270m": Licence("Gemma Terms of Use (with its prohibited uses)", True),
    # TTS
    "en_US-joe-medium": Licence("CC0-1.0 (the voice; its package MIT)", True),
    "facebook/mms-tts-eng": Licence("CC-BY-NC-4.0", False),
}
# What each worker's image bakes when built without MODEL_NAME (its Dockerfile's default; tests/test_deploy.py
# checks they agree).
IMAGE_DEFAULT_MODELS = {"stt": "large-v3-turbo", "llm": "Qwen/Qwen2.5-1.5B-Instruct", "tts": "en_US-joe-medium"}


def licence_of(model: str) -> Licence | None:
    """The licence of ``model`` (a hub id, a faster-whisper size, an embedded model's name), if known here."""
    return MODEL_LICENCES.get(model) or MODEL_LICENCES.get(model.rsplit("/", 1)[-1])


def describe(model: str) -> str:
    """``model`` and its licence in one line, saying so when it may not be used commercially or is unknown."""
    licence = licence_of(model)
    if licence is None:
        return f"{model}: licence not known to voicepod; read its model card before shipping it"
    if not licence.commercial:
        return f"{model}: {licence.name}, NOT for commercial use"
    return f"{model}: {licence.name}"
