"""50 readers on the web front while a run writes the database and rewrites the feeds.

The writer stores real captures one after another (each a transaction) and rebuilds the
feeds after each; the readers poll the feeds, /healthz, the landing page and the
archive the whole time. Nothing may fail, and nothing may say "database is locked".
"""

from __future__ import annotations

import threading
from pathlib import Path

import httpx

from digest.jobs import write_feeds
from digest.source.parse import parse_api, parse_page
from digest.store import Store
from digest.web.app import create_app
from tests.support.paths import PAGE_2024_08_01, real_api_captures
from tests.support.webserver import make_config, serving

READERS = 50
PATHS = ("/feeds/all.xml", "/feeds/agents.atom", "/healthz", "/", "/archive")


def test_fifty_readers_while_a_run_writes(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    store = Store.open(config.store.database)
    store.store_listing(parse_page(PAGE_2024_08_01.read_bytes(), "https://huggingface.co/papers"))
    write_feeds(config, store)
    captures = real_api_captures()[:12]
    done = threading.Event()
    problems: list[str] = []
    answered = [0] * READERS

    def writer() -> None:
        try:
            for path in captures:
                listing = parse_api(path.read_bytes(), "https://huggingface.co/api/daily_papers")
                store.store_listing(listing)
                write_feeds(config, store)
        except Exception as e:  # reported below, with the readers' problems
            problems.append(f"writer: {e!r}")
        finally:
            done.set()

    def reader(n: int, base: str) -> None:
        with httpx.Client(base_url=base, timeout=30) as client:
            i = 0
            while not done.is_set() or i < len(PATHS):
                path = PATHS[(n + i) % len(PATHS)]
                i += 1
                try:
                    r = client.get(path)
                except httpx.HTTPError as e:
                    problems.append(f"{path}: {e!r}")
                    continue
                answered[n] += 1
                if r.status_code != 200 or "database is locked" in r.text:
                    problems.append(f"{path}: {r.status_code} {r.text[:200]}")

    with serving(create_app(config)) as base:
        threads = [threading.Thread(target=reader, args=(n, base)) for n in range(READERS)]
        for t in threads:
            t.start()
        writer()
        for t in threads:
            t.join(60)
    store.close()
    assert problems == []
    assert all(answered), "every reader got answers"
    assert sum(answered) >= READERS * len(PATHS)
