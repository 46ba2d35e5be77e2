"""The ``videolens`` command line: one subcommand per module in ``videolens.commands``.

Each command module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``;
adding a command is one module and one entry in ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from typing import List, Optional

from .errors import VideolensError

COMMANDS = [
    "videolens.commands.answer",
    "videolens.commands.demo",
    "videolens.commands.flow",
    "videolens.commands.pathways",
    "videolens.commands.lens",
    "videolens.commands.genprob",
    "videolens.commands.models",
    "videolens.commands.download",
    "videolens.commands.sae",
]


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``videolens flow: error: argument --out: ... (see --help)``."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="videolens", description="Mechanistic interpretability for Video LLMs")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in COMMANDS:
        mod = importlib.import_module(name)
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Run one command (under ``torchrun``, one rank of a sharded run: ``videolens.running.distributed``).
    A command with ``--out`` holds that folder's lock (``videolens.running.records.folder_lock``)
    from start to end, so a second run into it stops at once. User errors print one line and return 2;
    warnings print one line each."""
    parser = build_parser()
    args = parser.parse_args(argv)
    prefix = f"videolens {args.command}"

    def show(message, category, *_, **__):
        print(f"{prefix}: warning: {message}", file=sys.stderr)

    from .running import distributed

    distributed.init()  # under torchrun: join the process group (videolens.running.distributed)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = show
            with _out_lock(args, prefix):
                return int(args._run(args) or 0)
    except (VideolensError, FileNotFoundError, ValueError, KeyError) as exc:
        # user errors: one clear line, no traceback (a KeyError's message without the quotes str() adds)
        message = exc.args[0] if isinstance(exc, KeyError) and len(exc.args) == 1 else exc
        print(f"{prefix}: error: {message}", file=sys.stderr)
        return 2
    except OSError as exc:  # read-only or full disk, a folder below a file, an unreadable file: one line
        print(f"{prefix}: error: {_os_error(exc, args)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        out = getattr(args, "out", None)
        kept = f"finished samples are kept in {out}; rerun the same command to resume" if out else "nothing was written"
        print(f"{prefix}: interrupted: {kept}", file=sys.stderr)
        return 130
    finally:
        distributed.finish()


def _os_error(exc: OSError, args) -> str:
    """One line for an operating-system error: the file, the cause, and what survives."""
    import errno

    where = f"{exc.filename}: " if exc.filename else ""
    cause = exc.strerror or str(exc)
    out = getattr(args, "out", None)
    if exc.errno == errno.ENOSPC:
        return (f"{where}{cause} (disk full); finished samples are kept" + (f" in {out}" if out else "")
                + ", free space and rerun the same command to resume")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{where}{cause}: check the permissions of this path (or choose another --out)"
    return f"{where}{cause}"


def _out_lock(args, what: str):
    from contextlib import nullcontext

    from .running.distributed import world
    from .running.records import folder_lock

    out = getattr(args, "out", None)  # under torchrun rank 0 holds it; each rank locks its own rank folder
    return folder_lock(out, what) if out and world()[0] == 0 else nullcontext()


if __name__ == "__main__":
    sys.exit(main())
