from pathlib import Path

from workers.common.run_local import main
from workers.tts.handler import handler

main(handler, Path(__file__).with_name("test_input.json"))
