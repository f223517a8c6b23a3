"""Mailer against a real aiosmtpd server on 127.0.0.1: reuse, retries, refusals, drops."""

from __future__ import annotations

import io
from datetime import date
from email.generator import BytesGenerator
from email.message import EmailMessage

import pytest

from digest.deliver.smtp import Mailer, RateLimiter, flatten
from digest.errors import DeliveryError, PermanentFailure, TemporaryFailure
from digest.models import Subscriber
from digest.render.email import DigestRenderer
from digest.store import Store
from tests.support.config import smtp_config
from tests.support.mail import TOPICS, make_config, real_day
from tests.support.net import free_port
from tests.support.smtpserver import SmtpServer, simple_message

DAY = date(2024, 8, 1)
ADDRESSES = [f"reader{i}@example.org" for i in range(6)]


def send_all(mailer: Mailer, addresses: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for a in addresses:
        try:
            out[a] = mailer.deliver(simple_message(Subscriber(a), DAY), a).reply
        except (PermanentFailure, TemporaryFailure) as e:
            out[a] = f"refused {e.reply}"
    return out


def test_one_connection_for_many_messages() -> None:
    with SmtpServer() as server, Mailer(smtp_config(server.port)) as mailer:
        replies = send_all(mailer, ADDRESSES)
    assert all(r.startswith("250") for r in replies.values())
    assert server.received_by() == {a: 1 for a in ADDRESSES}
    assert server.sessions == 1
    assert mailer.connections == 1
    msg = server.messages[0].message()
    assert msg["To"] == ADDRESSES[0]
    assert msg["Message-ID"]  # added when the message had none
    # A body line starting with "." must survive SMTP's dot quoting.
    assert ".dot line" in msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]


def test_421_mid_batch_is_retried_and_each_message_arrives_once() -> None:
    sleeps: list[float] = []
    with SmtpServer() as server:
        server.data_plan = ["accept", "accept", "421 4.3.2 service shutting down"]
        with Mailer(smtp_config(server.port), sleep=sleeps.append) as mailer:
            replies = send_all(mailer, ADDRESSES)
    assert all(r.startswith("250") for r in replies.values()), replies
    assert server.received_by() == {a: 1 for a in ADDRESSES}
    assert len(sleeps) == 1 and sleeps[0] > 0  # one backoff before the retry
    assert server.sessions == 2  # 421 means the session is over: a new one was opened


def test_550_for_one_address_fails_it_and_the_rest_arrive() -> None:
    bad = ADDRESSES[2]
    with SmtpServer() as server:
        server.rcpt_replies[bad] = "550 5.1.1 <reader2@example.org>: no such user"
        with Mailer(smtp_config(server.port), sleep=lambda _s: None) as mailer:
            replies = send_all(mailer, ADDRESSES)
    assert replies[bad] == "refused 550 5.1.1 <reader2@example.org>: no such user"
    assert server.received_by() == {a: 1 for a in ADDRESSES if a != bad}
    assert server.sessions == 1  # a refusal is not a reason to reconnect


@pytest.mark.parametrize("where", ["mail", "accept-drop"])
def test_dropped_connection_reconnects_and_continues(where: str) -> None:
    # Dropped before the message went ("mail"), or after its 250 ("accept-drop"): known
    # outcomes, so the mailer reconnects, retries what was not taken, and goes on.
    with SmtpServer() as server:
        if where == "mail":
            server.mail_plan = ["ok", "drop"]
        else:
            server.data_plan = ["accept", "accept-drop"]
        with Mailer(smtp_config(server.port), sleep=lambda _s: None) as mailer:
            replies = send_all(mailer, ADDRESSES)
    assert all(r.startswith("250") for r in replies.values()), replies
    assert server.received_by() == {a: 1 for a in ADDRESSES}
    assert mailer.connections == 2


def test_temporary_refusal_gives_up_after_the_configured_retries() -> None:
    sleeps: list[float] = []
    with SmtpServer() as server:
        server.rcpt_replies[ADDRESSES[0]] = "452 4.2.2 mailbox full"
        with (
            Mailer(smtp_config(server.port, retries=2), sleep=sleeps.append) as mailer,
            pytest.raises(TemporaryFailure) as info,
        ):
            mailer.deliver(simple_message(Subscriber(ADDRESSES[0]), DAY), ADDRESSES[0])
    assert info.value.reply == "452 4.2.2 mailbox full"
    assert info.value.attempts == 3
    assert sleeps == sorted(sleeps) and len(sleeps) == 2  # backoff grows


def test_no_server_stops_with_an_error_naming_it() -> None:
    port = free_port()  # nothing listens here
    with (
        Mailer(smtp_config(port, retries=1), sleep=lambda _s: None) as mailer,
        pytest.raises(DeliveryError, match=rf"127\.0\.0\.1:{port}.*after 2 attempts"),
    ):
        mailer.deliver(simple_message(Subscriber("a@example.org"), DAY), "a@example.org")


def test_international_address_uses_smtputf8() -> None:
    address = "jürgen@example.org"
    with SmtpServer() as server, Mailer(smtp_config(server.port)) as mailer:
        mailer.deliver(simple_message(Subscriber(address), DAY), address)
    assert server.received_by() == {address: 1}


def test_rate_limiter_spaces_messages() -> None:
    now = [100.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    limiter = RateLimiter(120, clock=lambda: now[0], sleep=sleep)  # one per 0.5 s
    for _ in range(5):
        limiter.wait()
    assert slept == [0.5] * 4
    assert now[0] == pytest.approx(102.0)
    RateLimiter(0, clock=lambda: now[0], sleep=sleep).wait()  # 0: no limit
    assert len(slept) == 4


def test_starttls_with_a_private_ca_file(tmp_path) -> None:
    # A relay that requires STARTTLS, with a certificate no system CA signed.
    from tests.support.smtpserver import self_signed, server_tls

    cert, key = self_signed(tmp_path)
    with SmtpServer(tls=server_tls(cert, key)) as server:
        trusted = smtp_config(server.port, security="starttls", ca_file=str(cert))
        with Mailer(trusted) as mailer:
            replies = send_all(mailer, ADDRESSES[:2])
        assert all(r.startswith("250") for r in replies.values())
        assert server.received_by() == {a: 1 for a in ADDRESSES[:2]}

        # Without the CA file the certificate is not trusted: a clear error, nothing sent.
        with (
            Mailer(smtp_config(server.port, security="starttls", retries=0)) as mailer,
            pytest.raises(DeliveryError, match=r"TLS failed.*certificate verify failed"),
        ):
            send_all(mailer, ADDRESSES[2:3])
        # Plain text to a relay that requires STARTTLS is refused, never sent in clear.
        with Mailer(smtp_config(server.port, retries=0)) as mailer:
            assert send_all(mailer, ADDRESSES[3:4])[ADDRESSES[3]].startswith("refused 530")
    assert len(server.messages) == 2


def test_unreadable_ca_file_is_named(tmp_path) -> None:
    missing = tmp_path / "nope.pem"
    with (
        SmtpServer() as server,
        Mailer(smtp_config(server.port, security="starttls", ca_file=str(missing))) as mailer,
        pytest.raises(DeliveryError, match=r"smtp\.ca_file.*nope\.pem"),
    ):
        send_all(mailer, ADDRESSES[:1])


def test_a_line_break_in_an_address_is_refused_before_anything_is_sent() -> None:
    # smtplib would turn "csrf\0\r\nbcc: x@evil.org" into the envelope address
    # <x@evil.org>: the reader's message, with their links, to someone else.
    evil = "csrf\0\r\nbcc: x@evil.org"
    with SmtpServer() as server, Mailer(smtp_config(server.port)) as mailer:
        with pytest.raises(PermanentFailure, match="control characters"):
            mailer.deliver(simple_message(Subscriber("x@example.org"), DAY), evil)
        replies = send_all(mailer, ADDRESSES[:2])
    assert all(r.startswith("250") for r in replies.values())
    assert server.received_by() == {a: 1 for a in ADDRESSES[:2]}  # nothing for x@evil.org


def stock_flatten(message: EmailMessage, utf8: bool = False) -> bytes:
    """What email's own BytesGenerator writes (before `flatten` took its shortcuts)."""
    buf = io.BytesIO()
    policy = message.policy.clone(linesep="\r\n")
    if utf8:
        policy = policy.clone(utf8=True)
    BytesGenerator(buf, policy=policy).flatten(message, linesep="\r\n")
    return buf.getvalue()


def test_flatten_writes_the_bytes_of_the_stock_generator(store: Store) -> None:
    # The real renderer over a real day, readers with every mix of topics, a non-ASCII
    # address and a long non-ASCII subject: headers that fit are written as they are,
    # the rest folded by the policy; bodies in one piece. Byte for byte the same.
    papers, day = real_day(store)
    config = make_config()
    renderer = DigestRenderer(config, papers, day)
    names = [t.name for t in TOPICS]
    subs = [Subscriber(f"r{i}@example.net", (names[i % len(names)],)) for i in range(6)]
    subs += [Subscriber("jörg@exämple.net", tuple(names)), Subscriber("all@example.net")]
    messages = [m for m in (renderer.render(s) for s in subs) if m is not None]
    assert len(messages) >= 3
    odd = simple_message(Subscriber("x@example.org"), DAY)
    del odd["Subject"]
    odd["Subject"] = "Überraschung: " + "a very long subject that must be folded " * 3
    odd["X-Spaces"] = "two  spaces and =?utf-8?q?an_encoded_word?="
    for message in [*messages, odd]:
        for utf8 in (False, True):
            # Both flatten the same boundary: set it once, as the first flatten would.
            if message.get_boundary() is None:
                message.set_boundary("=_fixed_boundary")
            assert flatten(message, utf8) == stock_flatten(message, utf8)
