"""The browser page of ``voicepod phone``, in a real headless Chromium (Debian's ``chromium``, driven by Selenium
through Debian's ``chromium-driver``): Chromium's fake microphone plays an espeak-ng question, the page streams
it to the server, real STT, LLM and TTS workers under serve-local answer, and the page plays the reply.

What is asserted is read from the page (``window.voicepodPage`` and what it shows) and from the call's record.
Chromium loops the microphone file, so each file ends in silence long enough for the test to finish before the
question comes round again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import websockets
from voicepod import registry
from voicepod.audio import float_to_pcm16, pcm16_to_float, read_wav, write_wav
from voicepod.local import LocalServer
from voicepod.local.process import free_port
from voicepod.phone.browser import BrowserLine
from voicepod.phone.server import PAGE_DIR
from voicepod.phone.vad import TurnDetector, TurnSettings, Utterance

from .conftest import REPO
from .phone_util import PhoneServer
from .speech import espeak_wav, wer

pytestmark = pytest.mark.skipif(not (shutil.which("chromium") and shutil.which("chromedriver")),
                                reason="needs Debian's chromium and chromium-driver (make setup installs them)")

RATE = 16000
# Questions Whisper tiny.en hears reliably from espeak-ng; the tea question gets a reply of several sentences.
TEA = "How do I make a cup of tea?"
STATION = "Where is the nearest train station?"
PHONE_ARGS = ["--greeting", "", "--system-prompt", "Answer in four or five sentences.", "--max-tokens", "60"]
# `VOICEPOD_PAGE_SCREENSHOT=docs/page.png` keeps the screenshot of the answered question (the README's).
SCREENSHOT = os.environ.get("VOICEPOD_PAGE_SCREENSHOT")
UNREACHABLE = "http://127.0.0.1:9/v2"  # for tests that never reach a worker


@pytest.fixture(scope="module")
def server():
    with LocalServer(registry.handlers(REPO), ready_timeout_s=300) as srv:
        yield srv


@pytest.fixture(scope="module")
def phone(server):
    with PhoneServer(server.base_url, PHONE_ARGS) as srv:
        yield srv


def speech(text: str) -> np.ndarray:
    samples, rate = read_wav(espeak_wav(text, sample_rate=RATE))
    assert rate == RATE
    return samples


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), dtype=np.float32)


def microphone(path: Path, *parts: np.ndarray) -> Path:
    path.write_bytes(write_wav(np.concatenate(parts), RATE))
    return path


@contextlib.contextmanager
def chromium(mic: Path, *flags: str, grant: bool = True) -> Iterator:
    """Headless Chromium with ``mic`` as its microphone, which a page gets without asking when ``grant``, and
    is refused otherwise."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # open_page shows the console on failure
    for flag in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=900,640",
                 "--autoplay-policy=no-user-gesture-required", "--use-fake-device-for-media-stream",
                 f"--use-file-for-fake-audio-capture={mic}",
                 "--use-fake-ui-for-media-stream" if grant else "--deny-permission-prompts", *flags]:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    try:
        yield driver
    finally:
        driver.quit()


def open_page(driver, url: str, timeout: float = 30.0) -> None:
    """Load the page and wait until its script has set up ``window.voicepodPage``.

    A CI run once read it right after ``driver.get`` returned and found it undefined (cause unknown: no console
    was kept). A browser error page (``chrome-error://``: the connection failed) gets one more navigation, as a
    person would reload; a page whose script never runs fails here with what the browser saw."""
    driver.get(url)
    deadline = time.monotonic() + timeout
    reloaded = False
    while not driver.execute_script("return window.voicepodPage !== undefined"):
        if not reloaded and driver.execute_script("return document.URL").startswith("chrome-error://"):
            print(f"open_page: the browser showed an error page for {url}; navigating again", file=sys.stderr)
            reloaded = True
            driver.get(url)
            continue
        if time.monotonic() > deadline:
            seen = driver.execute_script(
                "return {readyState: document.readyState, title: document.title, "
                "scripts: [...document.scripts].map(s => s.src), "
                "html: document.documentElement.outerHTML.slice(0, 600)}")
            raise AssertionError(f"the page's script never set window.voicepodPage: {seen}; "
                                 f"console: {driver.get_log('browser')}")
        time.sleep(0.05)


def page(driver) -> dict:
    """A snapshot of ``window.voicepodPage``."""
    return driver.execute_script(
        "const p = window.voicepodPage; return {state: p.state, error: p.error, callSid: p.callSid, "
        "turns: p.turns.map(t => ({...t, latency: {...t.latency}})), samplesPlayed: p.samplesPlayed, "
        "samplesReceived: p.samplesReceived, samplesDropped: p.samplesDropped, clears: p.clears}")


def wait_for(driver, condition, timeout: float, what: str) -> dict:
    """Poll the page until ``condition(snapshot)`` holds; returns that snapshot."""
    deadline = time.monotonic() + timeout
    while True:
        snapshot = page(driver)
        if condition(snapshot):
            return snapshot
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout} s; the page: {snapshot}")
        time.sleep(0.2)


def click_start(driver) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "start").click()


def shown_text(driver, selector: str) -> list[str]:
    # Read in one script, not element by element: the page re-renders a turn as it fills in, and an element
    # found a moment earlier may be gone (Selenium's StaleElementReferenceException, seen in a merged run).
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(e => e.innerText.trim())", selector)


def words(text: str) -> list[str]:
    return [w.strip(".,!?;:\"'").lower() for w in text.split()]


def begins(text: str, start: str) -> bool:
    """Whether ``text``'s words begin with ``start``'s."""
    return words(text)[:len(words(start))] == words(start)


def test_the_turn_detector_takes_a_browsers_pcm16_at_16_khz():
    detector = TurnDetector(TurnSettings(), encoding="pcm16", sample_rate=RATE)
    question = speech(TEA)
    audio = np.concatenate([silence(0.5), question, silence(1.0)])
    pcm = (audio * 32767).astype("<i2").tobytes()
    events = [e for i in range(0, len(pcm), 640) for e in detector.feed(pcm[i:i + 640])]  # 20 ms frames
    [utterance] = [e for e in events if isinstance(e, Utterance)]
    # The question with a little of the silence around it (16-bit samples: two bytes each).
    assert len(question) / RATE < utterance.duration_s < len(question) / RATE + 1.0
    assert utterance.bytes_per_s == 2 * RATE and len(utterance.audio) % 2 == 0
    with pytest.raises(ValueError, match="mu-law 8 kHz or pcm16"):
        TurnDetector(encoding="mulaw", sample_rate=RATE)


def test_a_question_spoken_into_the_page_is_answered_aloud_and_its_latency_shown(phone, tmp_path):
    # A minute of silence after the question: the reply plays out before the file loops.
    mic = microphone(tmp_path / "question.wav", silence(1.0), speech(TEA), silence(60.0))
    with chromium(mic) as driver:
        open_page(driver, f"{phone.url}/")
        assert page(driver)["state"] == "idle"
        click_start(driver)
        wait_for(driver, lambda p: p["state"] == "listening", 30, "listening")
        wait_for(driver, lambda p: p["turns"] and p["state"] in ("thinking", "speaking"), 60, "a turn")
        done = wait_for(driver, lambda p: p["turns"] and p["turns"][0]["latency"].get("total_s") is not None
                        and p["state"] == "listening", 300, "the reply played out")
        [turn] = done["turns"]
        assert wer(TEA, turn["user"]) <= 0.3
        assert turn["reply"] and not turn["interrupted"] and turn["error"] is None
        assert done["samplesPlayed"] == done["samplesReceived"] > 24000 and done["clears"] == 0
        latency = turn["latency"]
        # (Counted from the end of the turn's detection: a turn started early at a pause may have its transcript
        # before it, but never its first audio, held until the end of the turn.)
        assert latency["transcript_s"] < latency["llm_first_token_s"] < latency["first_audio_s"] > 0
        assert turn["mouth_to_ear_s"] > latency["voice_to_voice_s"] > latency["first_audio_s"]
        # What the page shows: the transcript, the reply, the latency with its parts.
        [user] = shown_text(driver, ".turn .user")
        assert turn["user"].strip() in user
        [reply] = shown_text(driver, ".turn .reply")
        assert turn["reply"].strip()[:40] in reply
        [line] = shown_text(driver, ".turn .latency")
        for part in ("mouth-to-ear", "end-of-turn", "STT", "LLM", "TTS", f"{turn['mouth_to_ear_s']:.2f}"):
            assert part in line
        screenshot = tmp_path / "page.png"
        driver.save_screenshot(str(screenshot))
        assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        if SCREENSHOT:
            shutil.copyfile(screenshot, SCREENSHOT)
        click_start(driver)  # stop: the server sends the turns as the call record has them, then closes
        final = wait_for(driver, lambda p: p["state"] == "idle", 30, "idle after stop")
    [turn] = final["turns"]
    # The page echoed every sentence's mark once it had played, so all of the reply counts as heard.
    assert turn["assistant"] and begins(turn["reply"], turn["assistant"])
    record = phone.record(done["callSid"])
    assert record["end_reason"] == "stop" and record["custom_parameters"] == {"from": "browser"}
    [kept] = record["turns"]
    assert (kept["user"], kept["assistant"], kept["reply"]) == (turn["user"], turn["assistant"], turn["reply"])


def test_speaking_over_the_reply_stops_its_playback_at_once(phone, tmp_path):
    # The question, then the next one while the reply plays (its first audio comes 2-7 s after the question on
    # a shared CPU; the reply takes 15 s or so to say), then quiet while the second reply plays.
    mic = microphone(tmp_path / "barge_in.wav", silence(1.0), speech(TEA), silence(10.0), speech(STATION),
                     silence(60.0))
    with chromium(mic) as driver:
        open_page(driver, f"{phone.url}/talk")
        click_start(driver)
        cut = wait_for(driver, lambda p: p["clears"] >= 1 or len(p["turns"]) >= 2, 240, "the server's clear")
        # The reply was playing when the second question began (had it not started yet, there was nothing to
        # clear: the question came too soon for this machine).
        assert cut["clears"] == 1, f"no clear: {cut['turns']}"
        # Playback stopped there and then: nothing is left queued, what had come and not played was dropped
        # (on a loaded CPU the clear can fall between two sentences, with nothing queued: the test below with
        # a scripted server checks a clear in the middle of the audio).
        assert cut["state"] != "speaking"
        assert cut["samplesPlayed"] + cut["samplesDropped"] == cut["samplesReceived"]
        after = wait_for(driver, lambda p: len(p["turns"]) == 2 and p["turns"][1]["user"], 180, "the second turn")
        first, second = after["turns"]
        assert first["interrupted"] and begins(first["reply"], first["assistant"])
        if cut["samplesDropped"]:  # a sentence was cut: it does not count as heard
            assert len(words(first["assistant"])) < len(words(first["reply"]))
        assert wer(STATION, second["user"]) <= 0.3
        assert "interrupted" in shown_text(driver, ".turn .reply")[0]
        click_start(driver)
        final = wait_for(driver, lambda p: p["state"] == "idle", 30, "idle after stop")
    record = phone.record(after["callSid"])
    assert record["turns"][0]["interrupted"] and record["turns"][0]["assistant"] == final["turns"][0]["assistant"]


@contextlib.contextmanager
def scripted_line(script) -> Iterator[str]:
    """The page's files, and ``script`` (an ASGI WebSocket handler) as its ``/talk/ws``: a server whose every
    frame the test chooses. Yields the page's URL."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import FileResponse
    from starlette.routing import Mount, Route, WebSocketRoute
    from starlette.staticfiles import StaticFiles

    async def index(request):
        return FileResponse(PAGE_DIR / "index.html")

    app = Starlette(routes=[Route("/", index), Mount("/page", StaticFiles(directory=PAGE_DIR)),
                            WebSocketRoute("/talk/ws", script)])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the scripted server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(10)


def tone(frequency: float, seconds: float, rate: int) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * frequency * np.arange(int(seconds * rate)) / rate)).astype(np.float32)


def test_the_page_sends_16_khz_plays_in_order_echoes_marks_when_played_and_stops_at_once_on_clear(tmp_path):
    line = BrowserLine()
    heard = bytearray()
    echoed: list[tuple[str, float]] = []
    sent: dict[str, float] = {}

    async def script(websocket):
        await websocket.accept()
        await websocket.send_text(json.dumps({"event": "ready", "call_sid": "page-scripted", "input_rate": 16000,
                                              "output_rate": line.output_rate, "end_of_turn_s": 0.55}))

        async def play(name: str, seconds: float) -> None:
            for frame in line.media(float_to_pcm16(tone(440, seconds, line.output_rate))):
                await websocket.send_bytes(frame)
            await websocket.send_text(line.mark(name))
            sent[name] = time.monotonic()

        async def listen() -> None:
            while (message := await websocket.receive())["type"] != "websocket.disconnect":
                if message.get("bytes"):
                    heard.extend(message["bytes"])
                elif json.loads(message["text"])["event"] == "mark":
                    echoed.append((json.loads(message["text"])["name"], time.monotonic()))

        listener = asyncio.create_task(listen())
        await asyncio.sleep(1.0)
        await play("1:0", 0.5)
        await asyncio.sleep(1.5)
        await play("2:0", 3.0)  # cut after 0.8 s
        await asyncio.sleep(0.8)
        await websocket.send_text(line.clear())
        await listener

    # The microphone: a 1 kHz tone, which must still be 1 kHz once the page has downsampled it to 16 kHz.
    mic = microphone(tmp_path / "tone.wav", tone(1000, 4.0, RATE))
    with scripted_line(script) as url, chromium(mic) as driver:
        open_page(driver, url)
        click_start(driver)
        started = time.monotonic()
        cut = wait_for(driver, lambda p: p["clears"] == 1, 30, "the clear")
        time.sleep(1.0)
        after = page(driver)
        seconds = time.monotonic() - started
    # The first reply played whole, and its mark came back only once it had (not when it arrived).
    assert [name for name, _ in echoed] == ["1:0"] and echoed[0][1] - sent["1:0"] >= 0.4
    # The second was cut: of its 3 s, about the 0.8 s before the clear played; the rest was dropped, not played
    # late, and its mark never came back (so the server counts it as not heard).
    rate = line.output_rate
    assert cut["samplesReceived"] == int(0.5 * rate) + int(3.0 * rate)
    assert 0.3 * rate < cut["samplesPlayed"] - int(0.5 * rate) < 1.3 * rate
    assert cut["samplesPlayed"] + cut["samplesDropped"] == cut["samplesReceived"] and cut["state"] == "listening"
    assert after["samplesPlayed"] == cut["samplesPlayed"] and after["state"] == "listening"
    # The microphone arrived as PCM16 at 16 kHz, in real time, and still sounds at 1 kHz.
    samples = pcm16_to_float(bytes(heard))
    assert 0.5 * seconds * RATE < len(samples) <= 1.2 * seconds * RATE
    last_second = samples[-RATE:]
    peak_hz = np.argmax(np.abs(np.fft.rfft(last_second))) * RATE / len(last_second)
    assert abs(peak_hz - 1000) < 20


def test_a_refused_microphone_shows_the_error_state(tmp_path):
    mic = microphone(tmp_path / "quiet.wav", silence(2.0))
    with PhoneServer(UNREACHABLE, ["--greeting", ""]) as phone, chromium(mic, grant=False) as driver:
        open_page(driver, f"{phone.url}/")
        click_start(driver)
        shown = wait_for(driver, lambda p: p["state"] == "error", 30, "the error state")
        assert "microphone" in shown["error"].lower() and "refused" in shown["error"].lower()
        assert shown_text(driver, "#error") == [shown["error"]]
        assert shown_text(driver, "#state") == ["error"]
        assert phone.active_calls() == 0


def test_an_unreachable_server_shows_the_error_state(tmp_path):
    mic = microphone(tmp_path / "quiet.wav", silence(2.0))
    with PhoneServer(UNREACHABLE, ["--greeting", ""]) as phone, chromium(mic) as driver:
        open_page(driver, f"{phone.url}/")
        phone.__exit__()  # the server goes away after serving the page
        click_start(driver)
        shown = wait_for(driver, lambda p: p["state"] == "error", 30, "the error state")
        assert "cannot reach" in shown["error"].lower()


def test_with_a_page_token_only_a_page_that_presents_it_may_talk(tmp_path):
    mic = microphone(tmp_path / "quiet.wav", silence(2.0))
    with PhoneServer(UNREACHABLE, ["--greeting", "", "--page-token", "s3cret/+"]) as phone:
        assert "?token=s3cret/%2B" in phone.logs()  # the URL it prints carries the token
        with chromium(mic) as driver:
            open_page(driver, f"{phone.url}/")
            click_start(driver)
            refused = wait_for(driver, lambda p: p["state"] == "error", 30, "refused without the token")
            assert "token" in refused["error"]
            open_page(driver, f"{phone.url}/?token=s3cret%2F%2B")
            click_start(driver)
            wait_for(driver, lambda p: p["state"] == "listening" and p["callSid"], 30, "listening with the token")
        socket_url = phone.url.replace("http", "ws") + "/talk/ws"

        async def close_code(url: str, **headers: str) -> int:
            async with websockets.connect(url, additional_headers=headers) as ws:
                with contextlib.suppress(websockets.ConnectionClosed):
                    while True:
                        await ws.recv()
                return ws.close_code

        assert asyncio.run(close_code(f"{socket_url}?token=wrong")) == 4003
        assert asyncio.run(close_code(socket_url)) == 4003
        # Even with the token, a page from another site may not use the server.
        assert asyncio.run(close_code(f"{socket_url}?token=s3cret%2F%2B", Origin="http://evil.example")) == 4003

        async def first_event(url: str, **headers: str) -> dict:
            async with websockets.connect(url, additional_headers=headers) as ws:
                while not isinstance(message := await asyncio.wait_for(ws.recv(), 30), str):
                    pass
                return json.loads(message)

        # Served through a proxy that rewrites Host: the page's origin is the forwarded host, and it may talk.
        proxied = {"Origin": "https://agent.example", "X-Forwarded-Host": "agent.example"}
        assert asyncio.run(first_event(f"{socket_url}?token=s3cret%2F%2B", **proxied))["event"] == "ready"


def test_the_wheel_ships_the_page(tmp_path):
    # Built from a copy of the sources, as the thin-install test does: the checkout is left as it was.
    source = tmp_path / "voicepod"
    shutil.copytree(REPO / "client", source / "client", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(tmp_path / "dist"), str(source)], check=True, timeout=300, cwd=tmp_path)
    [wheel] = (tmp_path / "dist").glob("voicepod-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    page_files = {f"voicepod/phone/page/{p.name}" for p in (REPO / "client/voicepod/phone/page").iterdir()}
    assert {"voicepod/phone/page/index.html", "voicepod/phone/page/app.js"} <= page_files <= shipped
