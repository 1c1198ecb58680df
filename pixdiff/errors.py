"""The one exception class for mistakes a user can make.

``PixdiffError`` means "the request cannot be done as asked" (a bad path, a wrong shape, a
config that does not fit the run being resumed, a loss that stays non-finite); the program
prints its message in one line and exits 2. Every other exception (out of memory, a bug) keeps
its traceback, so the program never hides a defect behind a tidy message.

It subclasses ``ValueError`` so that library callers who already catch ``ValueError`` for bad
arguments keep working.
"""

from __future__ import annotations

__all__ = ["PixdiffError"]


class PixdiffError(ValueError):
    """A user mistake or an unusable input, explained in one line."""
