"""Bounce counting: which refusals count, "different days", 5.1.1 at once, reactivation
by the operator (`digest subscribers activate`) or by the reader confirming again, and
where bouncing readers show (`digest subscribers list`, /healthz)."""

from __future__ import annotations

import dataclasses
import re
from datetime import date, timedelta
from pathlib import Path

import httpx
import pytest

from digest.config import Config, SmtpConfig, StoreConfig, SubscriberConfig
from digest.errors import SubscriberError
from digest.models import SubscriberStatus
from digest.store import Store
from digest.store.readers import (
    Ledger,
    activate_subscriber,
    active_subscribers,
    add_subscriber,
    bounce_kind,
    list_subscribers,
    record_bounce,
    remove_subscriber,
)
from digest.store.schema import MIGRATIONS
from digest.web.app import health
from tests.support.cli import cli
from tests.support.config import write_config
from tests.support.smtpserver import SmtpServer
from tests.support.subscribe import mail_to, path_of, statuses, subscribe

DAY = date(2026, 3, 2)
READER = "reader@example.org"


def make_config(tmp_path: Path, max_bounces: int = 3) -> Config:
    return Config(
        store=StoreConfig(database=str(tmp_path / "digest.db")),
        smtp=SmtpConfig(max_bounces=max_bounces),
        subscribers=[SubscriberConfig(READER), SubscriberConfig("other@example.org")],
    )


def status(config: Config, store: Store, address: str = READER) -> SubscriberStatus:
    return {r.email: r.status for r in list_subscribers(config, store)}[address]


@pytest.mark.parametrize(
    ("reply", "counts", "hard"),
    [
        ("550 5.1.1 <reader@example.org>: Recipient address rejected: User unknown", True, True),
        ("550 5.2.1 mailbox disabled", True, False),
        ("552 5.2.2 mailbox full", True, False),
        ("550 no such mailbox here", True, False),  # no enhanced code: 550 is about the box
        ("554 5.7.1 Relay access denied", False, False),  # about us, not the reader
        ("550 5.7.1 Message rejected as spam", False, False),
        ("553 5.1.10 null MX", True, False),  # 5.1.10 is not 5.1.1
        ("553 5.1.8 <bounces+x@example.org>: Sender address rejected", False, False),  # ours
        ("550 5.0.0 failed", True, False),
        ("450 4.2.0 greylisted", False, False),
        (None, False, False),
    ],
)
def test_which_refusals_count(reply: str | None, counts: bool, hard: bool) -> None:
    assert bounce_kind(reply) == (counts, hard)


def test_bouncing_after_max_bounces_different_days(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    store = Store.open(config.store.database)
    try:
        assert store.schema_version == len(MIGRATIONS)
        for _ in range(5):  # five refusals on one day are one day
            record_bounce(store, READER, hard=False, reply="552 5.2.2 full", source="smtp", day=DAY)
        assert status(config, store) == SubscriberStatus.ACTIVE
        record_bounce(
            store, READER, hard=False, reply="552", source="smtp", day=DAY + timedelta(days=1)
        )
        assert status(config, store) == SubscriberStatus.ACTIVE
        record_bounce(
            store, READER, hard=False, reply="552", source="webhook", day=DAY + timedelta(days=3)
        )
        assert status(config, store) == SubscriberStatus.BOUNCING
        assert READER not in {s.email for s in active_subscribers(config, store)}
        # A higher max_bounces applies at once: the state is worked out when read.
        assert status(dataclasses.replace(config, smtp=SmtpConfig(max_bounces=4)), store) == (
            SubscriberStatus.ACTIVE
        )
        row, cleared = activate_subscriber(config, store, READER.upper())
        assert (row.email, row.status, cleared) == (READER, SubscriberStatus.ACTIVE, 3)
        assert status(config, store) == SubscriberStatus.ACTIVE
        # Cleared days stay as history but no longer count; a new bounce starts afresh.
        record_bounce(store, READER, hard=False, reply="552", source="smtp", day=DAY)
        assert status(config, store) == SubscriberStatus.ACTIVE
        assert store.db.execute("SELECT count(*) FROM bounces").fetchone()[0] == 3
    finally:
        store.close()


def test_the_ledger_counts_a_5xx_about_the_address_only(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    store = Store.open(config.store.database)
    try:
        ledger = Ledger(store)
        ledger.queue(DAY, [READER, "other@example.org"])
        ledger.failed(DAY, "other@example.org", "554 5.7.1 Relay access denied", 1, "refused")
        ledger.failed(DAY, "other@example.org", "451 4.3.0 later", 1, "still refused")
        assert status(config, store, "other@example.org") == SubscriberStatus.ACTIVE
        assert store.db.execute("SELECT count(*) FROM bounces").fetchone()[0] == 0
        ledger.failed(DAY, READER, "550 5.1.1 no such user", 1, "refused by the server")
        assert status(config, store) == SubscriberStatus.BOUNCING
        _code, body = health(config)
        assert body["bouncing"] == 1
    finally:
        store.close()


def test_healthz_counts_bouncing_readers_only(tmp_path: Path) -> None:
    # As `subscribers list` counts them: a config reader, an active database reader; not
    # one who left the config file, nor one who unsubscribed.
    config = make_config(tmp_path)
    store = Store.open(config.store.database)
    try:
        add_subscriber(config, store, "db@example.org")
        add_subscriber(config, store, "left@example.org")
        remove_subscriber(config, store, "left@example.org")
        for address in (READER, "db@example.org", "left@example.org", "gone@example.org"):
            record_bounce(store, address, hard=True, reply="550 5.1.1 no such user", source="smtp")
        listed = sum(r.status == SubscriberStatus.BOUNCING for r in list_subscribers(config, store))
    finally:
        store.close()
    _code, body = health(config)
    assert listed == 2 and body["bouncing"] == 2  # READER and db@; gone@ left the config


def test_activate_refuses_who_is_not_bouncing_or_unsubscribed(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    store = Store.open(config.store.database)
    try:
        with pytest.raises(SubscriberError, match=r"nobody@example\.org is not a subscriber"):
            activate_subscriber(config, store, "nobody@example.org")
        store.db.execute(
            "INSERT INTO subscribers (email, topics, status, created, updated) "
            "VALUES ('gone@example.org', '[]', 'unsubscribed', 'x', 'x')"
        )
        with pytest.raises(SubscriberError, match=r"unsubscribed.*subscribers add"):
            activate_subscriber(config, store, "gone@example.org")
    finally:
        store.close()


def test_cli_lists_bouncing_and_activates(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        "config.toml",
        store={"database": str(tmp_path / "digest.db")},
        subscribers=[{"email": READER}, {"email": "other@example.org"}],
    )
    store = Store.open(tmp_path / "digest.db")
    try:
        record_bounce(store, READER, hard=True, reply="550 5.1.1 no such user", source="smtp")
    finally:
        store.close()
    listed = cli(path, "subscribers", "list")
    assert listed.exit_code == 0, listed.output
    assert re.search(rf"(?m)^{re.escape(READER)}\tbouncing\t", listed.stdout)
    assert "1 active of 2 subscribers (1 bouncing" in listed.stderr
    activated = cli(path, "subscribers", "activate", READER)
    assert activated.exit_code == 0, activated.output
    assert activated.stdout.strip() == f"{READER} is active: 1 days of bounces cleared"
    assert re.search(
        rf"(?m)^{re.escape(READER)}\tactive\t", cli(path, "subscribers", "list").stdout
    )
    again = cli(path, "subscribers", "activate", "nobody@example.org")
    assert again.exit_code == 1 and "is not a subscriber" in again.stderr


def test_confirming_again_reactivates(config: Config, site: str, smtp: SmtpServer) -> None:
    # A reader of the web front whose mail bounced signs up again: the form mails a
    # confirmation (not "already subscribed"), and confirming mails them again.
    reader = "known@example.org"  # the config's reader (tests/support/subscribe.py)
    store = Store.open(config.store.database)
    try:
        record_bounce(store, reader, hard=True, reply="550 5.1.1 no such user", source="smtp")
    finally:
        store.close()
    assert statuses(config)[reader] == "bouncing"
    with httpx.Client() as client:
        answer = subscribe(client, site, reader, ())
        assert answer.status_code == 200
    [mail] = mail_to(smtp, reader)
    assert "confirm" in str(mail["Subject"]).lower()
    assert statuses(config)[reader] == "bouncing"  # the form alone changes nothing
    body = mail.get_body(("plain",))
    assert body is not None
    link = re.search(r"https?://\S+/confirm/\S+", body.get_content())
    assert link
    confirmed = httpx.post(site + path_of(link.group(0)))
    assert confirmed.status_code == 200 and "You are subscribed" in confirmed.text
    assert statuses(config)[reader] == "active"
