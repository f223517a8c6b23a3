"""The send against a real MTA: Debian's Postfix on 127.0.0.1 (started by the test with
its own config), which offers PIPELINING, refuses one recipient, and relays what it takes
to aiosmtpd, where the copies are counted.

Skipped only where Postfix cannot run (not installed, or not root) and
CI_REQUIRE_CONTAINER is unset; .ci/run installs it, and there the test must run.
"""

from __future__ import annotations

import os
import smtplib
import time
from datetime import date
from email.message import EmailMessage

import pytest

from digest.config import Config, SubscriberConfig, TopicConfig
from digest.deliver.digest import send_digests
from digest.models import Subscriber
from digest.store import Store
from digest.store.readers import Ledger
from tests.support import postfix
from tests.support.config import smtp_config
from tests.support.smtpserver import SmtpServer, simple_message

DAY = date(2024, 8, 1)


@pytest.fixture(autouse=True)
def _needs_postfix() -> None:
    why = postfix.missing()
    if why:
        if os.environ.get("CI_REQUIRE_CONTAINER") == "1":
            pytest.fail(f"{why}, and CI_REQUIRE_CONTAINER=1 says this test must run")
        pytest.skip(why)


def render(sub: Subscriber) -> EmailMessage | None:
    return simple_message(sub, DAY)


def test_four_pipelined_sessions_through_postfix_one_copy_each(store: Store) -> None:
    readers = [f"reader{i}@example.org" for i in range(40)]
    bad = readers[13]
    with (
        SmtpServer(keep=True) as relay,
        postfix.Postfix(relay.port, rejected={bad: "no such user"}) as mta,
    ):
        with smtplib.SMTP("127.0.0.1", mta.port, timeout=5) as conn:
            conn.ehlo()
            assert conn.has_extn("pipelining")  # so the send below pipelines
        config = Config(
            topics=[TopicConfig(name="agents", keywords=["agent*"])],
            smtp=smtp_config(mta.port, sender="digest@example.org", connections=4),
            subscribers=[SubscriberConfig(a, ["agents"]) for a in readers],
        )
        report = send_digests(config, store, DAY, render=render, today=DAY)
        again = send_digests(config, store, DAY, render=render, today=DAY)
        deadline = time.monotonic() + 60
        while sum(relay.received_by().values()) < len(readers) - 1:  # Postfix relays later
            assert time.monotonic() < deadline, relay.received_by()
            time.sleep(0.2)
        time.sleep(0.5)  # a late second copy would show up here
        taken = relay.received_by()
        subjects = {m.message()["Subject"] for m in relay.messages}
    assert taken == {a: 1 for a in readers if a != bad}
    assert len(report.sent) == 39 and report.connections == 4
    assert [a for a, _ in report.failed] == [bad]
    reply = report.failed[0][1]
    assert reply.startswith("554 5.7.1") and "no such user" in reply, reply
    assert report.deferred == []  # a 5xx: final for the day
    rows = Ledger(store).of_day(DAY)
    assert rows[bad].status == "failed" and rows[readers[0]].status == "sent"
    assert all(r.reply and "queued as" in r.reply for a, r in rows.items() if a != bad)
    assert subjects == {f"Daily Papers {DAY.isoformat()}"}
    assert again.sent == [] and [a for a, _ in again.failed] == [bad]  # only the refused one
