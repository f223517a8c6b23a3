"""HTTP for the source: one policy (timeouts, retries, size cap) around an `httpx.Client`.

The client is passed in, so tests and the backfill hand us one. Retrying is tenacity's
job, not a loop of ours.

Two limits httpx's timeouts do not give: a deadline for the whole response (httpx's read
timeout restarts with every byte, so a server dripping a page could hold a fetch for
ever), and a stop (`digest.stopping.STOP`, set on SIGTERM) that cuts a backoff sleep or
a request in flight. Each attempt runs in a worker thread the caller waits on for at
most the deadline; on a stop or a passed deadline the caller shuts the attempt's socket
and returns at once.
"""

from __future__ import annotations

import contextlib
import email.utils
import socket
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import tenacity

from digest import __version__
from digest.errors import FetchError
from digest.stopping import STOP, StopSignal

USER_AGENT = (
    f"papers-digest/{__version__} (self-hosted Daily Papers digest; "
    "+https://github.com/papers-digest/papers-digest)"
)
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_AFTER = 300.0  # a server asking us to wait longer than this is treated as down


class _Stopped(Exception):
    """The process is stopping: give up now, no retry."""


class _DeadlinePassed(Exception):
    """The whole response took longer than the deadline (a read timeout in all but name)."""


class _RetryableStatus(Exception):
    """A 429 or 5xx: worth another try, after Retry-After if the server gave one."""

    def __init__(self, status: int, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.retry_after = retry_after


def make_client(timeout: float = 20.0, connect_timeout: float = 10.0) -> httpx.Client:
    """Return an httpx.Client with our User-Agent, timeouts and redirect policy."""
    return httpx.Client(
        headers={"User-Agent": USER_AGENT, "Accept-Encoding": "gzip, deflate"},
        timeout=httpx.Timeout(timeout, connect=connect_timeout),
        follow_redirects=True,
    )


class Fetcher:
    """GETs a URL with retries on connection errors, 429 and 5xx, a cap on body size, a
    deadline for each whole response, and a stop that cuts sleeps and requests."""

    def __init__(
        self,
        client: httpx.Client,
        *,
        retries: int = 3,
        max_bytes: int = 20_000_000,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        sleep: Callable[[float], None] | None = None,
        deadline: float | None = None,
        stop: StopSignal = STOP,
    ) -> None:
        """`deadline`: seconds an attempt may take from request to last byte; default the
        client's read timeout (source.timeout). `sleep`: the backoff wait; default one
        that `stop` cuts short."""
        self.client = client
        self.retries = retries
        self.max_bytes = max_bytes
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.stop = stop
        self.sleep = sleep or self._sleep_unless_stopped
        self.deadline = deadline or client.timeout.read or 20.0

    def _sleep_unless_stopped(self, seconds: float) -> None:
        if self.stop.wait(seconds):
            raise _Stopped

    def get(self, url: str, params: dict[str, str | int] | None = None) -> tuple[bytes, str]:
        """Return (body, final URL) for a 2xx answer.

        Raises FetchError naming the URL after retries are spent, on 4xx at once
        (404 is never retried), when the body passes `max_bytes`, and at once when the
        process is stopping.
        """
        # Jitter in proportion to the backoff: tenacity's default (up to 1 s) would swamp a
        # small backoff and make every retry wait about a second whatever we asked for.
        exponential = tenacity.wait_exponential(
            multiplier=self.backoff, max=self.max_backoff
        ) + tenacity.wait_random(0, self.backoff)

        def wait(state: tenacity.RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            if isinstance(error, _RetryableStatus) and error.retry_after is not None:
                return error.retry_after
            return float(exponential(state))

        # A URL httpx cannot use (no scheme, bad port) fails the same way every time.
        retryable = tenacity.retry_if_exception_type(
            (httpx.TransportError, _RetryableStatus, _DeadlinePassed)
        ) & tenacity.retry_if_not_exception_type((httpx.UnsupportedProtocol, httpx.InvalidURL))
        retrying = tenacity.Retrying(
            retry=retryable,
            stop=tenacity.stop_after_attempt(self.retries + 1),
            wait=wait,
            sleep=self.sleep,
            reraise=True,
        )
        tries = f"{self.retries + 1} attempt{'s' if self.retries else ''}"
        try:
            request_url = str(httpx.URL(url, params=params)) if params else url
        except httpx.InvalidURL as e:
            raise FetchError(url, f"not a valid URL: {e}") from None
        try:
            return retrying(self._get_once, url, params)
        except _Stopped:
            raise FetchError(request_url, "stopped: the service is shutting down") from None
        except _DeadlinePassed:
            raise FetchError(
                request_url,
                f"timed out after {tries} (no complete response within "
                f"{self.deadline:g} s, source.timeout)",
            ) from None
        except httpx.UnsupportedProtocol as e:
            raise FetchError(request_url, f"not a URL we can fetch: {e}") from None
        except _RetryableStatus as e:
            raise FetchError(
                request_url, f"HTTP {e.status} after {tries}", status=e.status
            ) from None
        except httpx.TimeoutException as e:
            raise FetchError(request_url, f"timed out after {tries} ({type(e).__name__})") from None
        except httpx.TransportError as e:
            raise FetchError(
                request_url, f"network error after {tries}: {type(e).__name__}: {e}"
            ) from None
        except httpx.InvalidURL as e:
            raise FetchError(url, f"not a valid URL: {e}") from None
        except httpx.HTTPError as e:
            # Redirect loops, bad gzip and the like: still the server's fault, never a crash.
            raise FetchError(request_url, f"{type(e).__name__}: {e}") from None

    def _get_once(self, url: str, params: dict[str, str | int] | None) -> tuple[bytes, str]:
        """One attempt, waited on for at most the deadline, or until a stop."""
        if self.stop.is_set():
            raise _Stopped
        attempt = _Attempt()
        worker = threading.Thread(
            target=attempt.run, args=(self._read, url, params), name="fetch", daemon=True
        )
        worker.start()
        with self.stop.watch(attempt.wake.set):
            attempt.wake.wait(self.deadline)
        if attempt.finished:
            if attempt.error is not None:
                raise attempt.error
            assert attempt.result is not None
            return attempt.result
        # Cut it: the worker's blocked read fails at once and the thread ends (it is a
        # daemon thread either way, so it never holds the process up).
        attempt.abort()
        if self.stop.is_set():
            raise _Stopped
        raise _DeadlinePassed

    def _read(
        self, url: str, params: dict[str, str | int] | None, attempt: _Attempt
    ) -> tuple[bytes, str]:
        with self.client.stream(
            "GET", url, params=params, extensions={"trace": attempt.trace}
        ) as response:
            attempt.streams.append(response.extensions.get("network_stream"))
            final = str(response.url)
            if response.status_code in RETRY_STATUSES:
                retry_after = _retry_after(response.headers.get("Retry-After"))
                if retry_after is not None and retry_after > MAX_RETRY_AFTER:
                    raise FetchError(
                        final,
                        f"HTTP {response.status_code} with Retry-After of {retry_after:.0f} s "
                        f"(over {MAX_RETRY_AFTER:.0f} s): treated as down, not retried",
                        status=response.status_code,
                    )
                raise _RetryableStatus(response.status_code, retry_after)
            if response.status_code >= 400:
                raise FetchError(
                    final,
                    f"HTTP {response.status_code} {response.reason_phrase}",
                    status=response.status_code,
                )
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > self.max_bytes:
                raise FetchError(
                    final,
                    f"body of {int(length)} bytes is over the "
                    f"{self.max_bytes}-byte limit (source.max_bytes)",
                )
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():
                if attempt.aborted:
                    raise _Stopped  # nobody waits for this any more
                size += len(chunk)
                if size > self.max_bytes:
                    raise FetchError(
                        final, f"body is over the {self.max_bytes}-byte limit (source.max_bytes)"
                    )
                chunks.append(chunk)
            return b"".join(chunks), final


class _Attempt:
    """One request in its worker thread: its outcome, and its sockets so it can be cut."""

    def __init__(self) -> None:
        self.wake = threading.Event()  # set when the worker is done, or by a stop
        self.finished = False
        self.aborted = False
        self.result: tuple[bytes, str] | None = None
        self.error: BaseException | None = None
        self.streams: list[Any] = []  # httpcore network streams this attempt opened
        self._lock = threading.Lock()

    def run(self, read: Callable[..., tuple[bytes, str]], url: str, params: Any) -> None:
        try:
            self.result = read(url, params, self)
        except BaseException as e:  # handed to the waiting caller, who raises it
            self.error = e
        finally:
            self.finished = True
            self.wake.set()

    def trace(self, event: str, info: dict[str, Any]) -> None:
        """httpcore's trace hook: note each new connection's stream as it opens."""
        if event in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            with self._lock:
                self.streams.append(info.get("return_value"))
                aborted = self.aborted
            if aborted:
                self.abort()

    def abort(self) -> None:
        """Shut the attempt's sockets: a read blocked on one returns with an error."""
        with self._lock:
            self.aborted = True
            streams = list(self.streams)
        for stream in streams:
            sock = stream.get_extra_info("socket") if stream is not None else None
            if sock is not None:
                with contextlib.suppress(OSError):  # already closed
                    sock.shutdown(socket.SHUT_RDWR)


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
