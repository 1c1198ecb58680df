"""One process per run folder: an OS file lock on ``RUN/.lock`` held for the life of the trainer.

``fcntl.flock`` locks belong to the open file description, so the kernel releases them when the
process dies however it dies (SIGKILL included): a killed run never leaves a stale lock, and no
PID-file heuristics are needed. The file's text names the holder, for the refusal message only.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

from pixdiff.errors import PixdiffError

__all__ = ["RunLock", "RunInUse"]


class RunInUse(PixdiffError):
    """Another live process holds the run folder."""


class RunLock:
    """``with RunLock(run_dir): ...`` — refuses (``RunInUse``) when another process holds it."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / ".lock"
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock, as before
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
            finally:
                os.close(fd)
            raise RunInUse(f"run folder {self.path.parent} is in use by {holder}; wait for it to finish "
                           "or choose another --out") from None
        me = (f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')} "
              f"({' '.join(sys.argv[:3])[:200]})")
        os.ftruncate(fd, 0)
        os.pwrite(fd, me.encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor releases the flock
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
