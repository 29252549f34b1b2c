"""One process per run directory: a new run claims its directory atomically, and the process training in a directory
holds an exclusive lock on it until it exits.

- **Claim** (a new run): the first name of ``name, name-1, name-2, ...`` whose directory is empty (or does not exist)
  and whose lock file the process creates itself (``O_CREAT | O_EXCL``: of two processes starting at the same moment
  exactly one creates it). A directory with anything in it, a finished run, a stopped one or the files of a run killed
  before its first checkpoint, is never reused: a new run never overwrites or mixes into an old one.
- **Lock**: ``<run dir>/.lock``, an ``flock`` held while the process trains, with the holder's PID, host and start
  time written in it. The kernel (or the NFS server, on a shared filesystem) releases it when the holder dies however
  it dies, so a dead holder's lock is simply taken over; a live holder's makes ``--resume`` fail with one line naming
  it. Reading a run (export, TensorBoard, the sweep's tables) takes no lock.
- Where the filesystem cannot lock (some network filesystems), training goes on with a warning: the claim is still
  atomic, but a second ``--resume`` of the same run is not refused.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import time
from pathlib import Path
from typing import Optional

from ..errors import DataError

LOCK_NAME = ".lock"
log = logging.getLogger(__name__)

try:
    import fcntl
except ImportError:  # not on Windows: the claim stays atomic, the live-holder check is off
    fcntl = None  # type: ignore[assignment]


class RunBusy(DataError):
    """Another live process holds the run directory's lock."""


class FileLock:
    """An exclusive, non-blocking ``flock`` on `path` (created if missing), or None from :meth:`try_acquire` when a
    live process holds it. The holder's PID, host and start time are written into the file."""

    def __init__(self, path: Path, fd: int):
        self.path, self._fd = path, fd

    @classmethod
    def try_acquire(cls, path: Path, *, create_new: bool = False, wait: bool = False) -> Optional["FileLock"]:
        """The lock, or None if another live process holds it. `create_new`: the file must not exist yet
        (FileExistsError otherwise): the atomic claim of a new run directory. `wait`: block until the holder lets
        go instead of returning None."""
        flags = os.O_RDWR | os.O_CREAT | (os.O_EXCL if create_new else 0)
        fd = os.open(path, flags, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    return None
                log.warning("cannot lock %s (%s): another process could resume this run at the same time", path,
                            exc.strerror)
        lock = cls(path, fd)
        lock._write_holder()
        return lock

    def _write_holder(self) -> None:
        text = f"pid {os.getpid()} host {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
        try:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, text.encode(), 0)
        except OSError:
            pass  # the holder line is for people; the lock itself is what counts

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = -1

    def __enter__(self) -> "FileLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def holder(path: Path) -> str:
    """Who holds the lock at `path`, as written in it ("pid 123 host h since ..."), for messages."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        text = ""
    return text or "another process"


def claim_new(base: Path) -> tuple[Path, FileLock]:
    """Claim the first free directory of ``base, base-1, base-2, ...`` (module docstring) and lock it."""
    k = 0
    while True:
        run_dir = base if k == 0 else base.with_name(f"{base.name}-{k}")
        k += 1
        try:
            if run_dir.exists() and not run_dir.is_dir():
                continue  # a file of that name
            run_dir.mkdir(parents=True, exist_ok=True)
            if any(run_dir.iterdir()):
                continue  # someone's run (finished, stopped, killed or live): never reused
            try:
                lock = FileLock.try_acquire(run_dir / LOCK_NAME, create_new=True)
            except FileExistsError:
                continue  # another process claimed it a moment ago
        except OSError as exc:
            raise DataError(f"cannot write the run directory {run_dir}: {exc.strerror}; set runs_root to a writable "
                            "directory") from None
        if lock is not None:
            return run_dir, lock


def lock_existing(run_dir: Path) -> FileLock:
    """Lock an existing run directory to continue it (``--resume``); RunBusy if a live process trains in it."""
    path = run_dir / LOCK_NAME
    try:
        lock = FileLock.try_acquire(path)
    except OSError as exc:
        raise DataError(f"cannot write the run directory {run_dir}: {exc.strerror}; resume needs write access") \
            from None
    if lock is None:
        raise RunBusy(f"{run_dir} is being trained by a live process ({holder(path)}); wait for it to end, or stop "
                      "it (kill -TERM <pid>: it checkpoints) and then --resume")
    return lock
