"""SMTP faults against real aiosmtpd servers: each reader gets one copy, or at most one
and the ledger says "uncertain"; never more, and no ledger row lost.

The faults: a server that answers the final "." late (after `smtp.timeout`, and after
the reply timeout itself), one that drops the connection after taking a message, one
that drops it before, 421 and 550 answers, one killed (SIGKILL) in the middle of a send,
and readers whose message cannot be made at all.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import date
from email.message import EmailMessage
from pathlib import Path

import pytest
from click.testing import CliRunner

from digest.addresses import address_key
from digest.cli import main
from digest.config import Config, SmtpConfig, SubscriberConfig
from digest.deliver.digest import SendReport
from digest.deliver.smtp import Mailer
from digest.errors import Uncertain
from digest.models import Subscriber
from digest.store import Store
from digest.store.readers import Ledger, bouncing_addresses
from tests.support.config import smtp_config, smtp_section, write_config
from tests.support.deliver import DAY, send_day
from tests.support.net import free_port
from tests.support.paths import PAGE_2024_08_01, ROOT
from tests.support.smtpserver import SmtpServer, simple_message

ADDRESSES = [f"reader{i}@example.org" for i in range(6)]


def make_config(port: int, addresses: list[str] = ADDRESSES, **smtp: object) -> Config:
    return Config(
        # One session: the server's fault plans below are in one session's order.
        smtp=smtp_config(port, **{"sender": "digest@example.org", "connections": 1, **smtp}),
        subscribers=[SubscriberConfig(a) for a in addresses],
    )


def statuses(store: Store, day: date = DAY) -> dict[str, str]:
    return {a: d.status for a, d in Ledger(store).of_day(day).items()}


def test_a_reply_to_the_dot_later_than_smtp_timeout_is_one_copy(store: Store) -> None:
    # The issue: a server taking longer than smtp.timeout to answer "." got retries + 1
    # copies, and "failed" made the next run send them all again (8 after two runs).
    # RFC 5321 gives the reply to "." 10 minutes; smtp.timeout is for the commands.
    slow = ADDRESSES[2]
    with SmtpServer() as server:
        server.data_for[slow] = "slow:1.5"  # every message to it
        config = make_config(server.port, timeout=1.0, retries=3)
        report = send_day(config, store)
        again = send_day(config, store)
    assert server.received_by() == {a: 1 for a in ADDRESSES}
    assert report.failed == [] and report.uncertain == [] and len(report.sent) == 6
    assert again.sent == [] and again.already_sent == 6
    assert statuses(store)[slow] == "sent"


def test_no_reply_to_the_dot_within_the_reply_timeout_is_uncertain_never_resent(
    store: Store,
) -> None:
    slow = ADDRESSES[1]
    with SmtpServer() as server:
        server.data_plan = ["accept", "slow:3"]
        config = make_config(server.port, timeout=0.5, retries=3)
        report = send_day(config, store, data_timeout=1.0)
        assert server.received_by() == {a: 1 for a in ADDRESSES}  # the server did take it
        assert [a for a, _ in report.uncertain] == [slow]
        assert "no reply to the end of the message" in report.uncertain[0][1]
        line = report.summary()
        assert "sent 5, failed 0, skipped 0, already sent 0, uncertain 1 (reader1@" in line
        assert "1 uncertain (maybe delivered) not resent" in line
        assert report.ok  # nothing for the scheduler to retry: the operator decides
        row = Ledger(store).of_day(DAY)[slow]
        assert (row.status, row.attempts) == ("uncertain", 1) and row.message_id
        # The next runs leave it alone, and keep saying so.
        again = send_day(config, store)
        assert again.sent == [] and again.held_uncertain == 1
        assert "1 uncertain (maybe delivered) not resent" in again.summary()
    assert server.received_by()[slow] == 1


def test_mailer_does_not_retry_after_the_dot_went_out() -> None:
    with SmtpServer() as server:
        server.data_plan = ["slow:3"]
        smtp = SmtpConfig(
            host="127.0.0.1", port=server.port, security="none", timeout=0.5, retries=5
        )
        message = simple_message(Subscriber("a@example.org"), DAY)
        with Mailer(smtp, sleep=lambda _s: None, data_timeout=1.0) as mailer:
            try:
                mailer.deliver(message, "a@example.org")
            except Uncertain as e:
                assert e.attempts == 1
            else:
                raise AssertionError("expected Uncertain")
            # The session was dropped (its state is unknown); the next message reconnects.
            mailer.deliver(simple_message(Subscriber("b@example.org"), DAY), "b@example.org")
            assert mailer.connections == 2
    assert server.received_by() == {"a@example.org": 1, "b@example.org": 1}


def test_a_drop_after_the_server_took_the_message_is_uncertain(store: Store) -> None:
    with SmtpServer() as server:
        server.data_plan = ["accept", "accept", "take-drop"]
        report = send_day(make_config(server.port), store)
    assert server.received_by() == {a: 1 for a in ADDRESSES}
    assert [a for a, _ in report.uncertain] == [ADDRESSES[2]]
    assert report.connections == 2  # reconnected for the rest
    assert statuses(store) == {a: "uncertain" if a == ADDRESSES[2] else "sent" for a in ADDRESSES}


def test_drops_before_the_dot_and_421_are_retried_550_is_final(store: Store) -> None:
    # Each of these is known not to have delivered the message, so a retry is safe.
    bad = ADDRESSES[4]
    with SmtpServer() as server:
        # The second message: dropped at MAIL, then 421 to its MAIL on the new session.
        server.mail_plan = ["ok", "drop", "421 4.7.0 try again later"]
        server.data_plan = ["accept", "accept", "421 4.3.2 shutting down"]  # answer to "."
        server.rcpt_replies[bad] = "550 5.1.1 no such user"
        report = send_day(make_config(server.port), store)
    assert server.received_by() == {a: 1 for a in ADDRESSES if a != bad}
    assert report.failed == [(bad, "550 5.1.1 no such user")] and report.uncertain == []
    assert statuses(store)[bad] == "failed"
    assert report.connections == 4  # the drop and each 421 ended a session
    assert Ledger(store).of_day(DAY)[ADDRESSES[1]].attempts == 3


@pytest.mark.parametrize("pipelining", [False, True], ids=["plain", "pipelined"])
def test_a_refused_sender_is_no_readers_bounce(store: Store, pipelining: bool) -> None:
    # A relay that refuses our MAIL FROM ("550 sender not allowed", no enhanced code, as
    # some answer) refuses every reader; were it counted as each reader's bounce, three
    # such days would stop mail to all of them. Days apart, as "bouncing" counts days.
    days = [DAY, date(2024, 8, 2), date(2024, 8, 3), date(2024, 8, 4)]
    for day in days:
        with SmtpServer(pipelining=pipelining) as server:
            server.mail_plan = ["550 sender not allowed here"] * len(ADDRESSES)
            report = send_day(make_config(server.port), store, day)
        assert server.received_by() == {}
        assert sorted(a for a, _ in report.failed) == sorted(ADDRESSES)
        assert {reply for _, reply in report.failed} == {"550 sender not allowed here"}
        rows = Ledger(store).of_day(day)
        assert {d.reason for d in rows.values()} == {"the server refused our sender (MAIL FROM)"}
    assert store.db.execute("SELECT count(*) FROM bounces").fetchone()[0] == 0
    assert bouncing_addresses(store, 1) == set()
    # The same reply to RCPT is about the reader's address: it counts.
    with SmtpServer(pipelining=pipelining) as server:
        server.rcpt_replies[ADDRESSES[0]] = "550 sender not allowed here"
        send_day(make_config(server.port), store, date(2024, 8, 5))
    assert bouncing_addresses(store, 1) == {address_key(ADDRESSES[0])}


def _server_process(port: int, log: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.smtpserver", "--log", str(log), "--port", str(port)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith("ready"), "the SMTP server did not start"
    return proc


def test_server_killed_mid_send_then_a_rerun_each_at_most_once(
    store: Store, tmp_path: Path
) -> None:
    # A real server process, SIGKILLed while the send is under way: the send stops
    # (no server), the rest stay queued; a new server and a re-run deliver the rest.
    readers = [f"r{i}@example.org" for i in range(300)]
    port = free_port()
    log = tmp_path / "taken.log"
    config = make_config(port, readers, retries=1)
    server = _server_process(port, log)
    reports: list[SendReport] = []
    worker = threading.Thread(target=lambda: reports.append(send_day(config, store)))
    worker.start()
    deadline = time.monotonic() + 20
    while (not log.exists() or len(log.read_text().split()) < 60) and time.monotonic() < deadline:
        time.sleep(0.01)
    server.send_signal(signal.SIGKILL)
    server.wait()
    worker.join(30)
    first = reports[0]
    assert first.stopped and "cannot connect" in first.stopped, first.summary()
    server = _server_process(port, log)
    try:
        second = send_day(config, store)
    finally:
        server.communicate("", timeout=10)
    taken = Counter(log.read_text().split())
    rows = statuses(store)
    assert sorted(rows) == sorted(readers)  # no row lost
    assert max(taken.values()) == 1, [a for a, n in taken.items() if n > 1]
    for a in readers:
        assert taken[a] == 1 or rows[a] == "uncertain", (a, taken[a], rows[a])
        assert rows[a] in ("sent", "uncertain"), (a, rows[a])
    assert second.ok and len(first.sent) + len(second.sent) == list(rows.values()).count("sent")


def test_a_message_that_cannot_be_made_fails_that_reader_only(store: Store) -> None:
    def render(sub: Subscriber) -> EmailMessage | None:
        if sub.email == ADDRESSES[1]:
            raise RuntimeError("template exploded")
        return simple_message(sub, DAY)

    with SmtpServer() as server:
        report = send_day(make_config(server.port), store, render=render)
    assert server.received_by() == {a: 1 for a in ADDRESSES if a != ADDRESSES[1]}
    reason = "cannot make their message: RuntimeError: template exploded"
    assert report.failed == [(ADDRESSES[1], reason)]
    row = Ledger(store).of_day(DAY)[ADDRESSES[1]]
    assert (row.status, row.reason, row.attempts) == ("failed", reason, 0)


def test_an_address_with_a_line_break_fails_and_the_send_goes_on(tmp_path: Path) -> None:
    # The issue: a subscriber row made through a forged token, `csrf\0\r\nbcc: x@evil.org`,
    # stopped every `digest send` at that row (ValueError), so no one after it got mail.
    evil = "csrf\0\r\nbcc: x@evil.org"
    db = tmp_path / "digest.db"
    store = Store.open(db)
    from digest.jobs import ingest_file

    ingest_file(store, PAGE_2024_08_01)  # today's papers, the real renderer's input
    good = [f"a{i}@example.org" for i in range(4)] + [f"z{i}@example.org" for i in range(4)]
    stamp = "2024-08-01T00:00:00Z"
    with store.transaction() as conn:
        conn.executemany(
            "INSERT INTO subscribers (email, topics, status, created, updated) "
            "VALUES (?, '[]', 'active', ?, ?)",
            [(a, stamp, stamp) for a in [*good[:4], evil, *good[4:]]],
        )
    store.close()
    with SmtpServer() as server:
        cfg = write_config(
            tmp_path,
            store={"database": db},
            feeds={"dir": tmp_path / "feeds"},
            smtp=smtp_section(server.port),
        )
        result = CliRunner().invoke(main, ["--config", str(cfg), "send"])
        assert result.exit_code == 0, result.output
        assert server.received_by() == {a: 1 for a in good}
    line = result.stdout.strip().splitlines()[-1]
    assert "sent 8, failed 1 ('csrf\\x00\\r\\nbcc: x@evil.org': the address contains" in line
    conn = sqlite3.connect(db)
    row = conn.execute("SELECT status, reason FROM deliveries WHERE email = ?", [evil]).fetchone()
    conn.close()
    assert row[0] == "failed" and "control characters ('\\x00', '\\n', '\\r')" in row[1]
