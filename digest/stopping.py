"""One stop signal for the process: `digest serve` sets it on SIGTERM, and every wait
that could outlast a `docker stop` (a fetch's backoff sleep, a request in flight)
watches it, so the process exits in about a second whatever it was doing.

Its own module so that the fetcher and the service can share it without importing
each other (the send has its own, `digest.deliver.digest.STOP`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class StopSignal:
    """A threading.Event that also calls the callbacks registered with `watch` when set
    (to shut a socket a thread is blocked on, say)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.RLock()  # RLock: set() may run in a signal handler
        self._callbacks: list[Callable[[], None]] = []

    def set(self) -> None:
        """Ask everything watching to stop now."""
        with self._lock:
            self._event.set()
            callbacks = list(self._callbacks)
        for callback in callbacks:
            callback()

    def clear(self) -> None:
        self._event.clear()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep up to `timeout` seconds; return True at once if a stop was asked for."""
        return self._event.wait(timeout)

    @contextmanager
    def watch(self, callback: Callable[[], None]) -> Iterator[None]:
        """Call `callback` if a stop is asked for while inside (at once if it already was)."""
        with self._lock:
            self._callbacks.append(callback)
            already = self._event.is_set()
        try:
            if already:
                callback()
            yield
        finally:
            with self._lock:
                self._callbacks.remove(callback)


STOP = StopSignal()
