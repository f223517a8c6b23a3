"""A database made by the code of this morning (commit c796065, run from its own tree in
a subprocess: its fetch, its subscribers, its send to aiosmtpd) opened by today's code:
every migration of today's five branches runs on it, and the data is kept: papers (the
cached count too), subscribers (daily), deliveries (no second copy), and the new FTS
search finds the old papers. Then /healthz on a real uvicorn counts the papers, the
uncertain rows and a bouncing reader together."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from datetime import date
from pathlib import Path

import httpx
import pytest

from digest.config import Config, FeedsConfig, StoreConfig, SubscriberConfig
from digest.deliver.digest import send_digests
from digest.jobs import ingest_file, write_feeds
from digest.store import Store
from digest.store.readers import record_bounce
from digest.store.schema import MIGRATIONS
from digest.web.app import create_app
from tests.support.config import smtp_config, smtp_section, write_config
from tests.support.paths import ROOT, real_api_captures
from tests.support.smtpserver import SmtpServer
from tests.support.webserver import serving

START = "c796065"  # main at the start of the day, before the five merges
READERS = ["old-one@example.org", "old-two@example.org", "old-three@example.org"]


@pytest.fixture(scope="module")
def old_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.fail("this test needs the project's git history (git archive c796065)")
    tree = tmp_path_factory.mktemp("old")
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", START], capture_output=True, check=True, timeout=60
    )
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True, timeout=60)
    assert (tree / "digest" / "store" / "schema.py").exists()
    return tree


def old_digest(tree: Path, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`digest ARGS` as this morning's code runs it (its package first on the path)."""
    done = subprocess.run(
        [sys.executable, "-m", "digest", "--config", str(config), *args],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ | {"PYTHONPATH": str(tree), "DIGEST_SECRET_KEY": "upgrade-test"},
    )
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done


def old_version(tree: Path) -> int:
    code = "from digest.store.schema import MIGRATIONS; print(len(MIGRATIONS))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env=os.environ | {"PYTHONPATH": str(tree)},
    )
    return int(out.stdout)


def test_a_database_of_this_morning_upgrades_with_its_data(old_tree: Path, tmp_path: Path) -> None:
    db = tmp_path / "digest.db"
    captures = real_api_captures()[:3]
    with SmtpServer() as server:
        path = write_config(
            tmp_path,
            store={"database": db},
            feeds={"dir": tmp_path / "feeds", "base_url": "https://papers.example.org"},
            smtp=smtp_section(server.port, sender="digest@example.org", connections=1),
            schedule={"timezone": "UTC"},
        )
        # The old config had no smtp.connections: write it without.
        path.write_text(path.read_text().replace("connections = 1\n", ""))
        for capture in captures:
            old_digest(old_tree, path, "fetch", "--from", str(capture))
        for address in READERS:
            old_digest(old_tree, path, "subscribers", "add", address)
        old_digest(old_tree, path, "send")
        old_mail = {r.recipients[0] for r in server.messages}
    assert old_mail == set(READERS)

    version = old_version(old_tree)
    assert version < len(MIGRATIONS)
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == version
        papers_before = dict(conn.execute("SELECT id, title FROM papers").fetchall())
        deliveries_before = conn.execute(
            "SELECT email, day, status, message_id FROM deliveries ORDER BY email"
        ).fetchall()
        # An "uncertain" row of an earlier day, as a crash of the old code leaves one.
        conn.execute(
            "INSERT INTO deliveries (email, day, status, queued) "
            "VALUES ('old-one@example.org', '2026-01-05', 'uncertain', '2026-01-05T07:00:00Z')"
        )
    assert len(papers_before) > 30 and len(deliveries_before) == len(READERS)

    store = Store.open(db)  # today's code: it migrates
    try:
        assert store.db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        # Papers kept, and the count the triggers keep starts right.
        now = dict(store.db.execute("SELECT id, title FROM papers").fetchall())
        assert now == papers_before
        assert store.count_papers() == len(papers_before)
        # Subscribers kept, daily; deliveries kept as they were.
        subs = store.db.execute("SELECT email, status, frequency FROM subscribers").fetchall()
        assert sorted(subs) == sorted((a, "active", "daily") for a in READERS)
        kept = store.db.execute(
            "SELECT email, day, status, message_id FROM deliveries WHERE day != '2026-01-05' "
            "ORDER BY email"
        ).fetchall()
        assert kept == deliveries_before
        # The new FTS index holds the old papers: a word of each of a few old titles
        # finds that paper.
        for pid, title in list(papers_before.items())[:10]:
            word = max(
                (w.strip(".,:;()!?\"'") for w in title.split()),
                key=len,
            )
            found = {sp.paper.id for sp in store.papers(search=word, limit=200)}
            assert pid in found, (pid, word)
    finally:
        store.close()

    # Today's send on the upgraded file: nobody gets a second copy.
    day = date.fromisoformat(deliveries_before[0][1])
    with SmtpServer(pipelining=True) as server:
        config = Config(
            store=StoreConfig(database=str(db)),
            feeds=FeedsConfig(dir=str(tmp_path / "feeds"), base_url="https://papers.example.org"),
            smtp=smtp_config(server.port, sender="digest@example.org"),
            secret_key="upgrade-test",
            subscribers=[SubscriberConfig("config-reader@example.org")],
        )
        store = Store.open(db)
        try:
            report = send_digests(config, store, day, today=day)
        finally:
            store.close()
        # The config reader is new: only they are mailed.
        assert report.already_sent == len(READERS), report.summary()
        assert report.sent == ["config-reader@example.org"], report.summary()
        assert [r.recipients for r in server.messages] == [["config-reader@example.org"]]

    # /healthz on a real uvicorn: the cached count, one uncertain row, then a bouncing
    # reader (not counted once unsubscribed).
    store = Store.open(db)
    try:
        record_bounce(store, "old-two@example.org", hard=True, reply="550 5.1.1", source="smtp")
    finally:
        store.close()
    with serving(create_app(config)) as base:
        body = httpx.get(f"{base}/healthz", timeout=10).json()
        assert body["papers"] == len(papers_before)
        assert body["uncertain"] == 1
        assert body["bouncing"] == 1
        store = Store.open(db)
        try:
            with store.transaction() as conn:
                conn.execute(
                    "UPDATE subscribers SET status = 'unsubscribed' WHERE email = ?",
                    ["old-two@example.org"],
                )
        finally:
            store.close()
        assert httpx.get(f"{base}/healthz", timeout=10).json()["bouncing"] == 0
        # The search page finds an old paper by a word of its title.
        pid, title = next(iter(papers_before.items()))
        word = max((w.strip(".,:;()!?\"'") for w in title.split()), key=len)
        found = httpx.get(f"{base}/search", params={"q": word}, timeout=10)
        assert found.status_code == 200 and pid in found.text, (pid, word)
        # Today's fetch on the upgraded file: counted by the triggers, rising written.
        store = Store.open(db)
        try:
            ingest_file(store, real_api_captures()[3])
            assert store.count_papers() == int(
                store.db.execute("SELECT count(*) FROM papers").fetchone()[0]
            )
            assert store.count_papers() > len(papers_before)
        finally:
            store.close()
        body = httpx.get(f"{base}/healthz", timeout=10).json()
        assert body["papers"] > len(papers_before)
        store = Store.open(db)
        try:
            write_feeds(config, store)
        finally:
            store.close()
        assert (tmp_path / "feeds" / "rising.xml").exists()
        assert httpx.get(f"{base}/feeds/rising.xml", timeout=10).status_code == 200
