"""The `pixdiff` program: one thin module per subcommand.

Each module (``train``, ``sample``, ``eval``, ``nll``, ``info``, ``train_classifier``) has
``add_parser(subparsers)`` and ``run(args) -> int``: it parses arguments, calls the library,
prints or writes, and nothing else. The library never imports this package.

User mistakes raise ``pixdiff.errors.PixdiffError``; ``main`` prints those in one line,
``pixdiff CMD: error: MESSAGE``, and exits 2 (``PIXDIFF_DEBUG=1`` shows the traceback). Every
other exception (out of memory, a bug) keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys

from pixdiff.cli._common import Parser
from pixdiff.errors import PixdiffError

__all__ = ["main", "build_parser", "COMMANDS"]

# Subcommand modules, in the order `pixdiff --help` lists them.
COMMANDS = ("train", "sample", "eval", "nll", "info", "train_classifier", "prepare_data", "distill", "export")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    from pixdiff import __version__

    ap = Parser(prog="pixdiff", description="Pixel-space diffusion models: train, sample, evaluate.",
                epilog="`pixdiff COMMAND --help` describes a command.")
    ap.add_argument("--version", action="version", version=f"pixdiff {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name in COMMANDS:
        importlib.import_module(f"pixdiff.cli.{name}").add_parser(sub)
    return ap


def main(argv=None) -> int:
    """Run the program on ``argv`` (default ``sys.argv[1:]``) and return its exit code."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    ap = build_parser()
    if not argv:
        ap.print_help()
        return 0
    try:
        args, extra = ap.parse_known_args(argv)
        if extra:  # said by the subcommand's parser, which knows the flags it lacks
            sub = next(a for a in ap._actions if isinstance(a, argparse._SubParsersAction))
            sub.choices.get(getattr(args, "command", None), ap).error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as e:  # --help, --version and argparse's own errors
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    if getattr(args, "func", None) is None:
        ap.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("pixdiff: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`pixdiff info --samplers | head`): not our error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 1
    except PixdiffError as e:
        if os.environ.get("PIXDIFF_DEBUG"):
            raise
        msg = " ".join(str(e).split())  # one line, whatever the message holds
        print(f"pixdiff {args.command}: error: {msg}", file=sys.stderr)
        return int(getattr(e, "exit_code", 2))  # 2, or a distinct code (3: a checkpoint write failed)
