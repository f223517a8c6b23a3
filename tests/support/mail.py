"""The daily email built from a real day: config, the day's papers, the message parsed back."""

from __future__ import annotations

import email.policy
import itertools
from dataclasses import replace
from datetime import date
from email.message import EmailMessage
from email.parser import BytesParser

from digest.clock import now_utc
from digest.config import (
    BouncesConfig,
    Config,
    EmailConfig,
    FeedsConfig,
    SmtpConfig,
    SubscriberConfig,
    TopicConfig,
)
from digest.deliver.digest import send_digests
from digest.deliver.smtp import flatten
from digest.jobs import ingest_file
from digest.models import StoredPaper, Subscriber
from digest.store import Store
from tests.support.config import smtp_config
from tests.support.paths import PAGE_2024_08_01
from tests.support.smtpserver import Received, SmtpServer

TOPICS = [
    TopicConfig(name="video", title="Video", keywords=["video*"]),
    TopicConfig(name="diffusion", title="Diffusion", keywords=["diffusion", "generation"]),
    TopicConfig(name="robots", title="Robots", keywords=["humanoid", "robot*"]),
    TopicConfig(name="quiet", keywords=["zebrafish"]),
]
SENDER = "digest@papers.example.org"
READER = "reader@example.net"


def make_config(**email: object) -> Config:
    """A config as a real deployment has one: a sender on our domain, an https site."""
    return Config(
        topics=TOPICS,
        feeds=FeedsConfig(base_url="https://papers.example.org"),
        smtp=SmtpConfig(sender="Daily Papers <digest@papers.example.org>"),
        email=replace(EmailConfig(), **email),  # type: ignore[arg-type]
    )


def topic_mix_readers(local: str = "reader.{i}", token_repeat: int = 7) -> list[Subscriber]:
    """One reader for every mix of the test topics (none to all), each with a preferences
    token, tokens of varied length and, every other one, an unsubscribe mailbox; `local`
    makes the address's local part from the reader's number."""
    names = [t.name for t in TOPICS]
    mixes = [c for n in range(len(names) + 1) for c in itertools.combinations(names, n)]
    return [
        Subscriber(
            f"{local.format(i=i)}@example.net",
            mix,
            token=f"tok{i}" * (1 + i % token_repeat),
            preferences_token=f"pref{i}",
            unsubscribe_mailto=f"unsubscribe+x{i}@papers.example.org" if i % 2 else "",
        )
        for i, mix in enumerate(mixes)
    ]


def real_day(store: Store) -> tuple[list[StoredPaper], date]:
    """The 13 papers of the captured 2024-08-01 page, as new today (first seen now)."""
    ingest_file(store, PAGE_2024_08_01)
    day = now_utc().date()
    papers = store.papers_of_day(day)
    assert len(papers) == 13
    return papers, day


def parsed(message: EmailMessage) -> EmailMessage:
    """The message as it goes over SMTP, parsed back the way a mail client would."""
    return parse_bytes(flatten(message))


def parse_bytes(raw: bytes) -> EmailMessage:
    """Raw message bytes parsed the way a mail client would."""
    msg = BytesParser(policy=email.policy.default).parsebytes(raw)
    assert isinstance(msg, EmailMessage)
    return msg


def bodies(msg: EmailMessage) -> tuple[str, str]:
    """(text part, HTML part) of a digest."""
    text, page = msg.get_body(("plain",)), msg.get_body(("html",))
    assert text is not None and page is not None
    return text.get_content(), page.get_content()


def config_for(
    port: int,
    sender: str = SENDER,
    *,
    bounces: BouncesConfig | None = None,
    **email_keys: object,
) -> Config:
    """A deployment's config sending to the test server on `port`, READER its one reader
    (`bounces`: with a bounces mailbox, hence VERP and the unsubscribe mailto)."""
    return Config(
        topics=TOPICS,
        feeds=FeedsConfig(base_url="https://papers.example.org"),
        smtp=smtp_config(port, sender=sender),
        email=replace(EmailConfig(), **email_keys),  # type: ignore[arg-type]
        bounces=bounces or BouncesConfig(),
        subscribers=[SubscriberConfig(READER, ["video"])],
    )


def send_one(
    store: Store,
    sender: str = SENDER,
    *,
    bounces: BouncesConfig | None = None,
    **email_keys: object,
) -> bytes:
    """Send the day's real digest to READER through aiosmtpd; return the bytes it took."""
    return send_one_received(store, sender, bounces=bounces, **email_keys).data


def send_one_received(
    store: Store,
    sender: str = SENDER,
    *,
    bounces: BouncesConfig | None = None,
    **email_keys: object,
) -> Received:
    """send_one, but the whole Received (envelope sender and recipients too)."""
    _, day = real_day(store)
    config = config_for(0, sender, bounces=bounces, **email_keys)
    with SmtpServer() as server:
        config = replace(config, smtp=replace(config.smtp, port=server.port))
        report = send_digests(config, store, day, today=day)
        assert report.sent == [READER], report.summary()
    [received] = server.messages
    return received
