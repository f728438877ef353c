"""The ``voicepod`` command: a registry of subcommands, each imported only when it is the one asked for.

A command's module has ``register(subparsers)``, adding one parser whose ``func(args)`` returns an exit code.
Importing only the chosen module keeps ``voicepod --help`` and ``voicepod cost`` working on the thin client
install: ``serve-local`` needs aiohttp and the runpod SDK, ``phone`` a web server, which a client user may not
have (their extra is named in the hint printed instead of an ``ImportError``).

Every failure a user can cause ends in one line on stderr that says what to do; ``--debug`` (anywhere before
the command) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass

from .cli_errors import UsageError, explain


@dataclass(frozen=True)
class Command:
    """``module`` registers the command; ``help`` is its line in ``voicepod --help`` (the only one: a module's
    parser gives its description); ``extra`` is the
    ``pip install 'voicepod[EXTRA]'`` that its imports need, if the thin client lacks them."""

    module: str
    help: str
    extra: str | None = None


COMMANDS: dict[str, Command] = {
    "serve-local": Command("voicepod.local.command",
                           "serve RunPod's endpoint API locally over real SDK worker processes", "local"),
    "turn": Command("voicepod.turn", "one spoken turn: QUESTION.wav in, reply WAV out, with a timing table"),
    "demo": Command("voicepod.demo", "run one spoken turn through three local workers (no GPU needed)", "workers"),
    "deploy": Command("voicepod.deploy", "create or update the three RunPod endpoints from deploy.toml"),
    "cost": Command("voicepod.cost", "what a conversation minute costs per GPU type, against a managed platform"),
    "phone": Command("voicepod.phone.command",
                     "a Twilio Media Streams server: phone calls through the three endpoints", "phone"),
    "call": Command("voicepod.phone.call_command",
                    "a simulated Twilio caller: QUESTION.wav to a phone server, the reply to a file", "phone"),
}


def _chosen(argv: list[str]) -> str | None:
    return next((arg for arg in argv if not arg.startswith("-")), None)


def _missing_extra(exc: ModuleNotFoundError) -> bool:
    """Whether the import failed on a third-party package (an extra not installed), not on voicepod itself."""
    return bool(exc.name) and exc.name.split(".")[0] != "voicepod"


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    """The parser for ``argv``: the chosen command's full parser, the others as names with their help."""
    parser = argparse.ArgumentParser(prog="voicepod", description="Self-hosted voice agents on RunPod serverless.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = _chosen(argv)
    for name, command in COMMANDS.items():
        if name != chosen:
            commands.add_parser(name, help=command.help, add_help=False)
            continue
        try:
            module = importlib.import_module(command.module)
        except ModuleNotFoundError as exc:
            if not _missing_extra(exc):
                raise
            extra = command.extra or "workers"
            raise UsageError(f"needs the package {exc.name!r}: pip install 'voicepod[{extra}]'") from exc
        module.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv[: argv.index(c) if (c := _chosen(argv)) else len(argv)]
    name = _chosen(argv) or ""
    try:
        args = build_parser(argv).parse_args(argv)
        return int(args.func(args) or 0)
    except ModuleNotFoundError as exc:
        # A command that imports its extra's packages only when it runs lands here.
        if debug or not _missing_extra(exc) or name not in COMMANDS:
            raise
        extra = COMMANDS[name].extra or "workers"
        print(f"voicepod {name}: needs the package {exc.name!r}: pip install 'voicepod[{extra}]'", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"voicepod {name}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug:
            raise
        print(f"voicepod {name}: {explain(exc)}".replace("voicepod : ", "voicepod: "), file=sys.stderr)
        return 2 if isinstance(exc, UsageError) else 1


if __name__ == "__main__":
    sys.exit(main())
