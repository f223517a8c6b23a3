"""A real feed reader: newsboat, headless, fetching our feeds over HTTP from 127.0.0.1.

Each feed gets its own newsboat cache: newsboat keys items by guid across feeds, and our
guid (the arXiv URL) is the same in all.xml and a topic feed, so one cache shared by
both would file a paper under one feed only.
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

from digest.render.feed import clean, write_feeds
from digest.store import Store

from .test_feeds import expected_items, feed_config, fill_store

NEWSBOAT = shutil.which("newsboat")
pytestmark = pytest.mark.skipif(
    NEWSBOAT is None, reason="newsboat is not installed (Debian package `newsboat`)"
)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def served_feeds(tmp_path: Path, store: Store) -> Iterator[tuple[str, dict[str, list[str]]]]:
    """Feeds written from real captures, served on 127.0.0.1; yields (base URL, titles)."""
    fill_store(store)
    config = feed_config(tmp_path)
    write_feeds(config, store)
    titles = {
        name: [clean(sp.paper.title) for sp in papers]
        for name, papers in expected_items(config, store).items()
    }
    handler = functools.partial(_QuietHandler, directory=str(tmp_path / "feeds"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", titles
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _newsboat(home: Path, url: str, *commands: str) -> tuple[str, Path]:
    """Run newsboat headless on one feed URL; return (stdout, its cache file)."""
    home.mkdir()
    urls = home / "urls"
    urls.write_text(url + "\n")
    config = home / "config"
    config.write_text("")
    cache = home / "cache.db"
    args = [str(NEWSBOAT), "-u", str(urls), "-c", str(cache), "-C", str(config)]
    for command in commands:
        args += ["-x", command]
    done = subprocess.run(
        args,
        env={"HOME": str(home), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout, cache


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
