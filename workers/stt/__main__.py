"""``python -m workers.stt [input.json]``: run the STT handler on one input and print its chunks."""

from pathlib import Path

from voicepod.protocol import TranscribeRequest

from workers.common.run_local import main

main("stt", "workers.stt.handler", TranscribeRequest, Path(__file__).with_name("test_input.json"))
