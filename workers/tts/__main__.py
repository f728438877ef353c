"""``python -m workers.tts [input.json]``: run the TTS handler on one input and print its chunks."""

from pathlib import Path

from voicepod.protocol import SpeechRequest

from workers.common.run_local import main

main("tts", "workers.tts.handler", SpeechRequest, Path(__file__).with_name("test_input.json"))
