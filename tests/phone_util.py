"""Test helpers for the phone server: a ``voicepod phone`` subprocess and questions as mu-law audio."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from voicepod.audio import MULAW_RATE, mulaw_encode, read_wav
from voicepod.local.process import free_port

from .speech import espeak_wav


def spoken_mulaw(text: str, rate: int = 160) -> bytes:
    """``text`` spoken by espeak-ng, as mu-law 8 kHz: what a caller's phone sends."""
    samples, _ = read_wav(espeak_wav(text, rate=rate, sample_rate=MULAW_RATE))
    return mulaw_encode(samples)


def voiced(mulaw: bytes, floor: float = 0.01) -> bytes:
    """``mulaw`` without its trailing silence (espeak-ng ends every clip with about 0.35 s of it): its last
    byte is the last voiced sample."""
    from voicepod.audio import mulaw_decode

    loud = (abs(mulaw_decode(mulaw)) > floor).nonzero()[0]
    return mulaw[:int(loud[-1]) + 1] if len(loud) else b""


class PhoneServer:
    """``voicepod phone`` as a child process on a free port, records in ``transcripts``.

    ``args``: extra command-line arguments; ``env``: extra environment (``TWILIO_AUTH_TOKEN``...).
    """

    def __init__(self, base_url: str, args: list[str] | None = None, env: dict[str, str] | None = None):
        self.port = free_port()
        self.transcripts = Path(tempfile.mkdtemp(prefix="voicepod-calls-"))
        self.args = args or []
        self.env = env or {}
        self.base_url = base_url
        fd, log_path = tempfile.mkstemp(prefix="voicepod-phone-", suffix=".log")
        os.close(fd)
        self.log_path = Path(log_path)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def media_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/media"

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def __enter__(self) -> PhoneServer:
        env = {**os.environ, **self.env}
        if "TWILIO_AUTH_TOKEN" not in self.env:
            env.pop("TWILIO_AUTH_TOKEN", None)
        command = [sys.executable, "-m", "voicepod.cli", "phone", "--port", str(self.port),
                   "--base-url", self.base_url, "--stt", "stt", "--llm", "llm", "--tts", "tts",
                   "--transcripts", str(self.transcripts), *self.args]
        if "--drain" not in self.args:  # stopping it at the end of a test ends its calls at once, as before --drain
            command += ["--drain", "0"]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"voicepod phone exited:\n{self.logs()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.__exit__()
                raise TimeoutError(f"voicepod phone not up:\n{self.logs()[-3000:]}")
            time.sleep(0.2)

    def __exit__(self, *exc_info: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def active_calls(self) -> int:
        return httpx.get(f"{self.url}/health", timeout=5).json()["calls"]

    async def reply_over(self, timeout: float) -> None:
        """Wait until no call has a reply being made or still playing (every mark back)."""
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=5) as client:
            while (await client.get(f"{self.url}/health")).json()["replying"]:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"a reply still going after {timeout} s")
                await asyncio.sleep(0.2)

    def record(self, call_sid: str, timeout: float = 30.0) -> dict:
        """The call record ``<callSid>.json``, waiting for the call to end."""
        path = self.transcripts / f"{call_sid}.json"
        deadline = time.monotonic() + timeout
        while not path.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"no record for {call_sid}:\n{self.logs()[-3000:]}")
            time.sleep(0.1)
        return json.loads(path.read_text())


async def ask(phone: PhoneServer, audio: bytes) -> dict:
    """One call: say ``audio``, wait for the reply's first audio after it and for the whole reply to play out;
    returns the call record."""
    from voicepod.phone.caller import SimulatedCaller

    async with SimulatedCaller(phone.media_url) as caller:
        await caller.say(audio)
        await caller.wait_for_audio(caller.speech_ended_at, 180)
        await phone.reply_over(300)
    return phone.record(caller.call_sid)
