"""Real `digest send` processes, killed (SIGKILL) mid-send or run two at once, against a
real aiosmtpd server: every reader ends with exactly one copy, or at most one and the
ledger row "uncertain" (and then said so); no ledger row is lost.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from digest.jobs import ingest_file
from digest.store import Store
from tests.support.config import smtp_section, write_config
from tests.support.paths import PAGE_2024_08_01, ROOT
from tests.support.smtpserver import SmtpServer

KILLS = 10
READERS = 2000


def make_db(db: Path, readers: list[str]) -> None:
    """A database with a real day of papers (today's edition) and `readers` subscribed."""
    store = Store.open(db)
    ingest_file(store, PAGE_2024_08_01)
    stamp = "2024-08-01T00:00:00Z"
    with store.transaction() as conn:
        conn.executemany(
            "INSERT INTO subscribers (email, topics, status, created, updated) "
            "VALUES (?, ?, 'active', ?, ?)",
            [(a, json.dumps([]), stamp, stamp) for a in readers],
        )
    store.close()


def send_config(path: Path, db: Path, port: int, sessions: int = 4) -> Path:
    return write_config(
        path.parent,
        path.name,
        store={"database": db},
        feeds={"dir": path.parent / "feeds"},
        smtp=smtp_section(port, sender="digest@example.org", connections=sessions),
    )


def digest_send(config: Path, log: Path) -> subprocess.Popen[bytes]:
    out = log.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "digest", "--config", str(config), "send"],
        cwd=ROOT,
        stdout=out,
        stderr=out,
        env=os.environ | {"DIGEST_SECRET_KEY": "kill-test"},
    )


def ledger(db: Path) -> dict[str, str]:
    store = Store.open(db)
    try:
        return {r["email"]: r["status"] for r in store.db.query("SELECT * FROM deliveries")}
    finally:
        store.close()


@pytest.mark.parametrize("sessions", [1, 4])
def test_kill_9_at_random_points_of_a_2000_reader_send_then_a_rerun(
    tmp_path: Path, sessions: int
) -> None:
    # 4: the default smtp.connections, pipelined (each session has one message in hand
    # and the next one's commands out behind it).
    readers = [f"reader{i}@example.org" for i in range(READERS)]
    db = tmp_path / "digest.db"
    make_db(db, readers)
    log = tmp_path / "send.log"
    rng = random.Random(20261201 + sessions)
    started = time.monotonic()
    with SmtpServer(keep=False, pipelining=sessions > 1) as server:
        config = send_config(tmp_path / "config.toml", db, server.port, sessions)
        killed_mid_send = 0
        for _ in range(KILLS):
            before = server.handler.count
            proc = digest_send(config, log)
            deadline = time.monotonic() + 20
            # Kill only once it is sending, at a random point of the send.
            while server.handler.count == before and proc.poll() is None:
                assert time.monotonic() < deadline, "the send never started"
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.4))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                killed_mid_send += 1
            proc.wait(20)
        assert killed_mid_send == KILLS, "the send finished before it was killed"
        final = digest_send(config, log)
        assert final.wait(60) == 0, log.read_text()[-2000:]
        after = subprocess.run(
            [sys.executable, "-m", "digest", "--config", str(config), "send"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        taken = server.received_by()
    rows = ledger(db)
    assert sorted(rows) == sorted(readers)  # no ledger row lost
    twice = sorted(a for a, n in taken.items() if n > 1)
    assert twice == [], f"{len(twice)} readers got two or more copies: {twice[:5]}"
    states = Counter(rows.values())
    assert set(states) <= {"sent", "uncertain"}, states
    for a in readers:
        # "sent": the server said 250, so it has the one copy; "uncertain": at most one.
        assert rows[a] == "uncertain" or taken[a] == 1, (a, rows[a], taken[a])
    # One message is in flight per session: each kill makes at most that many uncertain.
    assert states["uncertain"] <= KILLS * sessions, states
    line = after.stdout.strip().splitlines()[-1]
    assert f"sent 0, failed 0, skipped 0, already sent {states['sent']}" in line
    if states["uncertain"]:
        assert f"{states['uncertain']} uncertain (maybe delivered) not resent" in line
    took = time.monotonic() - started
    print(
        f"\n{sessions} session(s), {KILLS} kills: {dict(states)}, "
        f"copies taken {sum(taken.values())}, {took:.0f} s"
    )


TWO_SENDS = 600


def test_two_sends_at_once_one_through_a_symlink_mail_each_reader_once(tmp_path: Path) -> None:
    readers = [f"reader{i}@example.org" for i in range(TWO_SENDS)]
    db = tmp_path / "data" / "digest.db"
    make_db(db, readers)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "link.db").symlink_to(db)
    log = tmp_path / "send.log"
    with SmtpServer(keep=False) as server:
        server.data_plan = ["slow:0.005"] * TWO_SENDS  # a real relay's pace: they overlap
        direct = send_config(tmp_path / "direct.toml", db, server.port)
        linked = send_config(tmp_path / "linked.toml", elsewhere / "link.db", server.port)
        procs = [digest_send(direct, log), digest_send(linked, log)]
        codes = [p.wait(60) for p in procs]
        taken = server.received_by()
    output = log.read_text()
    twice = sorted(a for a, n in taken.items() if n > 1)
    assert twice == [], f"{len(twice)} of {TWO_SENDS} readers mailed twice"
    assert taken == {a: 1 for a in readers}
    # The one that came second found the lock taken (the same file under another name),
    # or, if the first had finished already, nothing left to send.
    assert 0 in codes, output
    if 1 in codes:
        # "(pid N ...)", or "(holder unknown)" when it looked before the first wrote its pid.
        assert "a run is already in progress (" in output
    assert set(ledger(db).values()) == {"sent"}


IGNORING_THE_LOCK = """
import sys
from digest.config import load_config
from digest.deliver.digest import send_digests
from digest.store import Store

config = load_config(sys.argv[1])
report = send_digests(config, Store.open(config.store.database))
print(report.summary())
"""


def test_two_sends_that_bypass_the_lock_still_never_share_a_row(tmp_path: Path) -> None:
    # Belt and braces under the lock: each row is claimed by an UPDATE that re-checks its
    # state in the claiming transaction, so even two sends at once cannot both mail it.
    readers = [f"reader{i}@example.org" for i in range(TWO_SENDS)]
    db = tmp_path / "digest.db"
    make_db(db, readers)
    with SmtpServer(keep=False) as server:
        server.data_plan = ["slow:0.005"] * TWO_SENDS  # a real relay's pace: they overlap
        config = send_config(tmp_path / "config.toml", db, server.port)
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", IGNORING_THE_LOCK, str(config)],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=os.environ | {"DIGEST_SECRET_KEY": "kill-test"},
            )
            for _ in range(2)
        ]
        outs = [p.communicate(timeout=60) for p in procs]
        taken = server.received_by()
    assert all(p.returncode == 0 for p in procs), outs
    lines = [out.strip().splitlines()[-1] for out, _ in outs]
    print("\n" + "\n".join(lines))
    twice = sorted(a for a, n in taken.items() if n > 1)
    assert twice == [], f"{len(twice)} of {TWO_SENDS} readers mailed twice"
    assert taken == {a: 1 for a in readers}
    assert set(ledger(db).values()) == {"sent"}
