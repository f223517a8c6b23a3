"""The web front through real HTTP: uvicorn on 127.0.0.1, httpx as the client.

Feeds are written by the real `write_feeds` from a store filled with the real capture
page-daily-2024-08-01.html.
"""

from __future__ import annotations

import dataclasses
import gzip
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest

from digest.config import Config
from digest.jobs import ingest_file, write_feeds
from digest.source.parse import parse_any
from digest.store import Store
from digest.web.app import accepts_gzip, create_app
from tests.support.paths import PAGE_2024_08_01
from tests.support.webserver import make_config, raw_get, serving


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[Config, str]]:
    config = make_config(tmp_path)
    store = Store.open(config.store.database)
    try:
        result = ingest_file(store, PAGE_2024_08_01)
        assert result.status == "ok" and result.new > 0
        write_feeds(config, store)
    finally:
        store.close()
    with serving(create_app(config)) as base:
        yield config, base


FEEDS = [
    ("all.xml", "application/rss+xml"),
    ("all.atom", "application/atom+xml"),
    ("all.json", "application/feed+json"),
    ("agents.xml", "application/rss+xml"),
    ("feeds.opml", "text/x-opml"),
]


@pytest.mark.parametrize(("name", "content_type"), FEEDS)
def test_feed_content_type_and_bytes(
    site: tuple[Config, str], name: str, content_type: str
) -> None:
    config, base = site
    r = httpx.get(f"{base}/feeds/{name}")
    assert r.status_code == 200
    assert r.headers["content-type"].split(";")[0] == content_type
    assert r.content == (Path(config.feeds.dir) / name).read_bytes()
    assert r.headers["etag"].startswith('"')
    assert r.headers["last-modified"].endswith("GMT")


def test_feed_304_on_if_none_match(site: tuple[Config, str]) -> None:
    _, base = site
    with httpx.Client(base_url=base) as client:
        first = client.get("/feeds/all.xml")
        assert first.status_code == 200
        etag = first.headers["etag"]
        again = client.get("/feeds/all.xml", headers={"If-None-Match": etag})
        assert again.status_code == 304
        assert again.content == b""
        assert again.headers["etag"] == etag
        listed = client.get("/feeds/all.xml", headers={"If-None-Match": f'"x", W/{etag}'})
        assert listed.status_code == 304
        other = client.get("/feeds/all.xml", headers={"If-None-Match": '"not-this-one"'})
        assert other.status_code == 200
        assert other.content == first.content


def test_feed_304_on_if_modified_since(site: tuple[Config, str]) -> None:
    config, base = site
    with httpx.Client(base_url=base) as client:
        first = client.get("/feeds/all.atom")
        since = first.headers["last-modified"]
        assert (
            client.get("/feeds/all.atom", headers={"If-Modified-Since": since}).status_code == 304
        )
        mtime = (Path(config.feeds.dir) / "all.atom").stat().st_mtime
        before = format_datetime(datetime.fromtimestamp(mtime - 3600, UTC), usegmt=True)
        older = client.get("/feeds/all.atom", headers={"If-Modified-Since": before})
        assert older.status_code == 200
        # If-None-Match wins over If-Modified-Since (RFC 9110 13.2.2).
        both = client.get(
            "/feeds/all.atom", headers={"If-Modified-Since": since, "If-None-Match": '"stale"'}
        )
        assert both.status_code == 200


def test_feed_changes_when_the_file_is_rewritten(site: tuple[Config, str]) -> None:
    config, base = site
    with httpx.Client(base_url=base) as client:
        etag = client.get("/feeds/all.json").headers["etag"]
        store = Store.open(config.store.database)
        try:
            other = REAL_DIR / "api-daily_papers-2024-03-12.json"
            assert ingest_file(store, other).new > 0
            assert "all.json" in write_feeds(config, store).written
        finally:
            store.close()
        r = client.get("/feeds/all.json", headers={"If-None-Match": etag})
        assert r.status_code == 200
        assert r.headers["etag"] != etag
        assert r.content == (Path(config.feeds.dir) / "all.json").read_bytes()


REAL_DIR = PAGE_2024_08_01.parent


def test_gzip_only_when_asked(site: tuple[Config, str]) -> None:
    config, base = site
    raw = (Path(config.feeds.dir) / "all.xml").read_bytes()
    with httpx.Client(base_url=base) as client:
        r = client.get("/feeds/all.xml", headers={"Accept-Encoding": "gzip"})
        assert r.headers["content-encoding"] == "gzip"
        assert r.headers["vary"] == "Accept-Encoding"
        assert r.content == raw  # httpx decoded it
        assert int(r.headers["content-length"]) < len(raw) / 2
        assert r.headers["etag"].endswith('-gz"')
        # The gzip form's ETag revalidates too.
        again = client.get(
            "/feeds/all.xml",
            headers={"Accept-Encoding": "gzip", "If-None-Match": r.headers["etag"]},
        )
        assert again.status_code == 304
        plain = client.get("/feeds/all.xml", headers={"Accept-Encoding": "identity"})
        assert "content-encoding" not in plain.headers
        assert plain.content == raw
        refused = client.get("/feeds/all.xml", headers={"Accept-Encoding": "gzip;q=0"})
        assert "content-encoding" not in refused.headers
        page = client.get("/", headers={"Accept-Encoding": "gzip"})
        assert page.headers.get("content-encoding") == "gzip"  # GZipMiddleware
    with httpx.stream(
        "GET", f"{base}/feeds/all.xml", headers={"Accept-Encoding": "gzip"}
    ) as streamed:
        assert gzip.decompress(b"".join(streamed.iter_raw())) == raw


@pytest.mark.parametrize(
    "target",
    [
        "/feeds/../digest.db",
        "/feeds/..%2fdigest.db",
        "/feeds/%2e%2e/digest.db",
        "/feeds/%2e%2e%2fdigest.db",
        "/feeds/..%5cdigest.db",
        "/feeds/%2E%2E/%2E%2E/etc/passwd",
        "/feeds/secret.txt",
        "/feeds/ALL.XML",
        "/feeds/all.xml%00.txt",
        "/feeds/.all.xml",
        "/feeds/missing.xml",
        "/digest.db",
    ],
)
def test_no_path_traversal(site: tuple[Config, str], target: str) -> None:
    config, base = site
    (Path(config.feeds.dir) / "secret.txt").write_text("not a feed")
    assert Path(config.store.database).is_file()
    assert raw_get(base, target) == 404


def test_landing_page_lists_topics_and_feeds(site: tuple[Config, str]) -> None:
    _, base = site
    r = httpx.get(f"{base}/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    page = r.text
    for label, name in (("LLM agents", "agents"), ("Computer vision", "vision")):
        assert label in page
        for ext in ("xml", "atom", "json"):
            assert f'href="/feeds/{name}.{ext}"' in page
    assert 'href="/feeds/feeds.opml"' in page
    assert '<html lang="en">' in page
    # Every link on the page that points at a feed answers.
    for ext in ("xml", "atom", "json"):
        assert httpx.get(f"{base}/feeds/agents.{ext}").status_code == 200


def test_healthz_ok_after_success_then_503_after_failure(site: tuple[Config, str]) -> None:
    config, base = site
    r = httpx.get(f"{base}/healthz")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ok"
    assert body["papers"] > 0
    assert body["last_success"]["status"] == "ok"
    store = Store.open(config.store.database)
    try:
        store.record_failure("http://127.0.0.1:9/papers", "page", "network: refused")
    finally:
        store.close()
    r = httpx.get(f"{base}/healthz")
    assert r.status_code == 503
    assert r.json()["last_run"]["status"] == "failed"
    assert "network: refused" in " ".join(r.json()["problems"])


def test_healthz_503_when_last_success_is_stale(tmp_path: Path) -> None:
    config = make_config(tmp_path, stale_after=24)
    store = Store.open(config.store.database)
    try:
        listing = dataclasses.replace(
            parse_any(PAGE_2024_08_01.read_bytes(), str(PAGE_2024_08_01)), source="file"
        )
        store.store_listing(listing, started=datetime.now(UTC) - timedelta(hours=30))
    finally:
        store.close()
    with serving(create_app(config)) as base:
        r = httpx.get(f"{base}/healthz")
        assert r.status_code == 503
        assert "30 hours old" in " ".join(r.json()["problems"])
    relaxed = dataclasses.replace(config, web=dataclasses.replace(config.web, stale_after=48))
    with serving(create_app(relaxed, next_runs=lambda: {"fetch": None})) as base:
        r = httpx.get(f"{base}/healthz")
        assert r.status_code == 200
        assert r.json()["next_runs"] == {"fetch": None}


def test_healthz_503_on_empty_database(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    Store.open(config.store.database).close()
    with serving(create_app(config)) as base:
        r = httpx.get(f"{base}/healthz")
    assert r.status_code == 503
    assert r.json()["problems"] == ["no run yet"]


def test_accepts_gzip() -> None:
    assert accepts_gzip("gzip, deflate, br")
    assert accepts_gzip("br;q=1.0, gzip;q=0.8")
    assert accepts_gzip("*")
    assert not accepts_gzip("gzip;q=0")
    assert not accepts_gzip("identity")
    assert not accepts_gzip("")
    assert accepts_gzip("*;q=0, gzip")  # named beats the wildcard, in either order
    assert not accepts_gzip("gzip;q=0, *")
    assert not accepts_gzip("*;q=0")


def test_50_readers_while_a_run_writes(site: tuple[Config, str]) -> None:
    """Feed readers and /healthz keep answering while runs write the database and feeds."""
    config, base = site
    listing = parse_any(PAGE_2024_08_01.read_bytes(), str(PAGE_2024_08_01))
    stop = threading.Event()
    writer_errors: list[BaseException] = []
    writes = 0

    def writer() -> None:
        nonlocal writes
        store = Store.open(config.store.database)
        try:
            while not stop.is_set():
                store.store_listing(listing)
                write_feeds(config, store)
                writes += 1
        except BaseException as e:  # reported below
            writer_errors.append(e)
        finally:
            store.close()

    def reader(n: int) -> list[int]:
        codes = []
        with httpx.Client(base_url=base, timeout=30) as client:
            etag = None
            for i in range(8):
                path = "/healthz" if i % 4 == 3 else f"/feeds/{('all', 'agents')[n % 2]}.xml"
                headers = {"If-None-Match": etag} if etag and i % 2 else {}
                r = client.get(path, headers=headers)
                if path != "/healthz":
                    etag = r.headers.get("etag", etag)
                    if r.status_code == 200:
                        assert r.content.startswith(b"<?xml")
                codes.append(r.status_code)
        return codes

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        with ThreadPoolExecutor(max_workers=50) as pool:
            results = list(pool.map(reader, range(50)))
    finally:
        stop.set()
        thread.join(60)
    assert not writer_errors, writer_errors
    assert writes > 0
    codes = [c for codes in results for c in codes]
    assert len(codes) == 400
    assert set(codes) <= {200, 304}, sorted(set(codes))
