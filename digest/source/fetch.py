"""HTTP for the source: one policy (timeouts, retries, size cap) around an `httpx.Client`.

The client is passed in, so tests and the backfill hand us one; nothing here reaches for
a global. Retrying is tenacity's job, not a loop of ours.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import tenacity

from digest import __version__
from digest.errors import FetchError

USER_AGENT = (
    f"papers-digest/{__version__} (self-hosted Daily Papers digest; "
    "+https://github.com/papers-digest/papers-digest)"
)
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_AFTER = 300.0  # a server asking us to wait longer than this is treated as down


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
    """GETs a URL with retries on connection errors, 429 and 5xx, and a cap on body size."""

    def __init__(
        self,
        client: httpx.Client,
        *,
        retries: int = 3,
        max_bytes: int = 20_000_000,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.retries = retries
        self.max_bytes = max_bytes
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.sleep = sleep

    def get(self, url: str, params: dict[str, str | int] | None = None) -> tuple[bytes, str]:
        """Return (body, final URL) for a 2xx answer.

        Raises FetchError naming the URL after retries are spent, on 4xx at once
        (404 is never retried), and when the body passes `max_bytes`.
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
            (httpx.TransportError, _RetryableStatus)
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
        with self.client.stream("GET", url, params=params) as response:
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
                size += len(chunk)
                if size > self.max_bytes:
                    raise FetchError(
                        final, f"body is over the {self.max_bytes}-byte limit (source.max_bytes)"
                    )
                chunks.append(chunk)
            return b"".join(chunks), final


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
