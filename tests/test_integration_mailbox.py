"""The loop of issue 17's two halves, closed with real parts: a ranked digest goes out on
4 pipelined sessions with VERP; a 5.1.1 report comes back to the envelope sender that
reader's message really had (read off aiosmtpd), and another reader answers the mailto
of the List-Unsubscribe header they really got; a real Dovecot holds both; one poll
marks the first bouncing and the second unsubscribed; the next day's send skips both."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from digest.config import BouncesConfig, SubscriberConfig
from digest.deliver.bounces import poll_mailbox
from digest.deliver.digest import send_digests
from digest.models import SubscriberStatus
from digest.store import Store
from digest.store.readers import list_subscribers
from tests.support import dovecot
from tests.support.mail import config_for, real_day
from tests.support.smtpserver import SmtpServer
from tests.test_deliver_bounces import DOMAIN, need_dovecot, unsubscribe_mail, verp_dsn

READERS = [f"reader{n}@example.net" for n in range(8)]
GONE, LEAVER = READERS[2], READERS[5]


@pytest.fixture
def imap() -> Iterator[dovecot.Dovecot]:
    need_dovecot()
    with dovecot.Dovecot(user=f"bounces@{DOMAIN}") as server:
        yield server


def test_a_real_verp_bounce_and_a_real_mailto_close_the_loop(
    store: Store, imap: dovecot.Dovecot, tmp_path: Path
) -> None:
    _, day = real_day(store)
    bounces = BouncesConfig(
        imap_host="127.0.0.1",
        imap_port=imap.port,
        imap_security="none",
        imap_user=f"bounces@{DOMAIN}",
        password="imap-secret",
        timeout=5.0,
    )
    with SmtpServer(pipelining=True) as server:
        config = config_for(server.port, bounces=bounces)
        config = dataclasses.replace(
            config,
            smtp=dataclasses.replace(config.smtp, connections=4),
            subscribers=[SubscriberConfig(a, ["video"]) for a in READERS],
        )
        report = send_digests(config, store, day, today=day)
    assert sorted(report.sent) == sorted(READERS), report.summary()
    got = {r.recipients[0]: r for r in server.messages}

    # What the relay does with GONE's message: a DSN (Status 5.1.1) to its envelope sender.
    verp = got[GONE].sender
    assert verp.startswith("bounces+") and verp.endswith("@" + DOMAIN)
    # What LEAVER's mail program does with the header it got.
    header = str(got[LEAVER].message()["List-Unsubscribe"])
    mailto = re.search(r"<mailto:([^?>]+)", header)
    assert mailto, header
    imap.append(verp_dsn(verp, "dsn_11.txt"), unsubscribe_mail(mailto.group(1), LEAVER))

    polled = poll_mailbox(config, store)
    assert polled.read == 2, polled.summary()
    assert polled.unsubscribed == [LEAVER]
    status = {r.email: r.status for r in list_subscribers(config, store)}
    assert status[GONE] == SubscriberStatus.BOUNCING
    assert status[LEAVER] == SubscriberStatus.UNSUBSCRIBED
    assert {status[a] for a in READERS if a not in (GONE, LEAVER)} == {SubscriberStatus.ACTIVE}

    next_day = day + timedelta(days=1)
    with SmtpServer(pipelining=True) as server:
        smtp = dataclasses.replace(config.smtp, port=server.port)
        again = send_digests(
            dataclasses.replace(config, smtp=smtp), store, next_day, today=next_day
        )
    # The others are still taken up (sent, or skipped when the day has nothing new).
    taken_up = set(again.sent) | {a for a, _ in again.skipped} | {a for a, _ in again.failed}
    assert again.subscribers == len(READERS) - 2
    assert taken_up == set(READERS) - {GONE, LEAVER}, again.summary()
