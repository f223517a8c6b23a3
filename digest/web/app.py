"""The web front (Starlette): the feed files and /healthz; the pages are in web/pages.py.

Feeds are files `render.feed.write_feeds` wrote into `config.feeds.dir`; only names like
`all.xml` or `agents.atom` are served (a fixed pattern, no path joins of user text, so no
traversal). Each file is read once per version (inode, mtime, size) and kept in memory
with its gzip form and validators, so a request costs a `stat` and a write: that is what
lets one Python process answer feed readers at a useful rate (bench/serve.py).

Caching: a strong ETag from the bytes (so it is the same in every process and after a
restart), Last-Modified from the file, 304 for If-None-Match (which wins) or
If-Modified-Since. The gzip form has its own ETag, as RFC 9110 asks of a different
representation; an If-None-Match naming either form answers 304.

Every response, feeds and errors included, carries the security headers (SECURITY_HEADERS):
no scripts, no framing, no MIME sniffing, no Referer (our paths hold tokens). A path with
a trailing slash is redirected to the one without, to a Location made from
`feeds.base_url`, never from the request's Host header.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from digest.addresses import address_key
from digest.config import Config
from digest.errors import DigestError
from digest.models import JobStatus, RunStatus
from digest.store.runs import health_facts
from digest.web.api import Api
from digest.web.browse import Browse
from digest.web.pages import page_routes
from digest.web.webhooks import webhook_routes

FEED_NAME = re.compile(r"^[a-z0-9_-]+\.(xml|atom|json|opml)$")
CONTENT_TYPES = {
    "xml": "application/rss+xml; charset=utf-8",
    "atom": "application/atom+xml; charset=utf-8",
    "json": "application/feed+json; charset=utf-8",
    "opml": "text/x-opml; charset=utf-8",
}
NextRuns = Callable[[], Mapping[str, datetime | None]]
# Our pages have no scripts and one inline <style>; archive pages show thumbnails (https).
CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' https: data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
# A path we redirect without its trailing slash: plain characters only, so the target is
# never another host ("//evil", "/\\evil") whatever was asked.
SLASHED = re.compile(r"/[A-Za-z0-9._~-][A-Za-z0-9._~/-]*/")


# -- feed files ------------------------------------------------------------------------


@dataclass(frozen=True)
class FeedFile:
    """One feed file's bytes in both forms, and its validators."""

    key: tuple[int, int, int]  # (inode, mtime_ns, size): a rewrite changes at least one
    body: bytes
    gzipped: bytes
    etag: str
    etag_gz: str
    modified: datetime  # whole seconds, as Last-Modified can say it
    content_type: str

    def headers(self, gz: bool) -> dict[str, str]:
        h = {
            "etag": self.etag_gz if gz else self.etag,
            "last-modified": format_datetime(self.modified, usegmt=True),
            # Readers revalidate every poll; the 304 is cheap.
            "cache-control": "no-cache",
            "vary": "Accept-Encoding",
            "content-type": self.content_type,
        }
        if gz:
            h["content-encoding"] = "gzip"
        return h


class FeedCache:
    """Feed files by name, re-read only when the file on disk changed."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._files: dict[str, FeedFile] = {}

    def get(self, name: str) -> FeedFile | None:
        """Return the current version of feed file `name`, or None if it is not there.

        `name` must already match FEED_NAME.
        """
        path = self.folder / name
        try:
            st = os.stat(path)
        except OSError:
            return None
        cached = self._files.get(name)
        if cached is not None and cached.key == (st.st_ino, st.st_mtime_ns, st.st_size):
            return cached
        loaded = self._load(path, name)
        if loaded is not None:
            self._files[name] = loaded
        return loaded

    def _load(self, path: Path, name: str) -> FeedFile | None:
        try:
            # fstat on the open file: a rename in between cannot pair new bytes with old stats.
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                body = f.read()
        except OSError:
            return None
        digest = hashlib.blake2b(body, digest_size=12).hexdigest()
        return FeedFile(
            key=(st.st_ino, st.st_mtime_ns, st.st_size),
            body=body,
            gzipped=gzip.compress(body, compresslevel=6, mtime=0),
            etag=f'"{digest}"',
            etag_gz=f'"{digest}-gz"',
            modified=datetime.fromtimestamp(int(st.st_mtime), UTC),
            content_type=CONTENT_TYPES[name.rsplit(".", 1)[1]],
        )


def accepts_gzip(header: str) -> bool:
    """Return True if an Accept-Encoding value allows gzip (q=0 refuses it). gzip named
    explicitly wins over `*`, wherever each stands (RFC 9110 12.5.3)."""
    wildcard: bool | None = None
    for part in header.lower().split(","):
        coding, _, params = part.strip().partition(";")
        allowed = not re.fullmatch(r"q\s*=\s*0(\.0*)?", params.strip())
        if coding.strip() in ("gzip", "x-gzip"):
            return allowed
        if coding.strip() == "*":
            wildcard = allowed
    return bool(wildcard)


def not_modified(feed: FeedFile, if_none_match: str | None, if_modified_since: str | None) -> bool:
    """Return True when the request's validators say the client's copy is current."""
    if if_none_match is not None:
        if if_none_match.strip() == "*":
            return True
        # Weak comparison (RFC 9110 13.1.2): W/ does not matter for a GET.
        tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
        return feed.etag in tags or feed.etag_gz in tags
    if if_modified_since:
        try:
            since = parsedate_to_datetime(if_modified_since)
        except (TypeError, ValueError):
            return False
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        return feed.modified <= since
    return False


# -- health ----------------------------------------------------------------------------


def health(config: Config, next_runs: NextRuns | None = None) -> tuple[int, dict[str, Any]]:
    """Return (HTTP status, body) for /healthz: 503 if the last run failed or is stale."""
    database = config.store.database
    body: dict[str, Any] = {
        "status": "ok",
        "last_run": None,
        "last_success": None,
        "papers": 0,
        "last_send": None,
        "uncertain": 0,
        "bouncing": 0,
        "next_runs": {},
    }
    problems: list[str] = []
    if next_runs is not None:
        body["next_runs"] = {k: v.isoformat() if v else None for k, v in next_runs().items()}
    try:
        readers = frozenset(address_key(s.email) for s in config.subscribers)
        facts = health_facts(database, config.smtp.max_bounces, readers)
    except DigestError as e:
        return 503, body | {"status": "failing", "problems": [str(e)]}
    last, ok, send = facts.last_run, facts.last_success, facts.last_send
    body |= {"papers": facts.papers, "uncertain": facts.uncertain, "bouncing": facts.bouncing}
    body["last_run"], body["last_success"], body["last_send"] = last, ok, send
    if last is None:
        problems.append("no run yet")
    elif last["status"] == RunStatus.FAILED:
        problems.append(f"the last run failed: {last['reason']}")
    if ok is not None:
        age = datetime.now(UTC) - datetime.fromisoformat(ok["started"].replace("Z", "+00:00"))
        if age > timedelta(hours=config.web.stale_after):
            hours = age.total_seconds() / 3600
            problems.append(
                f"the last successful run is {hours:.0f} hours old "
                f"(more than web.stale_after = {config.web.stale_after})"
            )
    elif last is not None:
        problems.append("no run has succeeded yet")
    if send is not None and send["status"] == JobStatus.FAILED:
        problems.append(f"the last send failed: {send['summary']}")
    if problems:
        body["status"] = "failing"
        body["problems"] = problems
        return 503, body
    return 200, body


# -- the app ---------------------------------------------------------------------------


class SecurityHeaders:
    """ASGI middleware: add SECURITY_HEADERS to every response (a plain ASGI wrapper, so
    a feed poll pays no more than a list append)."""

    def __init__(self, app: ASGIApp, hsts: bool = False) -> None:
        self.app = app
        self.headers = list(SECURITY_HEADERS)
        if hsts:
            self.headers.append((b"strict-transport-security", b"max-age=31536000"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self.headers]
            await send(message)

        await self.app(scope, receive, with_headers)


class Front:
    """The feed files, /healthz and the 404 / slash redirect, as handlers (methods) over
    one config and one feed cache."""

    def __init__(self, config: Config, next_runs: NextRuns | None = None) -> None:
        self.config = config
        self.next_runs = next_runs
        self.feeds = FeedCache(config.feeds.dir)
        # Where our paths live under base_url ("" or "/digest"), for redirects.
        self.prefix = urlsplit(config.feeds.base_url).path.rstrip("/")

    async def feed(self, request: Request) -> Response:
        name = request.path_params["name"]
        if not FEED_NAME.match(name):
            return PlainTextResponse("not found\n", status_code=404)
        found = self.feeds.get(name)
        if found is None:
            return PlainTextResponse("not found\n", status_code=404)
        h = request.headers
        gz = accepts_gzip(h.get("accept-encoding", ""))
        headers = found.headers(gz)
        if not_modified(found, h.get("if-none-match"), h.get("if-modified-since")):
            del headers["content-type"]
            headers.pop("content-encoding", None)
            return Response(status_code=304, headers=headers)
        return Response(found.gzipped if gz else found.body, headers=headers)

    async def healthz(self, request: Request) -> Response:
        status, body = await run_in_threadpool(health, self.config, self.next_runs)
        return JSONResponse(body, status_code=status)

    async def not_found(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Starlette's own slash redirect builds its Location from the Host header.
        path = scope.get("raw_path", b"").decode("latin-1") or scope["path"]
        if scope["method"] in ("GET", "HEAD") and SLASHED.fullmatch(path):
            target = self.prefix + "/" + path.strip("/")
            query = scope.get("query_string", b"").decode("latin-1")
            response: Response = Response(
                status_code=308, headers={"location": target + (f"?{query}" if query else "")}
            )
        else:
            response = PlainTextResponse("not found\n", status_code=404)
        await response(scope, receive, send)


def create_app(config: Config, *, next_runs: NextRuns | None = None) -> ASGIApp:
    """Return the ASGI app serving `config`'s feeds, pages and /healthz."""
    front = Front(config, next_runs)
    browse = Browse(config)  # the reading pages and the API share its matcher and cache
    # Pages and health JSON go through GZipMiddleware; feeds come compressed already
    # (and it would gzip a feed for "gzip;q=0", which it does not parse).
    gz = [Middleware(GZipMiddleware, minimum_size=500)]
    app = Starlette(
        routes=[
            Route("/feeds/{name}", front.feed, methods=["GET", "HEAD"]),
            Route("/healthz", front.healthz, methods=["GET", "HEAD"], middleware=gz),
            *page_routes(config, gz, browse),
            *Api(browse).routes(gz),
            *webhook_routes(config),
        ]
    )
    app.router.redirect_slashes = False
    app.router.default = front.not_found
    return SecurityHeaders(app, hsts=config.feeds.base_url.lower().startswith("https:"))
