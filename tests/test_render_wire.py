"""A reader's message carries its own SMTP bytes (digest.render.mailheaders.WireMessage),
spliced from a skeleton flattened once per send: they must be the bytes the email package
writes for the same message built header by header, and be dropped when the message
changes after rendering."""

from __future__ import annotations

import random
import string
from dataclasses import replace
from email.message import EmailMessage

import pytest
import time_machine

from digest.config import SubscriberConfig
from digest.deliver.digest import send_digests
from digest.deliver.smtp import Mailer
from digest.models import Subscriber
from digest.render.email import DigestRenderer
from digest.render.mailheaders import FOLD_AT, WireMessage, wire_header
from digest.store import Store
from tests.support.config import smtp_config
from tests.support.mail import (
    SENDER,
    TOPICS,
    config_for,
    make_config,
    parse_bytes,
    real_day,
    topic_mix_readers,
)
from tests.support.smtpserver import SmtpServer
from tests.test_deliver_smtp import stock_flatten

NOW = "2026-12-02 01:00:00Z"


def readers() -> list[Subscriber]:
    """Every mix of the test topics, personal keywords, a mailbox for unsubscribing or
    not, long and odd tokens."""
    subs = topic_mix_readers("reader.{i}+tag", token_repeat=7)
    subs.append(Subscriber("kw@example.net", keywords="humanoid robot*", token="k"))
    subs.append(Subscriber('"odd local"@example.net', ("video",), token="q"))
    return subs


def test_the_bytes_are_the_email_packages(store: Store) -> None:
    # Byte for byte what BytesGenerator writes for the message built the old way (each
    # header parsed and folded by the email package), for every reader; and what it
    # writes for the message as returned (so dropping the bytes changes nothing).
    papers, day = real_day(store)
    renderer = DigestRenderer(make_config(), papers, day)
    checked = 0
    with time_machine.travel(NOW, tick=False):
        for sub in readers():
            msg = renderer.render(sub)
            if msg is None:
                continue
            assert isinstance(msg, WireMessage)
            wire = msg.wire()
            assert wire is not None, sub
            text, page = (p.get_payload() for p in msg.get_payload())
            stock = renderer.stock_message(sub, str(msg["Subject"]), text, page)
            assert wire == stock_flatten(stock), sub
            assert wire == stock_flatten(msg), sub
            assert parse_bytes(wire)["To"] == sub.email
            checked += 1
    assert checked >= 15


@pytest.mark.parametrize(
    "address,sender",
    [("jörg@exämple.net", SENDER), ("reader@example.net", "jörg@papers.example.org")],
)
def test_a_non_ascii_address_is_left_to_the_email_package(
    store: Store, address: str, sender: str
) -> None:
    # SMTPUTF8: headers go in UTF-8, as the email package writes them; a 7-bit From
    # would be an encoded word in the addr-spec, which is no address.
    papers, day = real_day(store)
    config = make_config()
    config = replace(config, smtp=replace(config.smtp, sender=sender))
    renderer = DigestRenderer(config, papers, day)
    msg = renderer.render(Subscriber(address, ("video",), token="t"))
    assert msg is not None
    assert not isinstance(msg, WireMessage) or msg.wire() is None
    out = Mailer(config.smtp).prepare(msg, address)
    assert out.utf8
    assert "jörg@".encode() in out.payload and b"=?utf-8?q?j" not in out.payload


def test_a_message_changed_after_rendering_is_flattened_again(store: Store) -> None:
    papers, day = real_day(store)
    renderer = DigestRenderer(make_config(), papers, day)
    mailer = Mailer(smtp_config(1))
    sub = Subscriber("r@example.net", ("video",), token="t")
    changes = {
        "subject": lambda m: m.replace_header("Subject", "Changed subject"),
        "header added": lambda m: m.__setitem__("X-Changed", "yes"),
        "part payload": lambda m: m.get_payload()[0].set_payload("Changed body\n"),
        "part header": lambda m: m.get_payload()[1].set_raw("X-Changed", "yes"),
        "epilogue": lambda m: setattr(m, "epilogue", "Changed"),
    }
    for what, change in changes.items():
        msg = renderer.render(sub)
        assert isinstance(msg, WireMessage)
        kept = msg.wire()
        assert kept is not None and mailer.prepare(msg, sub.email).payload == kept
        change(msg)
        assert msg.wire() is None, what
        payload = mailer.prepare(msg, sub.email).payload
        assert payload == stock_flatten(msg), what
        assert b"Changed" in payload, what


def test_folding_is_the_email_packages_and_keeps_lines_short() -> None:
    # Random ASCII subjects of words up to 25 characters, some with punctuation: the
    # fast folder writes what the email package writes; lines within FOLD_AT; the
    # value reads back unchanged. Non-ASCII goes to the package (encoded words).
    rng = random.Random(17)
    odd = string.punctuation
    for _ in range(3000):
        words = [
            "".join(
                rng.choice(odd if rng.random() < 0.1 else string.ascii_letters)
                for _ in range(rng.randint(1, 25))
            )
            for _ in range(rng.randint(1, 25))
        ]
        value = " ".join(words)
        if "=?" in value:
            continue
        raw, line = wire_header("Subject", value)
        msg = WireMessage()
        msg.set_raw("Subject", raw)
        assert line == stock_flatten(msg).split(b"\r\n\r\n")[0] + b"\r\n", value
        ref = WireMessage()
        ref["Subject"] = value
        assert line == stock_flatten(ref).split(b"\r\n\r\n")[0] + b"\r\n", value
        assert all(len(x) <= FOLD_AT for x in line.split(b"\r\n")), value
        # (Python reads "Subject:\r\n value", its own folding, with the leading space.)
        assert parse_bytes(line + b"\r\n")["Subject"].strip() == value
    raw, line = wire_header("Subject", "Überraschung: " + "a long subject " * 8)
    assert line.isascii() and b"=?utf-8?" in line
    assert parse_bytes(line + b"\r\n")["Subject"] == "Überraschung: " + "a long subject " * 8


def test_the_server_takes_the_kept_bytes(store: Store) -> None:
    # Through send_digests (2 sessions) to aiosmtpd: what arrives is each message's kept
    # bytes (the server strips the dot stuffing and the final line end).
    papers, day = real_day(store)
    names = [t.name for t in TOPICS]
    readers = [SubscriberConfig(f"r{i}@example.net", names[: i % 4 + 1]) for i in range(6)]
    kept: dict[str, bytes] = {}
    with SmtpServer() as server:
        config = replace(
            config_for(server.port),
            subscribers=readers,
            smtp=replace(smtp_config(server.port), connections=2),
        )
        renderer = DigestRenderer(config, papers, day)

        def render(sub: Subscriber) -> EmailMessage | None:
            msg = renderer.render(sub)
            assert isinstance(msg, WireMessage)
            wire = msg.wire()
            assert wire is not None
            kept[sub.email] = wire
            return msg

        report = send_digests(config, store, day, today=day, render=render)
        assert len(report.sent) == 6, report.summary()
    assert len(server.messages) == 6
    for received in server.messages:
        [address] = received.recipients
        assert received.data.rstrip(b"\r\n") == kept[address].rstrip(b"\r\n"), address
