"""The ``voicepod`` command: each subcommand lives in its own module, which registers its parser here."""

from __future__ import annotations

import argparse
import importlib
import sys

# Modules with a ``register(subparsers)`` that adds one command whose ``func(args)`` returns an exit code.
COMMAND_MODULES = [
    "voicepod.local.command",
    "voicepod.turn",
    "voicepod.demo",
    "voicepod.deploy",
    "voicepod.cost",
    "voicepod.phone.command",
    "voicepod.phone.call_command",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="voicepod", description="Self-hosted voice agents on RunPod serverless.")
    commands = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(commands)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
