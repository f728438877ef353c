"""docs/workers.md tells the truth about what the workers read and take: every setting a worker reads from its
environment is in its settings table, every field of a job input in its inputs tables."""

from __future__ import annotations

import re

import pytest
from voicepod import protocol

from .conftest import REPO

WORKERS_DOC = (REPO / "docs" / "workers.md").read_text()


def _settings_read_by_workers() -> set[str]:
    names = set()
    for path in (REPO / "workers").rglob("*.py"):
        text = path.read_text()
        names |= set(re.findall(r"os\.environ(?:\.get)?[\(\[]\s*\"([A-Z][A-Z0-9_]+)\"", text))
        # Names kept in a constant first ("ALLOW_PRIVATE_ENV = ...").
        for constant in re.findall(r"os\.environ(?:\.get)?[\(\[]\s*([A-Z][A-Z0-9_]+)[,\)\]]", text):
            names |= set(re.findall(rf"^{constant} = \"([A-Z][A-Z0-9_]+)\"", text, re.M))
    return names - {"HF_HUB_OFFLINE"}  # set by the images, not a voicepod setting


def test_every_setting_a_worker_reads_is_in_the_workers_page():
    table = WORKERS_DOC.split("## Worker settings", 1)[1].split("\n## ", 1)[0]
    read = _settings_read_by_workers()
    assert {"MODEL_DIR", "MAX_CONCURRENCY", "LOG_LEVEL", "MODEL_CACHE_DIR"} <= read
    missing = sorted(name for name in read if f"`{name}`" not in table)
    assert not missing, f"settings the workers read but the README's table lacks: {missing}"


@pytest.mark.parametrize("model", [protocol.TranscribeRequest, protocol.LLMRequest, protocol.SpeechRequest])
def test_every_input_field_is_in_the_workers_page(model):
    section = WORKERS_DOC.split("### Worker inputs and outputs", 1)[1].split("\n## ", 1)[0]
    table = section.split(f"`voicepod.protocol.{model.__name__}`", 1)[1].split("\n\n**", 1)[0]
    missing = [name for name in model.model_fields if f"| `{name}` |" not in table]
    assert not missing, f"{model.__name__} fields missing from docs/workers.md: {missing}"
