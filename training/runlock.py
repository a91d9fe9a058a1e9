"""One writer per run folder: an flock'ed lock file holding the holder's pid.

`RunLock(folder).acquire()` creates (or reuses) folder/LOCK_NAME, takes an exclusive
non-blocking flock on it and writes the pid into it. The kernel drops the flock when the
holder dies, however it dies (SIGKILL included), so a lock file left behind by a dead
process is stale by construction: the next trainer takes it over. `holder(folder)` tells
whether a live process holds the folder, without taking it.
"""
from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

LOCK_NAME = "train.lock"


class LockedError(RuntimeError):
    """The run folder is held by another live process."""

    def __init__(self, folder: Path, pid: int | None):
        who = f"pid {pid}" if pid else "another process"
        super().__init__(f"{folder} is in use by another training ({who}); wait for it to "
                         f"finish or stop it{f' (kill {pid})' if pid else ''}, or choose "
                         f"another --out")
        self.pid = pid


def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def holder(folder) -> int | None:
    """pid of the live process holding folder's lock, or None when it is free (or stale)."""
    path = Path(folder) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_pid(path) or -1
    finally:
        os.close(fd)
    return None


class RunLock:
    """Exclusive lock of a run folder for this process (use as a context manager)."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.fd: int | None = None

    def acquire(self) -> "RunLock":
        """Take the lock; raises LockedError if a live process holds it, OSError (e.g.
        PermissionError) if the folder is not writable."""
        busy = 0
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                busy += 1
                if busy >= 3:                  # not just a holder() peeking at it
                    raise LockedError(self.folder, _read_pid(self.path)) from None
                time.sleep(0.05)
                continue
            # the previous holder may have unlinked the file between our open and flock
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.fsync(fd)
        self.fd = fd
        return self

    def release(self):
        if self.fd is None:
            return
        try:
            os.unlink(self.path)               # while still holding it: no one else can
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
