"""One run at a time, across processes: an `fcntl.flock` on a file next to the database.

flock rather than a row in SQLite because the kernel drops the lock the moment the
holder's process dies (killed, crashed, OOM): there is no expiry to tune and no stale
row to clean up. Two containers on one volume see the same lock, as long as the volume
is a local file system (flock over NFS is not reliable; the README says so).

The lock is per open file, so two `RunLock`s in one process exclude each other too.
The lock file sits next to the database's real path (`lock_path_for`), so every name of
the database (a symlink, a relative path) leads to the same lock.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from types import TracebackType

from digest.errors import DigestError, LockBusy


def lock_path_for(database: str | Path) -> Path:
    """Return the lock file's path: the database file's real path (symlinks and `..`
    resolved), with `.lock` appended.

    Keyed on the file, not on how it was named: a send through a symlink to the database
    and the scheduled one through its real path must take the same lock.
    """
    if str(database) == ":memory:":
        return Path(":memory:.lock")
    return Path(f"{os.path.realpath(database)}.lock")


class RunLock:
    """A non-reentrant, cross-process lock. `acquire()` or `with RunLock(path):`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, wait: float = 0.0, poll: float = 0.2) -> bool:
        """Return True once the lock is ours, False if still busy after `wait` seconds.

        Raises DigestError naming the lock file when it cannot be opened.
        """
        if self._fd is not None:
            raise DigestError(f"{self.path}: this RunLock is already held")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise DigestError(f"{self.path}: cannot open the run lock: {e.strerror}") from None
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return False
                time.sleep(poll)
        # Who holds it, for the "already in progress" message of the next one to try.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} since {time.strftime('%Y-%m-%dT%H:%M:%S')}\n".encode(), 0)
        self._fd = fd
        return True

    def release(self) -> None:
        """Let the next run go. A no-op when not held."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # closing the file drops the flock

    def holder(self) -> str:
        """Return what the holder wrote in the lock file ("" if nothing or unreadable)."""
        try:
            return self.path.read_text().strip()
        except OSError:
            return ""

    def __enter__(self) -> RunLock:
        if not self.acquire():
            raise LockBusy(str(self.path), self.holder())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
