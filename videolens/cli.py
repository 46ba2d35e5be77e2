"""The ``videolens`` command line: one subcommand per module in ``videolens.commands``.

Each command module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``;
adding a command is one module and one entry in ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

from .errors import VideolensError

COMMANDS = [
    "videolens.commands.answer",
    "videolens.commands.demo",
    "videolens.commands.flow",
    "videolens.commands.pathways",
    "videolens.commands.lens",
    "videolens.commands.genprob",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="videolens", description="Mechanistic interpretability for Video LLMs")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        mod = importlib.import_module(name)
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except (VideolensError, FileNotFoundError, ValueError, KeyError) as exc:
        # user errors: one clear line, no traceback
        print(f"videolens {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
