"""A real feed reader: newsboat, headless, fetching our feeds over HTTP from 127.0.0.1.

The feeds are written with `base_url` set to the local server, so feeds.opml points at
it and `newsboat -i feeds.opml` subscribes to what we serve. newsboat keys items by guid
across all its feeds: the import test is the one that catches a guid shared by all.xml
and a topic feed (a paper then shows in one of them only).
"""

from __future__ import annotations

import functools
import re
import shutil
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from digest.jobs import write_feeds
from digest.models import StoredPaper
from digest.render.feed import clean
from digest.store import Store
from tests.support.feeds import expected_items, feed_config, fill_store, guid

NEWSBOAT = shutil.which("newsboat")
pytestmark = pytest.mark.skipif(
    NEWSBOAT is None, reason="newsboat is not installed (Debian package `newsboat`)"
)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def site(tmp_path: Path, store: Store) -> Iterator[tuple[str, dict[str, list[StoredPaper]]]]:
    """Feeds written from real captures and served on 127.0.0.1 under /feeds/, with
    base_url set to that server; yields (the feeds' base URL, feed name -> its papers)."""
    folder = tmp_path / "site"
    (folder / "feeds").mkdir(parents=True)
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        fill_store(store)
        config = feed_config(tmp_path, dir=str(folder / "feeds"), base_url=base)
        write_feeds(config, store)
        yield f"{base}/feeds", expected_items(config, store)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def served_feeds(
    site: tuple[str, dict[str, list[StoredPaper]]],
) -> tuple[str, dict[str, list[str]]]:
    """(the feeds' base URL, feed name -> the titles it must show)."""
    base, papers = site
    return base, {name: [clean(sp.paper.title) for sp in sps] for name, sps in papers.items()}


def _newsboat(
    home: Path, url: str | None, *commands: str, opml: Path | None = None
) -> tuple[str, Path]:
    """Run newsboat headless on one feed URL (or the feeds of an OPML file, imported
    first with `newsboat -i`); return (stdout, its cache file)."""
    home.mkdir()
    urls = home / "urls"
    urls.write_text(f"{url}\n" if url else "")
    config = home / "config"
    config.write_text("")
    cache = home / "cache.db"
    base = [str(NEWSBOAT), "-u", str(urls), "-c", str(cache), "-C", str(config)]
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    out = ""
    runs = [["-i", str(opml)]] if opml else []
    runs.append([arg for command in commands for arg in ("-x", command)])
    for extra in runs:
        done = subprocess.run(base + extra, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        out += done.stdout
    return out, cache


@pytest.mark.parametrize("file", ["all.xml", "all.atom", "agents.xml", "agents.atom"])
def test_newsboat_counts_as_unread_every_paper_of_the_feed(
    tmp_path: Path, served_feeds: tuple[str, dict[str, list[str]]], file: str
) -> None:
    base, titles = served_feeds
    out, _ = _newsboat(tmp_path / "nb", f"{base}/{file}", "reload", "print-unread")
    m = re.search(r"(\d+) unread articles", out)
    assert m, out
    expected = len(titles[file.split(".")[0]])
    assert expected > 0
    assert int(m.group(1)) == expected


@pytest.mark.parametrize("file", ["all.xml", "all.atom", "vision.xml"])
def test_newsboat_stores_the_titles_of_the_database(
    tmp_path: Path, served_feeds: tuple[str, dict[str, list[str]]], file: str
) -> None:
    base, titles = served_feeds
    url = f"{base}/{file}"
    _, cache = _newsboat(tmp_path / "nb", url, "reload")
    with sqlite3.connect(cache) as db:
        rows = db.execute("SELECT title FROM rss_item WHERE feedurl = ?", [url]).fetchall()
    assert sorted(r[0] for r in rows) == sorted(titles[file.split(".")[0]])


def test_newsboat_reads_an_empty_feed(
    tmp_path: Path, served_feeds: tuple[str, dict[str, list[str]]]
) -> None:
    base, titles = served_feeds
    assert titles["nothing"] == []
    out, _ = _newsboat(tmp_path / "nb", f"{base}/nothing.xml", "reload", "print-unread")
    assert re.search(r"\b0 unread articles", out), out


def test_newsboat_importing_feeds_opml_shows_every_feed_whole(
    tmp_path: Path, site: tuple[str, dict[str, list[StoredPaper]]]
) -> None:
    """One reader, every feed of the OPML list: each shows all its papers, none hidden."""
    base, papers = site
    out, cache = _newsboat(
        tmp_path / "nb", None, "reload", opml=tmp_path / "site" / "feeds" / "feeds.opml"
    )
    assert "Import of" in out
    subscribed = (tmp_path / "nb" / "urls").read_text().split()
    assert subscribed == [f"{base}/{name}.xml" for name in papers]
    with sqlite3.connect(cache) as db:
        rows = db.execute("SELECT feedurl, guid FROM rss_item").fetchall()
    for name, expected in papers.items():
        got = sorted(g for url, g in rows if url == f"{base}/{name}.xml")
        assert got == sorted(guid(name, sp) for sp in expected), name
    assert len(papers["all"]) > len(papers["agents"]) > 0


@pytest.mark.parametrize("file", ["all.xml", "all.atom"])
def test_newsboat_shows_every_author_and_the_thumbnail(
    tmp_path: Path, site: tuple[str, dict[str, list[StoredPaper]]], file: str
) -> None:
    """newsboat shows one author line (all names) and the image in the article body."""
    base, papers = site
    url = f"{base}/{file}"
    _, cache = _newsboat(tmp_path / "nb", url, "reload")
    with sqlite3.connect(cache) as db:
        rows = db.execute(
            "SELECT guid, author, content FROM rss_item WHERE feedurl = ?", [url]
        ).fetchall()
    by_guid = {guid("all", sp): sp.paper for sp in papers["all"]}
    assert len(rows) == len(by_guid)
    assert max(len(p.authors) for p in by_guid.values()) > 8
    thumbs = 0
    for key, author, content in rows:
        paper = by_guid[key]
        assert author == ", ".join(clean(a) for a in paper.authors), paper.id
        if paper.thumbnail:
            thumbs += 1
            assert f'<img src="{paper.thumbnail}"' in content, paper.id
    assert thumbs > 0
