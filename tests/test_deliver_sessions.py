"""Several SMTP sessions at once and PIPELINING, against real aiosmtpd servers (one that
offers PIPELINING, one that does not), some through a latency proxy on 127.0.0.1."""

from __future__ import annotations

import json
import time
from datetime import date
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from digest.config import Config, SubscriberConfig, TopicConfig
from digest.deliver import digest as send_module
from digest.deliver.digest import SendReport, send_digests
from digest.models import Subscriber
from digest.store import Store
from digest.store.readers import Ledger
from tests.support.cli import cli
from tests.support.config import smtp_config, write_config
from tests.support.latency import LatencyProxy
from tests.support.net import free_port
from tests.support.smtpserver import SmtpServer, simple_message

DAY = date(2024, 8, 1)
TOPICS = [TopicConfig(name="agents", keywords=["agent*"])]


def readers(n: int) -> list[str]:
    return [f"reader{i}@example.org" for i in range(n)]


def make_config(port: int, addresses: list[str], **smtp: Any) -> Config:
    return Config(
        topics=TOPICS,
        smtp=smtp_config(port, **{"sender": "digest@example.org", **smtp}),
        subscribers=[SubscriberConfig(a, ["agents"]) for a in addresses],
    )


def render(sub: Subscriber) -> EmailMessage | None:
    return simple_message(sub, DAY)


def send(config: Config, store: Store, **kw: Any) -> SendReport:
    return send_digests(config, store, DAY, render=render, today=DAY, **kw)


def statuses(store: Store) -> dict[str, str]:
    return {a: str(r.status) for a, r in Ledger(store).of_day(DAY).items()}


@pytest.mark.parametrize("pipelining", [False, True])
def test_four_sessions_share_one_queue_and_mail_each_reader_once(
    store: Store, pipelining: bool
) -> None:
    addresses = readers(300)
    seen: list[int] = []
    with SmtpServer(keep=False, pipelining=pipelining) as server:
        config = make_config(server.port, addresses)
        assert config.smtp.connections == 4  # the default
        report = send(config, store, progress=lambda n, *_: seen.append(n))
        again = send(config, store)
        taken = server.received_by()
        sessions = server.sessions
    assert taken == {a: 1 for a in addresses}
    assert sessions == 4 and report.connections == 4
    assert sorted(report.sent) == sorted(addresses) and report.ok
    assert seen == list(range(1, 301))  # progress counts stay exact across sessions
    assert set(statuses(store).values()) == {"sent"}
    assert again.summary().endswith("sent 0, failed 0, skipped 0, already sent 300")


def test_the_rate_limit_holds_for_all_sessions_together(store: Store) -> None:
    addresses = readers(31)
    with SmtpServer(keep=False) as server:
        # 3000 a minute: one message every 20 ms, whichever session sends it.
        config = make_config(server.port, addresses, rate_per_minute=3000)
        started = time.monotonic()
        report = send(config, store)
        took = time.monotonic() - started
    assert len(report.sent) == 31 and report.connections == 4
    # 30 intervals of 20 ms: 0.6 s. One limiter per session would let it go in 0.15 s.
    assert took >= 0.58, took


def timed_send(
    pipelining: bool, addresses: list[str], db: Path, one_way: float = 0.03
) -> tuple[float, SendReport]:
    with (
        SmtpServer(keep=False, pipelining=pipelining) as server,
        LatencyProxy(server.port, one_way=one_way) as proxy,  # 60 ms round trip by default
    ):
        config = make_config(proxy.port, addresses, connections=1)
        store = Store.open(db)
        started = time.monotonic()
        report = send(config, store)
        took = time.monotonic() - started
        store.close()
        assert server.received_by() == {a: 1 for a in addresses}
    return took, report


def test_pipelining_takes_one_round_trip_a_message_instead_of_four(tmp_path: Path) -> None:
    addresses = readers(12)
    plain, _ = timed_send(False, addresses, tmp_path / "plain.db")
    piped, report = timed_send(True, addresses, tmp_path / "piped.db")
    # The same pipelined send with no delay: what the machine's own work costs now (on a
    # loaded machine, more than the round trips saved), taken off before counting them.
    work, _ = timed_send(True, addresses, tmp_path / "work.db", one_way=0.0)
    rtt = 0.06
    # One by one: MAIL, RCPT, DATA, the final "." each wait for their reply.
    assert plain >= 12 * 4 * rtt, plain
    # Pipelined: the message, its ".", and the next one's MAIL, RCPT, DATA in one write;
    # the connection, greeting, EHLO and QUIT add a few round trips.
    assert piped - work <= 12 * 1.5 * rtt + 6 * rtt, (piped, work)
    assert len(report.sent) == 12 and report.connections == 1


def test_a_refused_rcpt_or_mail_in_a_pipelined_group_is_that_readers_only(store: Store) -> None:
    addresses = readers(8)
    bad, busy = addresses[3], addresses[5]
    with SmtpServer(pipelining=True) as server:
        server.rcpt_replies[bad] = "550 5.1.1 no such user"
        # The 6th MAIL (bad's is the 4th) is refused for now: that reader is retried.
        server.mail_plan = ["ok"] * 5 + ["451 4.3.0 busy, try again"]
        config = make_config(server.port, addresses, connections=1)
        report = send(config, store, sleep=lambda _s: None)
        taken = server.received_by()
    assert taken == {a: 1 for a in addresses if a != bad}
    assert report.failed == [(bad, "550 5.1.1 no such user")]
    rows = Ledger(store).of_day(DAY)
    assert (rows[bad].status, rows[bad].attempts) == ("failed", 1)
    assert (rows[busy].status, rows[busy].attempts) == ("sent", 2)
    assert report.connections == 1  # a refusal mid-group does not end the session


def test_a_4xx_to_the_dot_with_the_next_commands_out_is_retried_cleanly(store: Store) -> None:
    addresses = readers(6)
    with SmtpServer(pipelining=True) as server:
        server.data_plan = ["accept", "451 4.3.0 try later"]
        config = make_config(server.port, addresses, connections=1)
        report = send(config, store, sleep=lambda _s: None)
        taken = server.received_by()
    assert taken == {a: 1 for a in addresses}
    assert Ledger(store).of_day(DAY)[addresses[1]].attempts == 2
    # The third reader's commands were out behind the refused "."; its session is ended
    # rather than mixed into the retry, and the send goes on on a new one.
    assert report.connections == 2 and report.ok


def test_sigterm_stops_every_session_with_the_message_in_hand_finished(store: Store) -> None:
    addresses = readers(200)

    def stop_at_20(done: int, *_: object) -> None:
        if done == 20:
            send_module.STOP.set()  # what `digest serve` does on SIGTERM

    with SmtpServer(keep=False, pipelining=True) as server:
        server.data_plan = ["slow:0.01"] * 200
        try:
            report = send(make_config(server.port, addresses), store, progress=stop_at_20)
        finally:
            send_module.STOP.clear()
        taken = server.received_by()
    rows = statuses(store)
    sent = [a for a, s in rows.items() if s == "sent"]
    # The 20th, plus at most one in the hand of each of the three other sessions.
    assert 20 <= len(sent) <= 23, len(sent)
    assert sorted(report.sent) == sorted(sent) and sorted(taken) == sorted(sent)
    assert set(taken.values()) == {1}
    assert "STOPPED: the process is stopping (SIGTERM)" in report.summary()
    assert report.left == 200 - len(sent)
    assert sorted(set(rows.values())) == ["queued", "sent"]  # nothing left "sending"


def test_no_reply_to_one_dot_is_uncertain_and_the_other_sessions_go_on(store: Store) -> None:
    addresses = readers(40)
    slow = addresses[7]
    with SmtpServer(keep=False, pipelining=True) as server:
        server.data_for[slow] = "hang"
        config = make_config(server.port, addresses, timeout=0.5)
        report = send(config, store, data_timeout=0.5)
        again = send(config, store)
        taken = server.received_by()
    assert taken == {a: 1 for a in addresses}  # the hung one was taken, once
    assert [a for a, _ in report.uncertain] == [slow]
    assert statuses(store)[slow] == "uncertain"
    assert len(report.sent) == 39
    assert again.held_uncertain == 1 and again.sent == []


def test_an_unreachable_server_stops_all_sessions_and_leaves_everyone_queued(
    store: Store,
) -> None:
    report = send(make_config(free_port(), readers(10), retries=1), store, sleep=lambda _s: None)
    assert "STOPPED: SMTP server 127.0.0.1:" in report.summary()
    assert "10 left queued for the next run" in report.summary()
    assert set(statuses(store).values()) == {"queued"}


def write_check_config(tmp_path: Path, rate: int, db: Path) -> Path:
    return write_config(
        tmp_path,
        "config.toml",
        store={"database": db},
        smtp={"host": "relay.example.org", "rate_per_minute": rate},
        subscribers=[{"email": a, "topics": []} for a in readers(2)],
    )


def test_check_says_what_the_rate_means_for_the_readers(tmp_path: Path) -> None:
    db = tmp_path / "digest.db"
    config = write_check_config(tmp_path, 600, db)
    before = cli(config, "check")
    assert before.exit_code == 0, before.output
    assert not db.exists()  # check creates nothing
    assert (
        "rate:      at most 600 messages a minute over 4 SMTP sessions: "
        "a send to 2 readers fits in one minute"
    ) in before.stdout, before.stdout
    store = Store.open(db)
    stamp = "2024-08-01T00:00:00Z"
    with store.transaction() as conn:
        conn.executemany(
            "INSERT INTO subscribers (email, topics, status, created, updated) "
            "VALUES (?, ?, ?, ?, ?)",
            [(f"db{i}@example.org", json.dumps([]), "active", stamp, stamp) for i in range(9998)]
            + [("gone@example.org", "[]", "unsubscribed", stamp, stamp)],
        )
    store.close()
    after = cli(config, "check")
    assert "a send to 10000 readers takes at least 17 minutes" in after.stdout, after.stdout
    unlimited = cli(write_check_config(tmp_path, 0, db), "check")
    assert "rate:      no limit, 4 SMTP sessions: a send to 10000 readers goes as fast" in (
        unlimited.stdout
    )


def test_smtp_connections_is_checked_at_load_time(tmp_path: Path) -> None:
    path = write_config(tmp_path, "bad.toml", smtp={"host": "relay.example.org", "connections": 33})
    result = cli(path, "check")
    assert result.exit_code == 1
    assert "smtp.connections: must be from 1 to 32, not 33" in result.stderr, result.stderr


def test_the_ledger_skips_the_fsync_during_a_send_only(store: Store) -> None:
    # synchronous = NORMAL (1) while the send runs, the connection's FULL (2) after it:
    # what a crash can lose is what the README says, and only during a send.
    def pragma() -> int:
        return int(store.db.execute("PRAGMA synchronous").fetchone()[0])

    before = pragma()
    during: list[int] = []
    with SmtpServer(keep=False) as server:
        config = make_config(server.port, readers(3), connections=1)
        send(config, store, progress=lambda *_: during.append(pragma()))
    assert before == 2 and during == [1, 1, 1] and pragma() == 2


@pytest.mark.parametrize("smtputf8", [True, False])
def test_a_non_ascii_address_in_a_pipelined_send(store: Store, smtputf8: bool) -> None:
    addresses = [*readers(3), "jörg@exämple.org", *readers(6)[3:]]
    with SmtpServer(pipelining=True, smtputf8=smtputf8) as server:
        config = make_config(server.port, addresses, connections=1)
        report = send(config, store)
        taken = server.received_by()
        options = [m for m in server.messages if m.recipients == ["jörg@exämple.org"]]
    ascii_ones = {a: 1 for a in addresses if a.isascii()}
    if smtputf8:  # MAIL FROM:<...> SMTPUTF8, in the pipelined group
        assert taken == ascii_ones | {"jörg@exämple.org": 1} and len(options) == 1
        assert report.failed == []
    else:  # refused here, before anything is sent: that reader's failure only
        assert taken == ascii_ones
        assert [a for a, _ in report.failed] == ["jörg@exämple.org"]
        assert "SMTPUTF8" in report.failed[0][1]
