"""The workers voicepod deploys, in one place: their names, what they do, the extra their image installs.

Deploy, serve-local's harness, benchmarks and tests read this list instead of spelling out ``("stt", "llm",
"tts")``; the commands that run a spoken turn read :data:`CHAIN`. Adding a worker starts here
(docs/architecture.md has the recipe).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class WorkerInfo:
    """``name``: the stage, its endpoint's name in serve-local and its folder under ``workers/``; ``role``: what
    it does, for help texts; ``extra``: the ``voicepod[EXTRA]`` holding the packages its image installs."""

    name: str
    role: str
    extra: str

    @property
    def dockerfile(self) -> str:
        return f"Dockerfile.{self.name}"

    def handler(self, root: Path | None = None) -> Path:
        """Its handler file in the checkout at ``root`` (this client's own checkout by default)."""
        return (root or checkout_root()) / "workers" / self.name / "handler.py"


# In the order of a turn: the audio in, the reply written, the reply spoken.
WORKERS = (
    WorkerInfo("stt", "speech-to-text", "stt"),
    WorkerInfo("llm", "language model", "llm"),
    WorkerInfo("tts", "text-to-speech", "tts"),
)
NAMES = tuple(worker.name for worker in WORKERS)
# The stages of one spoken turn, in order: the endpoints VoiceAgent(stt, llm, tts) chains, which `voicepod turn`,
# `demo`, `phone` and `cost` ask for. A worker added to WORKERS is deployed, baked and served locally, but joins a
# turn only once the agent knows what to do with it.
CHAIN = ("stt", "llm", "tts")


def checkout_root() -> Path:
    # workers/ is deployed as images, not installed with the client: local runs use the checkout's.
    return Path(__file__).resolve().parents[2]


def handlers(root: Path | None = None) -> dict[str, Path]:
    """Every worker's handler file, by name, in the checkout at ``root`` (this client's own by default)."""
    return {worker.name: worker.handler(root) for worker in WORKERS}
