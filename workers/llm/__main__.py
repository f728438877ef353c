"""``python -m workers.llm [input.json]``: run the LLM handler on one input and print its chunks."""

from pathlib import Path

from voicepod.protocol import LLMRequest

from workers.common.run_local import main

main("llm", "workers.llm.handler", LLMRequest, Path(__file__).with_name("test_input.json"))
