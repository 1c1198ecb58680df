"""What the subcommands share: the parser class, ``--device``, and checks of user input that
must fail before any work starts."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

from pixdiff.errors import PixdiffError

__all__ = ["Parser", "add_device", "device", "at_least", "seed", "check_output", "check_output_dir", "help_text",
           "note", "writing"]


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the full usage of `pixdiff train` is a screen), and
    no abbreviated flags: with flags generated from the config, an abbreviation that works today
    (``--ema``) becomes ambiguous the day a field is added."""

    def __init__(self, *a, **kw):
        kw.setdefault("allow_abbrev", False)
        super().__init__(*a, **kw)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def help_text(text: str) -> str:
    """``text`` safe for argparse, which %-formats every help string."""
    return text.replace("%", "%%")


def add_device(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--device", default=None, metavar="DEV",
                   help=f"where {what} runs: cpu, cuda or cuda:N (default: the GPU if there is one, else the CPU)")


def device(args):
    """The torch device of ``--device`` (None: the GPU if there is one); an absent GPU is a user error."""
    from pixdiff.generate import resolve_device

    return resolve_device(args.device)


def at_least(value: int, low: int, flag: str) -> int:
    if value < low:
        raise PixdiffError(f"{flag} must be at least {low} (got {value})")
    return value


def seed(text: str) -> int:
    """argparse type of ``--seed``: an integer in [0, 2**63), what every torch generator accepts."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid seed {text!r}: give an integer from 0 to 2**63 - 1") from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"seed {text} out of range: give an integer from 0 to 2**63 - 1")
    return value


def check_output_dir(path: Path, flag: str = "--out") -> Path:
    """Refuse an output folder that cannot be made or written, before any work: a file in the
    way, or a nearest existing ancestor that is a file or not writable."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise PixdiffError(f"{flag} {path} is a file; it must be a folder")
    _check_can_create(path.absolute(), path, flag)
    return path


def check_output(path: Path, suffixes: tuple[str, ...], flag: str = "--out") -> Path:
    """Refuse an output path that cannot be written, before hours of work go into it: a wrong
    suffix, a folder in the way, or a parent that is a file or not writable."""
    path = Path(path)
    if suffixes and path.suffix.lower() not in suffixes:
        raise PixdiffError(f"{flag} must end in {' or '.join(suffixes)} (got {path})")
    if path.is_dir():
        raise PixdiffError(f"{flag} {path} is a folder, not a file")
    _check_can_create(path.absolute().parent, path, flag)
    return path


def _check_can_create(folder: Path, path: Path, flag: str) -> None:
    """Can ``folder`` (and the folders above it that do not exist yet) be made and written? The
    nearest existing ancestor decides."""
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise PixdiffError(f"cannot write {flag} {path}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PixdiffError(f"cannot write {flag} {path}: no write permission in {folder}")


@contextlib.contextmanager
def writing(path: Path, flag: str = "--out"):
    """An output that cannot be written after all (disk full, a folder gone read-only): one line.
    The writes are atomic, so nothing half-written is left and an older file there is kept."""
    try:
        yield
    except OSError as e:
        raise PixdiffError(f"could not write {flag} {path} ({e.strerror or e}); nothing was written there") from None


def note(message: str) -> None:
    """A one-line remark on stderr (stdout carries the command's result)."""
    print(message, file=sys.stderr)
