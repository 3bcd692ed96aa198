"""The ``edgescene`` command line: one entry point, one subcommand per job.

Subcommands are registered in :data:`edgescene.commands.COMMANDS`; each module imports its heavy
dependencies (torch, onnxruntime, ...) only when it runs, so ``edgescene --help`` is instant and
works in a runtime-only install.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import traceback

from edgescene import __version__
from edgescene.commands import COMMANDS


class UserError(Exception):
    """An error the user can fix; printed as one clear message without a traceback."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every option's help ends with its default, unless the text already names it; descriptions
    keep their line breaks. Defaults of None and off switches are not shown (they mean "not set")."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "%(default)" in text or "default" in text.lower():
            return text
        if action.default in (None, False, argparse.SUPPRESS) or action.default == []:
            return text
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return f"{text} (default: %(default)s)"
        return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgescene",
        description="Photos and video to 3D scenes with DINOv3 and VGGT, on GPU servers and edge devices.",
    )
    parser.add_argument("--version", action="version", version=f"edgescene {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="on an error, also print the traceback (or set EDGESCENE_DEBUG=1); by default one line says what to fix",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        p = sub.add_parser(command.name, help=command.help, description=command.help, formatter_class=HelpFormatter)
        command.add_arguments(p)
        p.set_defaults(_run=command.run)
    return parser


def in_flags(message: str, command: argparse.ArgumentParser) -> str:
    """``message`` with the command's option names as its user typed them: shared code names a
    setting by its Python name (``every_s must be ...``), the command line by its flag (``--every-s``).
    Only snake_case names are replaced (a plain word such as "model" is prose as often as a flag)."""
    for action in command._actions:
        if "_" in action.dest and action.option_strings:
            flag = max(action.option_strings, key=len)
            message = re.sub(rf"(?<![\w-]){re.escape(action.dest)}(?![\w])", flag, message)
    return message


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 0
    debug = args.debug or os.environ.get("EDGESCENE_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")
    try:
        return int(args._run(args) or 0)
    except (
        ValueError,
        FileNotFoundError,
        FileExistsError,
        PermissionError,
        ImportError,
        RuntimeError,
        UserError,
    ) as exc:
        if debug:  # the whole story, for a bug report
            traceback.print_exc()
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
        print(f"edgescene {args.command}: error: {in_flags(str(exc), commands[args.command])}", file=sys.stderr)
        return 2
