"""``python -m workers.llm [input.json]``: run the LLM handler on one input and print its chunks."""

from pathlib import Path

from workers.common.run_local import main
from workers.llm.handler import handler

main(handler, Path(__file__).with_name("test_input.json"))
