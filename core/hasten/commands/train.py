"""``hasten train CONFIG [--set ...] [--resume [RUN_DIR]] [--quiet] [--resume-allow-nonfinite]``."""

from __future__ import annotations

import argparse
from typing import Any

from hasten.commands.arguments import add_config_arguments
from hasten.errors import UserError


def cmd_train(args: argparse.Namespace) -> int:
    from hasten.config import load_config
    from hasten.engine import train

    config = load_config(args.config, args.overrides)
    resume: bool | str = args.resume if args.resume is not None else False
    if args.resume_allow_nonfinite and args.resume is None:
        raise UserError("--resume-allow-nonfinite: only with --resume (it loads a checkpoint holding NaN/inf anyway)")
    result = train(config, resume=resume, quiet=args.quiet, allow_nonfinite_resume=args.resume_allow_nonfinite)
    return 0 if result.stop_reason is None else 1


def add_command(subparsers: Any) -> None:
    train = subparsers.add_parser("train", help="train a model from a config file")
    add_config_arguments(train)
    train.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        metavar="RUN_DIR",
        help="continue from the latest valid checkpoint (of RUN_DIR, run.run_dir, or the newest run of this name)",
    )
    train.add_argument(
        "--quiet", action="store_true",
        help="no progress display and no printed summary (RUN_DIR/summary.json and metrics.jsonl are written anyway)",
    )
    train.add_argument(
        "--resume-allow-nonfinite",
        action="store_true",
        help="with --resume: load the checkpoint even if it holds NaN or inf tensors (refused by default)",
    )
    train.set_defaults(handler=cmd_train)
