"""The ``hasten`` command line: the parser and the one place that turns errors into exit codes.

Every command, the core's (:mod:`hasten.commands`, one module each) and
installed plugins' (f1clr adds ``lr-find``), is added through the
``hasten_add_commands`` hook. A user error prints one message naming what is
wrong and exits 2, without a traceback.
"""

from __future__ import annotations

import argparse
import sys

from hasten.errors import TrainingStopped, UserError


def build_parser() -> tuple[argparse.ArgumentParser, list[str]]:
    from hasten import __version__
    from hasten.commands import CoreCommands
    from hasten.plugins import add_commands

    parser = argparse.ArgumentParser(
        prog="hasten", description="Plugin-based PyTorch trainer: the same accuracy for less compute."
    )
    parser.add_argument("--version", action="version", version=f"hasten {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    problems = add_commands(sub, core=[CoreCommands()])
    return parser, problems


def main(argv: list[str] | None = None) -> int:
    parser, problems = build_parser()
    args = parser.parse_args(argv)
    for problem in problems:
        print(f"warning: plugin failed to load: {problem}", file=sys.stderr)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return int(handler(args) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except TrainingStopped as exc:
        print(f"training stopped: {exc}", file=sys.stderr)
        return exc.exit_code  # 1; 128 + signal number after SIGINT/SIGTERM (TrainingInterrupted)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
