"""A real threaded HTTP server on 127.0.0.1 that plays Hugging Face, for the fetcher tests.

It serves bytes we hand it (real captures, or pages built from them) by path and query,
records every request it saw (path, query, headers, time) and how many were in flight at
once, and can misbehave on purpose: stall the body, cut it short, lie about its length,
answer 429/5xx with Retry-After, redirect.

In a test (the fixture is `hf_server`, in conftest.py):

    from tests.support.hfserver import Reply  # the hf_server fixture is in conftest.py

    def test_x(hf_server):
        hf_server.route("/papers", Reply.redirect("/papers/date/2024-08-01"))
        hf_server.route("/papers/date/2024-08-01", Reply(PAGE_BYTES))
        hf_server.route("/api/daily_papers", Reply.json([...]), query={"date": "2024-08-01"})
        hf_server.route("/flaky", Reply(status=503), Reply(b"ok"))  # then "ok" for ever
        ... fetch hf_server.url("/papers") ...
        hf_server.requests_to("/api/daily_papers")  # what was asked, in order
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from digest.config import Config, SourceConfig
from digest.source.fetch import Fetcher, make_client


@dataclass(frozen=True)
class Reply:
    """One answer. `stall` seconds pass after the first `stall_after` body bytes are sent;
    `content_length` overrides the header (None: the true length; -1: no header, the body
    ends when the connection closes); `hold` seconds pass before anything is sent."""

    body: bytes = b""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "text/html; charset=utf-8"
    hold: float = 0.0
    stall: float = 0.0
    stall_after: int = 0
    content_length: int | None = None

    @classmethod
    def json(cls, data: Any, **kwargs: Any) -> Reply:
        body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
        return cls(body, content_type="application/json; charset=utf-8", **kwargs)

    @classmethod
    def redirect(cls, location: str, status: int = 302) -> Reply:
        return cls(status=status, headers={"Location": location})


@dataclass(frozen=True)
class Seen:
    """A request the server took."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    at: float  # time.monotonic() when it arrived


Handler = Callable[[Seen], Reply]


@dataclass
class _Route:
    path: str
    query: dict[str, str]
    replies: list[Reply] | None = None
    handler: Handler | None = None
    served: int = 0

    def next_reply(self, seen: Seen) -> Reply:
        if self.handler is not None:
            return self.handler(seen)
        assert self.replies
        reply = self.replies[min(self.served, len(self.replies) - 1)]
        self.served += 1
        return reply


class HFServer:
    """The server; start with `with HFServer() as s:` or the `hf_server` fixture."""

    def __init__(self) -> None:
        self._routes: list[_Route] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.requests: list[Seen] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._make_handler())
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    # -- set-up --------------------------------------------------------------------

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def route(
        self,
        path: str,
        *replies: Reply,
        query: dict[str, str] | None = None,
        handler: Handler | None = None,
    ) -> None:
        """Answer GET `path` (whose query holds every item of `query`) with `replies` in
        turn, the last one for ever after; or with `handler(request)`. The route naming
        the most query items wins; a later route with the same path and query replaces."""
        if bool(replies) == (handler is not None):
            raise ValueError("give replies or a handler, not both")
        query = {k: str(v) for k, v in (query or {}).items()}
        with self._lock:
            self._routes = [r for r in self._routes if (r.path, r.query) != (path, query)]
            self._routes.append(_Route(path, query, list(replies) or None, handler))

    # -- what happened ---------------------------------------------------------------

    def requests_to(self, path: str) -> list[Seen]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def reset_log(self) -> None:
        with self._lock:
            self.requests.clear()
            self.max_in_flight = self.in_flight

    # -- life ------------------------------------------------------------------------

    def start(self) -> HFServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()  # wakes any handler still stalling
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> HFServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _match(self, seen: Seen) -> _Route | None:
        with self._lock:
            fits = [
                r
                for r in self._routes
                if r.path == seen.path and all(seen.query.get(k) == v for k, v in r.query.items())
            ]
        return max(fits, key=lambda r: len(r.query)) if fits else None

    def _make_handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class _Handler(BaseHTTPRequestHandler):
            # HTTP/1.0: one request per connection, and a body without Content-Length
            # ends when we close, which the size-cap test needs.
            protocol_version = "HTTP/1.0"

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                seen = Seen(
                    "GET",
                    parts.path,
                    dict(parse_qsl(parts.query, keep_blank_values=True)),
                    {k.lower(): v for k, v in self.headers.items()},
                    time.monotonic(),
                )
                with server._lock:
                    server.requests.append(seen)
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    route = server._match(seen)
                    reply = route.next_reply(seen) if route else Reply(b"not found", 404)
                    self._send(reply)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up on us (a timeout test): fine
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def _send(self, reply: Reply) -> None:
                if reply.hold and server._stop.wait(reply.hold):
                    return
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                if reply.content_length is None:
                    self.send_header("Content-Length", str(len(reply.body)))
                elif reply.content_length >= 0:
                    self.send_header("Content-Length", str(reply.content_length))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                body = reply.body
                if reply.stall:
                    self.wfile.write(body[: reply.stall_after])
                    self.wfile.flush()
                    if server._stop.wait(reply.stall):
                        return
                    body = body[reply.stall_after :]
                self.wfile.write(body)
                self.wfile.flush()

        return _Handler


# -- fetchers built for the tests (pages: tests.support.pages) --------------------------


class SleepLog:
    """A `sleep` for Fetcher that records each wait, and sleeps it only if `real`."""

    def __init__(self, real: bool = False) -> None:
        self.real = real
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self.real:
            time.sleep(seconds)


def fast_fetcher(
    retries: int = 2,
    *,
    timeout: float = 2.0,
    max_bytes: int = 20_000_000,
    backoff: float = 0.01,
    sleep: Callable[[float], None] | None = None,
) -> Fetcher:
    """The real Fetcher and client, with test-sized timeouts and backoff."""
    return Fetcher(
        make_client(timeout, connect_timeout=timeout),
        retries=retries,
        max_bytes=max_bytes,
        backoff=backoff,
        sleep=sleep or SleepLog(),
    )


def local_config(server: HFServer, list_path: str = "/papers", **source: Any) -> Config:
    """The default Config pointed at `server` for both the page and the API."""
    src = dataclasses.replace(
        SourceConfig(),
        list=server.url(list_path),
        api_url=server.url("/api/daily_papers"),
        **source,
    )
    return Config(source=src)
