"""One name per concept (issue 13): status vocabularies are StrEnums end to end, errors
carry their facts, and the production API has no test hooks.

Real parts: a real capture stored in a real SQLite file, a real aiosmtpd server, a port
where nothing listens.
"""

from __future__ import annotations

import inspect
from datetime import date
from pathlib import Path

from digest.config import Config, SmtpConfig, SubscriberConfig
from digest.deliver.digest import send_digests
from digest.deliver.smtp import Mailer
from digest.errors import DeliveryError, KeywordsError
from digest.jobs import ingest_file
from digest.models import DeliveryState, RunStatus, Subscriber, SubscriberStatus
from digest.store import Store
from digest.store.readers import Ledger, add_subscriber, list_subscribers, remove_subscriber
from digest.topics import parse_keywords
from tests.support.net import free_port
from tests.support.paths import PAGE_2024_08_01
from tests.support.smtpserver import SmtpServer, simple_message

DAY = date(2024, 8, 1)


def smtp(port: int, **kw: object) -> SmtpConfig:
    return SmtpConfig(
        host="127.0.0.1",
        port=port,
        security="none",
        rate_per_minute=0,
        timeout=5.0,
        **kw,  # type: ignore[arg-type]
    )


def test_statuses_read_back_from_the_file_are_their_enums(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "v.db")
    try:
        run = ingest_file(store, str(PAGE_2024_08_01))
        assert run.status is RunStatus.OK
        assert store.last_run()["status"] == RunStatus.OK  # type: ignore[index]
        with SmtpServer() as server:
            config = Config(
                smtp=smtp(server.port, sender="digest@example.org"),
                subscribers=[SubscriberConfig("ada@example.org")],
            )
            report = send_digests(config, store, DAY, today=DAY)
        assert report.sent == ["ada@example.org"]
        rows = Ledger(store).rows(list(DeliveryState))
        assert [type(r.status) for r in rows] == [DeliveryState]
        assert rows[0].status is DeliveryState.SENT
        add_subscriber(config, store, "alan@example.org")
        remove_subscriber(config, store, "alan@example.org")
        statuses = {r.email: r.status for r in list_subscribers(config, store)}
        assert statuses["alan@example.org"] is SubscriberStatus.UNSUBSCRIBED
        assert statuses["ada@example.org"] is SubscriberStatus.ACTIVE
    finally:
        store.close()


def test_a_delivery_error_names_the_server_and_its_reply() -> None:
    port = free_port()  # nothing listens here
    try:
        with Mailer(smtp(port, retries=1), sleep=lambda _s: None) as mailer:
            mailer.deliver(simple_message(Subscriber("a@example.org"), DAY), "a@example.org")
    except DeliveryError as e:
        assert e.server == f"SMTP server 127.0.0.1:{port}"  # as Mailer.where names it
        assert "after 2 attempts" in e.reply
        assert str(e) == f"{e.server}: {e.reply}"
    else:
        raise AssertionError("no DeliveryError")


def test_a_keywords_error_carries_the_text_and_the_problem() -> None:
    try:
        parse_keywords('agent*, "tool use')
    except KeywordsError as e:
        assert (e.text, e.problem) == ('agent*, "tool use', "a quote is not closed")
    else:
        raise AssertionError("no KeywordsError")


def test_storing_a_listing_takes_no_test_hook() -> None:
    # Tests fail the transaction with a real fault (tests/test_store.py: a trigger).
    assert "before_commit" not in inspect.signature(Store.store_listing).parameters
