"""Daily and weekly readers over two weeks of real papers, sent through aiosmtpd: each
reader gets every paper exactly once, whether they stay daily, stay weekly or switch
between the two in the middle of a week; the ledger has one row per (reader, edition)."""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import time_machine

from digest.config import Config, EmailConfig, FeedsConfig, ScheduleConfig
from digest.deliver.digest import send_digests
from digest.deliver.editions import first_edition
from digest.models import DeliveryState, Listing, Subscriber
from digest.store import Store
from digest.store.readers import Delivery, Ledger, add_subscriber, set_frequency
from tests.support.captures import parse_capture
from tests.support.config import smtp_config
from tests.support.mail import parse_bytes
from tests.support.paths import real_api_captures
from tests.support.smtpserver import SmtpServer

MONDAY = date(2026, 11, 2)  # weekly_day "mon"
DAYS = [MONDAY + timedelta(days=n) for n in range(15)]  # Mon .. the Monday two weeks on
READERS = {
    "daily@example.net": "daily",
    "weekly@example.net": "weekly",
    "to-weekly@example.net": "daily",  # switches to weekly on the first Thursday
    "to-daily@example.net": "weekly",  # switches to daily on the second Wednesday
}
SWITCHES = {
    DAYS[3]: ("to-weekly@example.net", "weekly"),
    DAYS[9]: ("to-daily@example.net", "daily"),
}


def config(port: int) -> Config:
    return Config(
        feeds=FeedsConfig(base_url="https://papers.example.org"),
        smtp=smtp_config(port),
        # No budget: every paper in the email itself, so the test can count them.
        email=dataclasses.replace(EmailConfig(), max_full=0, max_listed=1000),
        schedule=ScheduleConfig(timezone="UTC", weekly_day="mon"),
    )


def paper_ids(raw: bytes) -> list[str]:
    msg = parse_bytes(raw)
    text = msg.get_body(("plain",))
    assert text is not None
    return re.findall(r"https://huggingface\.co/papers/(\S+)", text.get_content())


def test_each_paper_once_across_daily_weekly_switches(store: Store) -> None:
    captures = real_api_captures()[: len(DAYS)]
    stored_by_day: dict[date, set[str]] = {}
    got: dict[str, list[str]] = {a: [] for a in READERS}
    emails: Counter[str] = Counter()
    with SmtpServer() as server:
        cfg = config(server.port)
        for address, how in READERS.items():
            add_subscriber(cfg, store, address, (), how)
        for day, capture in zip(DAYS, captures, strict=True):
            at = datetime(day.year, day.month, day.day, 7, tzinfo=UTC)
            with time_machine.travel(at, tick=False):
                listing = parse_capture(capture)
                result = store.store_listing(Listing(listing.papers, listing.url, "api"))
                stored_by_day[day] = set(result.new_ids)
            with time_machine.travel(at + timedelta(hours=1), tick=True):
                before = len(server.messages)
                report = send_digests(cfg, store, day, today=day)
                assert not report.failed, report.summary()
                for received in server.messages[before:]:
                    (to,) = received.recipients
                    got[to] += paper_ids(received.data)
                    emails[to] += 1
            if day in SWITCHES:
                set_frequency(cfg, store, *SWITCHES[day])
    everything = [pid for d in DAYS for pid in stored_by_day[d]]
    assert len(everything) == len(set(everything)) > 100
    for address, ids in got.items():
        repeated = [pid for pid, n in Counter(ids).items() if n > 1]
        assert not repeated, f"{address} got {repeated} twice"
        missing = set(everything) - set(ids)
        assert not missing, f"{address} never got {sorted(missing)[:5]}"
    assert emails["daily@example.net"] == 15
    assert emails["weekly@example.net"] == 3  # the three Mondays
    assert emails["to-weekly@example.net"] == 4 + 2  # Mon-Thu daily, then two Mondays
    assert emails["to-daily@example.net"] == 2 + 5  # two Mondays, then Thu-Mon daily
    # The ledger: one row per reader and day they were sent, each "sent" exactly once.
    rows = Ledger(store).rows([DeliveryState.SENT])
    assert Counter(r.email for r in rows) == emails
    assert len({(r.email, r.day) for r in rows}) == len(rows)
    # A weekly row says where its week started; a day's own row does not.
    week = {(r.email, r.day): r.covers_from for r in rows}
    assert week[("weekly@example.net", DAYS[7])] == DAYS[1]
    assert week[("to-daily@example.net", DAYS[10])] == DAYS[8]  # back to daily: catch up
    assert week[("daily@example.net", DAYS[10])] is None


def test_a_second_send_of_the_day_sends_no_weekly_twice(store: Store) -> None:
    with SmtpServer() as server:
        cfg = config(server.port)
        add_subscriber(cfg, store, "weekly@example.net", (), "weekly")
        at = datetime(MONDAY.year, MONDAY.month, MONDAY.day, 7, tzinfo=UTC)
        with time_machine.travel(at, tick=False):
            listing = parse_capture(real_api_captures()[0])
            store.store_listing(Listing(listing.papers, listing.url, "api"))
        with time_machine.travel(at + timedelta(hours=1), tick=True):
            assert send_digests(cfg, store, MONDAY, today=MONDAY).sent == ["weekly@example.net"]
            again = send_digests(cfg, store, MONDAY, today=MONDAY)
        assert again.sent == [] and again.already_sent == 1
        # Tuesday: not a weekly day, so nothing is queued for them at all.
        tuesday = MONDAY + timedelta(days=1)
        with time_machine.travel(at + timedelta(days=1, hours=1), tick=True):
            report = send_digests(cfg, store, tuesday, today=tuesday)
        assert report.sent == [] and Ledger(store).of_day(tuesday) == {}
        assert len(server.messages) == 1


def test_first_edition_rules() -> None:
    day = date(2026, 11, 16)
    weekly = Subscriber("w@example.net", frequency="weekly")
    daily = Subscriber("d@example.net")

    def sent(on: date, covers_from: date | None = None) -> Delivery:
        return Delivery("x@example.net", on, DeliveryState.SENT, covers_from=covers_from)

    assert first_edition(weekly, day, None) == day - timedelta(days=6)
    assert first_edition(weekly, day, sent(day - timedelta(days=3))) == day - timedelta(days=2)
    assert first_edition(weekly, day, sent(day - timedelta(days=30))) == day - timedelta(days=6)
    assert first_edition(daily, day, None) == day
    assert first_edition(daily, day, sent(day - timedelta(days=3))) == day  # a missed day
    back = sent(day - timedelta(days=3), covers_from=day - timedelta(days=9))
    assert first_edition(daily, day, back) == day - timedelta(days=2)  # after a weekly one


def test_weekly_config_is_checked(tmp_path: Path) -> None:
    from digest.config import ConfigProblems, load_config

    path = tmp_path / "config.toml"
    path.write_text(
        '[schedule]\nsend_days = ["mon", "tue"]\nweekly_day = "sun"\n'
        '[[subscribers]]\nemail = "a@example.org"\nfrequency = "hourly"\n'
    )
    with pytest.raises(ConfigProblems) as caught:
        load_config(path)
    text = str(caught.value)
    assert "weekly_day" in text and "'sun' is not one of send_days (mon, tue)" in text
    assert "'hourly': must be one of daily, weekly" in text
