"""Issue 14's weekly readers (deliver/editions.py) on issue 17's send loop (4 pipelined
sessions, a light ledger): each paper once across daily <-> weekly switches when the send
runs on 4 sessions, and a `digest send` of a weekly edition killed with SIGKILL then run
again leaves every reader at most one copy, each the whole week."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import time_machine

from digest.clock import now_utc
from digest.config import WEEKDAYS
from digest.deliver.digest import send_digests
from digest.models import DeliveryState, Listing
from digest.store import Store
from digest.store.readers import Ledger, add_subscriber, set_frequency
from tests.support.captures import parse_capture
from tests.support.config import smtp_section, write_config
from tests.support.paths import ROOT, real_api_captures
from tests.support.smtpserver import SmtpServer
from tests.test_deliver_weekly import DAYS, READERS, SWITCHES, config, paper_ids

COPIES = 5  # readers per pattern, so that 4 sessions share the work


def copies(address: str) -> list[str]:
    local, _, domain = address.partition("@")
    return [f"{local}-{n}@{domain}" for n in range(COPIES)]


def test_each_paper_once_across_switches_on_four_pipelined_sessions(store: Store) -> None:
    captures = real_api_captures()[: len(DAYS)]
    stored: list[str] = []
    got: dict[str, list[str]] = defaultdict(list)
    emails: Counter[str] = Counter()
    sessions = 0
    with SmtpServer(pipelining=True) as server:
        cfg = config(server.port)
        cfg = dataclasses.replace(cfg, smtp=dataclasses.replace(cfg.smtp, connections=4))
        for pattern, how in READERS.items():
            for address in copies(pattern):
                add_subscriber(cfg, store, address, (), how)
        for day, capture in zip(DAYS, captures, strict=True):
            at = datetime(day.year, day.month, day.day, 7, tzinfo=UTC)
            with time_machine.travel(at, tick=False):
                listing = parse_capture(capture)
                stored += store.store_listing(Listing(listing.papers, listing.url, "api")).new_ids
            with time_machine.travel(at + timedelta(hours=1), tick=True):
                before, opened = len(server.messages), server.sessions
                report = send_digests(cfg, store, day, today=day)
                assert not report.failed and not report.uncertain, report.summary()
                sessions = max(sessions, server.sessions - opened)
                for received in server.messages[before:]:
                    (to,) = received.recipients
                    got[to] += paper_ids(received.data)
                    emails[to] += 1
            if day in SWITCHES:
                address, how = SWITCHES[day]
                for each in copies(address):
                    set_frequency(cfg, store, each, how)
    assert sessions == 4, "the send never ran on 4 sessions"
    assert len(stored) == len(set(stored)) > 100
    expected = {"daily": 15, "weekly": 3, "to-weekly": 6, "to-daily": 7}
    for pattern in READERS:
        for address in copies(pattern):
            repeated = [pid for pid, n in Counter(got[address]).items() if n > 1]
            assert not repeated, f"{address} got {repeated[:5]} twice"
            missing = set(stored) - set(got[address])
            assert not missing, f"{address} never got {sorted(missing)[:5]}"
            assert emails[address] == expected[pattern.split("@")[0]], address
    rows = Ledger(store).rows([DeliveryState.SENT])
    assert len({(r.email, r.day) for r in rows}) == len(rows) == sum(emails.values())


KILLS = 4
WEEKLY_READERS = 400


def make_week(db: Path) -> tuple[list[str], set[str]]:
    """A database with 6 past editions (real captures, each claimed on its day) and
    WEEKLY_READERS weekly readers; return (readers, ids of the week's papers)."""
    store = Store.open(db)
    today = now_utc().date()
    ids: set[str] = set()
    for n, capture in enumerate(real_api_captures()[:6]):
        day = today - timedelta(days=6 - n)
        at = datetime(day.year, day.month, day.day, 7, tzinfo=UTC)
        with time_machine.travel(at, tick=False):
            listing = parse_capture(capture)
            store.store_listing(Listing(listing.papers, listing.url, "api"))
            ids |= {sp.paper.id for sp in store.claim_digest(day, today=day, now=at)}
    readers = [f"weekly{i}@example.org" for i in range(WEEKLY_READERS)]
    stamp = "2026-11-01T00:00:00Z"
    with store.transaction() as conn:
        conn.executemany(
            "INSERT INTO subscribers (email, topics, status, created, updated, frequency) "
            "VALUES (?, ?, 'active', ?, ?, 'weekly')",
            [(a, json.dumps([]), stamp, stamp) for a in readers],
        )
    store.close()
    return readers, ids


def digest_send(config: Path, log: Path) -> subprocess.Popen[bytes]:
    out = log.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "digest", "--config", str(config), "send"],
        cwd=ROOT,
        stdout=out,
        stderr=out,
        env=os.environ | {"DIGEST_SECRET_KEY": "weekly-kill-test"},
    )


def test_kill_9_during_a_weekly_send_then_a_rerun_one_copy_each(tmp_path: Path) -> None:
    db = tmp_path / "digest.db"
    readers, week = make_week(db)
    assert len(week) > 50
    today = now_utc().date()
    log = tmp_path / "send.log"
    rng = random.Random(20261202)
    with SmtpServer(pipelining=True) as server:
        path = write_config(
            tmp_path,
            store={"database": db},
            feeds={"dir": tmp_path / "feeds", "base_url": "https://papers.example.org"},
            smtp=smtp_section(server.port, sender="digest@example.org", connections=4),
            schedule={
                "timezone": "UTC",
                "send_days": list(WEEKDAYS),
                "weekly_day": WEEKDAYS[today.weekday()],
            },
        )
        killed = 0
        for _ in range(KILLS):
            before = server.handler.count
            proc = digest_send(path, log)
            deadline = time.monotonic() + 60
            while server.handler.count == before and proc.poll() is None:
                assert time.monotonic() < deadline, "the send never started"
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.3))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                killed += 1
            proc.wait(20)
        assert killed >= 1, "every send finished before it was killed"
        final = digest_send(path, log)
        assert final.wait(120) == 0, log.read_text()[-2000:]
        taken = server.received_by()
        messages = list(server.messages)
        store = Store.open(db)
        try:
            rows = {
                r["email"]: (r["status"], r["covers_from"])
                for r in store.db.query(
                    "SELECT * FROM deliveries WHERE day = ?", [today.isoformat()]
                )
            }
        finally:
            store.close()
        # The operator's `digest resend` (default: the uncertain ones), on 4 sessions: it
        # mails those readers the same week again, and nobody else.
        before = len(server.messages)
        resent = subprocess.run(
            [sys.executable, "-m", "digest", "--config", str(path), "resend"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            env=os.environ | {"DIGEST_SECRET_KEY": "weekly-kill-test"},
        )
        assert resent.returncode == 0, resent.stdout + resent.stderr
        again = list(server.messages[before:])
    twice = sorted(a for a, n in taken.items() if n > 1)
    assert twice == [], f"{len(twice)} weekly readers got two copies: {twice[:5]}"
    assert sorted(rows) == sorted(readers)
    for address, (status, covers_from) in rows.items():
        assert status in ("sent", "uncertain"), (address, status)
        assert status == "uncertain" or taken[address] == 1, address
        # Every row, sent before or after a kill, says its week started 6 days back.
        assert covers_from == (today - timedelta(days=6)).isoformat(), address
    uncertain = {a for a, (s, _) in rows.items() if s == "uncertain"}
    print(f"\n{killed} kills: {len(uncertain)} uncertain, {len(again)} resent")
    assert len(uncertain) <= KILLS * 4
    assert sorted(r.recipients[0] for r in again) == sorted(uncertain)
    for received in again:
        ids = set(paper_ids(received.data))
        assert ids and ids <= week, received.recipients
    store = Store.open(db)
    try:
        after = {
            r["email"]: (r["status"], r["covers_from"])
            for r in store.db.query("SELECT * FROM deliveries WHERE day = ?", [today.isoformat()])
        }
    finally:
        store.close()
    assert {s for s, _ in after.values()} == {"sent"}
    assert {c for _, c in after.values()} == {(today - timedelta(days=6)).isoformat()}
    # Each copy is the whole week: its papers come from the 6 past editions.
    for received in messages[:: max(1, len(messages) // 20)]:
        ids = set(paper_ids(received.data))
        assert ids and ids <= week, received.recipients
