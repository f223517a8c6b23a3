"""send_digests end to end against a real aiosmtpd server: exactly once, through crashes."""

from __future__ import annotations

import signal
import subprocess
import sys
from datetime import date
from email.message import EmailMessage
from pathlib import Path

import pytest
from click.testing import CliRunner

from digest.addresses import normalize_address
from digest.cli import main
from digest.config import Config, SmtpConfig, SubscriberConfig, TopicConfig
from digest.deliver.digest import NO_SMTP, SendReport, send_digests
from digest.errors import DigestError
from digest.lock import RunLock, lock_path_for
from digest.models import Subscriber
from digest.store import Store
from digest.store.meta import secret_key
from digest.store.readers import Ledger, activate_subscriber
from digest.tokens import verify_token
from tests.support.config import smtp_config
from tests.support.deliver import DAY, send_day
from tests.support.net import free_port
from tests.support.paths import PAGE_2024_08_01, ROOT
from tests.support.smtpserver import SmtpServer, simple_message

TOPICS = [
    TopicConfig(name="agents", keywords=["agent*"]),
    TopicConfig(name="vision", keywords=["image"]),
    TopicConfig(name="quiet", keywords=["nothing-today"]),
]
ADDRESSES = [f"reader{i}@example.org" for i in range(8)]


def make_config(port: int, addresses: list[str] = ADDRESSES, **smtp: object) -> Config:
    # Port 0: no SMTP host configured at all.
    where = {"host": "127.0.0.1" if port else "", "sender": "digest@example.org"}
    # One session: these tests follow one session's ordered faults (tests/
    # test_deliver_sessions.py covers several).
    where["connections"] = 1
    return Config(
        topics=TOPICS,
        smtp=smtp_config(port or 25, **{**where, **smtp}),
        subscribers=[SubscriberConfig(a, ["agents"]) for a in addresses],
    )


def render(sub: Subscriber) -> EmailMessage | None:
    # A stand-in renderer: "quiet" followers have nothing today.
    return None if "quiet" in sub.topics else simple_message(sub, DAY)


def send(config: Config, store: Store, **kw: object) -> SendReport:
    kw.setdefault("render", render)
    return send_day(config, store, **kw)


def test_every_subscriber_gets_one_and_the_ledger_says_sent(store: Store) -> None:
    seen: list[tuple[int, int, str, str]] = []
    with SmtpServer() as server:
        config = make_config(server.port)
        tokens: dict[str, str] = {}

        def render_and_note(sub: Subscriber) -> EmailMessage | None:
            tokens[sub.email] = sub.token
            return render(sub)

        report = send_digests(
            config, store, DAY, render=render_and_note, progress=lambda *a: seen.append(a)
        )
        assert server.received_by() == {a: 1 for a in ADDRESSES}
        assert server.sessions == 1
        again = send_digests(config, store, DAY, render=render)
    assert len(server.messages) == len(ADDRESSES)  # the re-run sent nothing
    assert report.summary() == "send 2024-08-01: sent 8, failed 0, skipped 0, already sent 0"
    assert again.summary() == "send 2024-08-01: sent 0, failed 0, skipped 0, already sent 8"
    rows = Ledger(store).of_day(DAY)
    assert {a: r.status for a, r in rows.items()} == {a: "sent" for a in ADDRESSES}
    assert all(r.reply and r.reply.startswith("250") and r.attempts == 1 for r in rows.values())
    assert all(r.message_id for r in rows.values())
    assert [s[0] for s in seen] == list(range(1, 9)) and {s[1] for s in seen} == {8}
    key = secret_key(store)
    assert {a: verify_token(key, t) for a, t in tokens.items()} == {a: a for a in ADDRESSES}


def test_421_mid_batch_each_subscriber_exactly_once(store: Store) -> None:
    sleeps: list[float] = []
    with SmtpServer() as server:
        server.data_plan = ["accept"] * 3 + ["421 4.7.0 too busy, come back later"]
        report = send(make_config(server.port), store, sleep=sleeps.append)
    assert server.received_by() == {a: 1 for a in ADDRESSES}
    assert len(report.sent) == len(ADDRESSES) and report.failed == []
    assert len(sleeps) == 1  # backed off once
    fourth = Ledger(store).of_day(DAY)[ADDRESSES[3]]
    assert fourth.status == "sent" and fourth.attempts == 2


def test_550_for_one_address_is_recorded_and_the_others_go_out(store: Store) -> None:
    bad = ADDRESSES[5]
    with SmtpServer() as server:
        server.rcpt_replies[bad] = "550 5.1.1 mailbox unavailable"
        config = make_config(server.port)
        report = send(config, store)
        assert server.received_by() == {a: 1 for a in ADDRESSES if a != bad}
        row = Ledger(store).of_day(DAY)[bad]
        assert (row.status, row.reply, row.attempts) == (
            "failed",
            "550 5.1.1 mailbox unavailable",
            1,
        )
        assert "failed 1 (reader5@example.org: 550 5.1.1 mailbox unavailable)" in report.summary()
        # "No such user" (5.1.1): the reader is bouncing, the next run leaves them out.
        del server.rcpt_replies[bad]
        assert send(config, store).summary().startswith("send 2024-08-01: sent 0, failed 0")
        # The address is fixed and reactivated; the next run sends only the one that failed.
        activate_subscriber(config, store, bad)
        again = send(config, store)
    assert server.received_by() == {a: 1 for a in ADDRESSES}
    assert again.summary().startswith("send 2024-08-01: sent 1, failed 0")
    assert Ledger(store).of_day(DAY)[bad].attempts == 2


@pytest.mark.parametrize("where", ["mail", "accept-drop"])
def test_dropped_connection_mid_batch_reconnects(store: Store, where: str) -> None:
    with SmtpServer() as server:
        if where == "mail":
            server.mail_plan = ["ok", "ok", "drop"]
        else:
            server.data_plan = ["accept", "accept", "accept-drop"]
        report = send(make_config(server.port), store)
    assert server.received_by() == {a: 1 for a in ADDRESSES}
    assert report.connections == 2


def test_nothing_matched_is_skipped_with_the_reason(store: Store) -> None:
    quiet = "quiet@example.org"
    with SmtpServer() as server:
        config = make_config(server.port, addresses=ADDRESSES[:2])
        config.subscribers.append(SubscriberConfig(quiet, ["quiet"]))
        report = send(config, store)
    assert server.received_by() == {a: 1 for a in ADDRESSES[:2]}
    assert "skipped 1 (1 nothing new matched their topics)" in report.summary()
    assert Ledger(store).of_day(DAY)[quiet].status == "skipped"


def test_no_smtp_host_skips_the_send_and_says_why(store: Store, tmp_path: Path) -> None:
    report = send(make_config(0), store)
    assert report.not_sending == NO_SMTP
    assert report.summary() == (f"send 2024-08-01 skipped: {NO_SMTP}; 8 subscribers not mailed")
    assert Ledger(store).of_day(DAY) == {}
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[store]\ndatabase = "{tmp_path / "cli.db"}"\n')
    result = CliRunner().invoke(main, ["--config", str(cfg), "send", "--date", "2024-08-01"])
    assert result.exit_code == 0, result.output
    assert "skipped: no SMTP server is configured" in result.stdout


def test_unreachable_server_stops_and_leaves_the_rest_queued(store: Store) -> None:
    report = send(make_config(free_port(), retries=1), store)
    assert not report.ok
    assert "STOPPED: SMTP server 127.0.0.1:" in report.summary()
    assert "8 left queued for the next run" in report.summary()
    assert {r.status for r in Ledger(store).of_day(DAY).values()} == {"queued"}


def test_sigterm_finishes_the_message_in_hand_and_keeps_the_rest_queued(store: Store) -> None:
    from digest.deliver import digest as send_module

    def stop_after_three(done: int, _total: int, _address: str, _status: str) -> None:
        if done == 3:
            send_module.STOP.set()  # what `digest serve` does on SIGTERM

    with SmtpServer() as server:
        try:
            report = send(make_config(server.port), store, progress=stop_after_three)
        finally:
            send_module.STOP.clear()
        assert len(report.sent) == 3 and not report.ok
        assert "STOPPED: the process is stopping" in report.summary()
        assert "5 left queued" in report.summary()
        statuses = [d.status for d in Ledger(store).of_day(DAY).values()]
        assert statuses.count("sent") == 3 and statuses.count("queued") == 5
        # The next start sends the rest, and only the rest.
        assert len(send(make_config(server.port), store).sent) == 5
        assert server.received_by() == {a: 1 for a in ADDRESSES}


KILLED_RUN = """
import os, signal, sys
from datetime import date
from digest.config import Config, SmtpConfig, SubscriberConfig, TopicConfig
from digest.deliver.digest import send_digests
from digest.store import Store
from tests.support.smtpserver import simple_message

port, db, kill_after = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
addresses = sys.argv[4].split(",")
config = Config(
    topics=[TopicConfig(name="agents", keywords=["agent*"])],
    # One session: a kill between two of its messages (tests/test_kill_send.py kills
    # several sessions mid-message).
    smtp=SmtpConfig(
        host="127.0.0.1", port=port, security="none", rate_per_minute=0, connections=1
    ),
    subscribers=[SubscriberConfig(a, ["agents"]) for a in addresses],
)

def progress(done, total, address, status):
    if kill_after and done == kill_after:
        os.kill(os.getpid(), signal.SIGKILL)  # a crash between two sends, no cleanup at all

day = date(2024, 8, 1)
report = send_digests(
    config, Store.open(db), day, render=lambda s: simple_message(s, day), progress=progress
)
print(report.summary())
"""


def test_killed_between_sends_then_restarted_sends_each_exactly_once(tmp_path: Path) -> None:
    db = tmp_path / "crash.db"

    def run(server: SmtpServer, kill_after: int) -> subprocess.CompletedProcess[str]:
        args = [str(server.port), str(db), str(kill_after), ",".join(ADDRESSES)]
        return subprocess.run(
            [sys.executable, "-c", KILLED_RUN, *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )

    with SmtpServer() as server:
        first = run(server, kill_after=2)
        assert first.returncode == -signal.SIGKILL, first.stderr
        assert server.received_by() == {a: 1 for a in ADDRESSES[:2]}
        second = run(server, kill_after=0)
        assert second.returncode == 0, second.stderr
        assert "sent 6, failed 0, skipped 0, already sent 2" in second.stdout
        third = run(server, kill_after=0)
        assert "sent 0, failed 0, skipped 0, already sent 8" in third.stdout
    assert server.received_by() == {a: 1 for a in ADDRESSES}
    assert len(server.messages) == len(ADDRESSES)
    store = Store.open(db)
    assert {r.status for r in Ledger(store).of_day(DAY).values()} == {"sent"}
    store.close()


def test_real_day_rendered_and_delivered(store: Store) -> None:
    """The renderer's real messages for a real day, as they arrive at the server."""
    pytest.importorskip("digest.render.email")
    from digest.clock import now_utc
    from digest.jobs import ingest_file
    from tests.support.paths import PAGE_2024_08_01

    ingest_file(store, PAGE_2024_08_01)
    day = now_utc().date()  # the day these papers were first seen
    titles = {sp.paper.id: sp.paper.title for sp in store.papers_of_day(day)}
    assert len(titles) == 13
    topics = [
        TopicConfig(name="video", keywords=["video"]),
        TopicConfig(name="robots", keywords=["humanoid", "robot*"]),
        TopicConfig(name="quiet", keywords=["zebrafish"]),
    ]
    subscribers = {
        "video@example.org": ["video"],
        "robots@example.org": ["robots"],
        "quiet@example.org": ["quiet"],
    }
    with SmtpServer() as server:
        config = Config(
            topics=topics,
            smtp=SmtpConfig(host="127.0.0.1", port=server.port, security="none", rate_per_minute=0),
            subscribers=[SubscriberConfig(a, t) for a, t in subscribers.items()],
        )
        report = send_digests(config, store, day)
        again = send_digests(config, store, day)
    assert server.received_by() == {"video@example.org": 1, "robots@example.org": 1}
    assert len(report.sent) == 2 and [a for a, _ in report.skipped] == ["quiet@example.org"]
    assert again.already_sent == 2 and again.sent == []
    for received in server.messages:
        msg = received.message()
        assert msg.get_content_type() == "multipart/alternative"
        text = msg.get_body(("plain",))
        html = msg.get_body(("html",))
        assert text is not None and html is not None
        body = text.get_content()
        if received.recipients == ["video@example.org"]:
            assert titles["2407.21705"].split(":")[0] in body  # Tora: ... Video Generation
            assert titles["2407.21781"] not in body  # the humanoid paper is not theirs
        else:
            assert "Berkeley Humanoid" in body
            assert "Tora" not in body


def test_a_4xx_that_outlasts_the_retries_is_deferred_not_final(store: Store) -> None:
    # Greylisting: "later" for longer than our retries. The send is not ok, so the
    # scheduler runs it again that day; a 5xx stays final (see the 550 test).
    grey = ADDRESSES[2]
    with SmtpServer() as server:
        server.rcpt_replies[grey] = "450 4.2.0 greylisted, try again later"
        config = make_config(server.port, retries=1)
        report = send(config, store)
        assert report.deferred == [grey] and not report.ok
        assert "1 refused for now (4xx), to be tried again later" in report.summary()
        del server.rcpt_replies[grey]
        again = send(config, store)
    assert again.ok and again.sent == [grey]
    assert server.received_by() == {a: 1 for a in ADDRESSES}


def test_send_by_hand_refuses_while_a_run_holds_the_lock(tmp_path: Path) -> None:
    # `digest serve` holds this lock while it sends; a second send would mail the same
    # readers twice, so `digest send` and `digest run` refuse, saying who holds it.
    db = tmp_path / "locked.db"
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[store]\ndatabase = "{db}"\n')
    with RunLock(lock_path_for(db)):
        for command in (["send"], ["run", "--from", str(PAGE_2024_08_01)]):
            result = CliRunner().invoke(main, ["--config", str(cfg), *command])
            assert result.exit_code == 1, result.output
            assert "a run is already in progress (pid" in result.output
    after = CliRunner().invoke(main, ["--config", str(cfg), "send"])
    assert after.exit_code == 0, after.output


def test_an_internationalised_domain_goes_out_in_ascii(store: Store) -> None:
    # Stored in punycode, so a relay without SMTPUTF8 takes it, and the two spellings of
    # the address are one subscriber.
    assert normalize_address("Reader@Bücher.example") == "Reader@xn--bcher-kva.example"
    assert normalize_address("reader@xn--bcher-kva.example") == "reader@xn--bcher-kva.example"
    with SmtpServer(smtputf8=False) as server:
        config = make_config(server.port, ["reader@bücher.example"])
        report = send(config, store)
    assert report.sent == ["reader@xn--bcher-kva.example"] and report.failed == []
    assert server.received_by() == {"reader@xn--bcher-kva.example": 1}


def test_a_day_that_has_not_come_is_refused(store: Store, tmp_path: Path) -> None:
    with SmtpServer() as server:
        with pytest.raises(DigestError, match="--date 2999-01-01: that day has not come yet"):
            send_digests(make_config(server.port), store, date(2999, 1, 1))
        cfg = tmp_path / "config.toml"
        cfg.write_text(f'[store]\ndatabase = "{tmp_path / "cli.db"}"\n')
        result = CliRunner().invoke(main, ["--config", str(cfg), "send", "--date", "2999-01-01"])
    assert result.exit_code == 1 and "that day has not come yet" in result.output
    assert server.messages == [] and Ledger(store).of_day(date(2999, 1, 1)) == {}


def test_the_run_lock_is_the_database_file_whatever_its_name(tmp_path: Path) -> None:
    # A symlink or a path with ".." to the same database must meet the same lock (keyed
    # on the path string, two sends through a symlink once mailed 600 of 600 twice).
    db = tmp_path / "data" / "digest.db"
    db.parent.mkdir()
    db.write_bytes(b"")
    (tmp_path / "link.db").symlink_to(db)
    names = [db, tmp_path / "link.db", tmp_path / "data" / ".." / "data" / "digest.db"]
    assert len({lock_path_for(n) for n in names}) == 1
    with RunLock(lock_path_for(db)):
        for name in names[1:]:
            assert not RunLock(lock_path_for(name)).acquire()
