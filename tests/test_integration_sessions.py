"""Issue 17's two halves together: 4 pipelined SMTP sessions (send) with VERP, DKIM and
bounce counting (bounces), on a real digest of a real day, through aiosmtpd, with a
recording TCP proxy in front of it so the test reads the bytes that went over the wire.

Each half was tested alone; here a 5.1.1 on one session, the VERP envelope sender in a
pipelined MAIL FROM, and a DKIM signature over the new flatten are checked at once."""

from __future__ import annotations

import base64
import dataclasses
import re
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import timedelta
from pathlib import Path
from typing import Any

import dkim

from digest.config import BouncesConfig, SubscriberConfig
from digest.deliver.digest import send_digests
from digest.models import SubscriberStatus
from digest.store import Store
from digest.store.readers import active_subscribers, bouncing_addresses, list_subscribers
from tests.support.mail import config_for, real_day
from tests.support.net import free_port
from tests.support.smtpserver import SmtpServer

SELECTOR = "digest2026"
DOMAIN = "papers.example.org"
READERS = [f"reader{n:02d}@example.net" for n in range(24)]
GONE = "reader07@example.net"  # the server says 5.1.1 to this one


class RecordingProxy:
    """127.0.0.1:port -> 127.0.0.1:target; keeps what each client connection wrote."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = free_port()
        self.sent: list[bytearray] = []  # client -> server bytes, one per connection
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.settimeout(0.2)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _pump(self, src: socket.socket, dst: socket.socket, keep: bytearray | None) -> None:
        try:
            while data := src.recv(65536):
                if keep is not None:
                    keep += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target), timeout=10)
            upstream.settimeout(None)
            keep = bytearray()
            self.sent.append(keep)
            for args in ((client, upstream, keep), (upstream, client, None)):
                t = threading.Thread(target=self._pump, args=args, daemon=True)
                t.start()
                self._threads.append(t)

    def __enter__(self) -> RecordingProxy:
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._listener.close()
        for t in self._threads:
            t.join(5)


def make_key(folder: Path) -> tuple[Path, bytes]:
    key = folder / "dkim.pem"
    subprocess.run(
        ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
         "-out", str(key)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    der = subprocess.run(
        ["openssl", "pkey", "-in", str(key), "-pubout", "-outform", "DER"],
        check=True, capture_output=True, timeout=60,
    ).stdout  # fmt: skip
    return key, b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)


@contextmanager
def four_sessions(store: Store, tmp_path: Path) -> Iterator[tuple[Any, SmtpServer, Any, Any]]:
    """A config with READERS (on 'video'), 4 sessions, a bounces mailbox (hence VERP),
    DKIM; a pipelining aiosmtpd behind a recording proxy."""
    key, record = make_key(tmp_path)
    with SmtpServer(pipelining=True) as server, RecordingProxy(server.port) as proxy:
        base = config_for(proxy.port, bounces=BouncesConfig(imap_host="imap.example.org"))
        smtp = dataclasses.replace(
            base.smtp, connections=4, dkim_key_file=str(key), dkim_selector=SELECTOR
        )
        config = dataclasses.replace(
            base, smtp=smtp, subscribers=[SubscriberConfig(a, ["video"]) for a in READERS]
        )
        yield config, server, proxy, record


def test_four_pipelined_sessions_sign_verp_and_count_a_bounce(store: Store, tmp_path: Path) -> None:
    _, day = real_day(store)
    with four_sessions(store, tmp_path) as (config, server, proxy, record):
        server.rcpt_replies[GONE] = "550 5.1.1 <reader07@example.net>: no such user"
        envelopes = {s.email: s.envelope_from for s in active_subscribers(config, store)}
        report = send_digests(config, store, day, today=day)

    # The other sessions went on: everyone but GONE got exactly one message.
    assert sorted(report.sent) == sorted(a for a in READERS if a != GONE), report.summary()
    assert [a for a, _ in report.failed] == [GONE]
    assert server.sessions >= 2, "the send did not use several sessions"
    got = [r.recipients[0] for r in server.messages]
    assert sorted(got) == sorted(report.sent)

    # Pipelining was used, and each MAIL FROM is the reader's own VERP address, as raw
    # bytes on the wire (not smtp.sender).
    wire = b"".join(proxy.sent)
    assert b"PIPELINING" not in wire  # (the client sends commands, not the offer)
    mails = re.findall(rb"MAIL FROM:<([^>]*)>", wire)
    rcpts = re.findall(rb"RCPT TO:<([^>]*)>", wire)
    assert len(mails) == len(rcpts) == len(READERS)
    by_reader = dict(zip((r.decode() for r in rcpts), (m.decode() for m in mails), strict=True))
    for address in READERS:
        assert by_reader[address] == envelopes[address]
        assert re.fullmatch(r"bounces\+[a-z2-7]{16}@papers\.example\.org", by_reader[address])
    assert len(set(by_reader.values())) == len(READERS)
    # At least one connection wrote a message's "." and the next MAIL in one go.
    assert any(re.search(rb"\r\n\.\r\nMAIL FROM:", bytes(c)) for c in proxy.sent)
    for received in server.messages:
        assert received.sender == envelopes[received.recipients[0]]

    # DKIM over the new flatten, through pipelined sessions: every message verifies on
    # the bytes aiosmtpd received, and names the reader's own To.
    def txt(name: bytes, **_: Any) -> bytes | None:
        return record if name == f"{SELECTOR}._domainkey.{DOMAIN}.".encode() else None

    for received in server.messages:
        assert received.data.startswith(b"DKIM-Signature:")
        assert dkim.verify(received.data, dnsfunc=txt), received.recipients
        assert received.message()["To"] == received.recipients[0]

    # The 5.1.1 from a session thread was counted: GONE is bouncing, out of tomorrow's
    # send, shown as bouncing in the list; nobody else is.
    assert bouncing_addresses(store, config.smtp.max_bounces) == {GONE}
    assert GONE not in {s.email for s in active_subscribers(config, store)}
    status = {r.email: r.status for r in list_subscribers(config, store)}
    assert status[GONE] == SubscriberStatus.BOUNCING
    assert {status[a] for a in READERS if a != GONE} == {SubscriberStatus.ACTIVE}
    with SmtpServer(pipelining=True) as server2:
        smtp2 = dataclasses.replace(config.smtp, port=server2.port)
        next_day = day + timedelta(days=1)
        again = send_digests(
            dataclasses.replace(config, smtp=smtp2), store, next_day, today=next_day
        )
    assert GONE not in again.sent and GONE not in [a for a, _ in again.failed]
    assert not [r for r in server2.messages if GONE in r.recipients]


def test_bounces_from_several_sessions_at_once_are_all_counted(
    store: Store, tmp_path: Path
) -> None:
    """Eight 5.1.1s spread over 4 sessions (the Ledger's lock around record_bounce): each
    one is counted, none lost to a concurrent write, and the rows say failed."""
    _, day = real_day(store)
    gone = READERS[::3]
    with four_sessions(store, tmp_path) as (config, server, _proxy, _record):
        for address in gone:
            server.rcpt_replies[address] = f"550 5.1.1 <{address}>: no such user"
        report = send_digests(config, store, day, today=day)
    assert sorted(a for a, _ in report.failed) == sorted(gone), report.summary()
    assert len(report.sent) == len(READERS) - len(gone)
    assert bouncing_addresses(store, config.smtp.max_bounces) == set(gone)
    rows = store.db.execute(
        "SELECT email, status FROM deliveries WHERE day = ?", [day.isoformat()]
    ).fetchall()
    assert {e for e, s in rows if s == "failed"} == set(gone)
    assert {e for e, s in rows if s == "sent"} == set(READERS) - set(gone)


def test_dkim_survives_dot_stuffing_and_a_non_ascii_reader_on_four_sessions(
    store: Store, tmp_path: Path
) -> None:
    """The new flatten, the send's own dot stuffing and DKIM, on 4 pipelined sessions:
    lines that start with dots, a non-ASCII subject and a non-ASCII (SMTPUTF8) reader
    still verify on the bytes aiosmtpd received, and the text arrives as written."""
    from email.message import EmailMessage

    from digest.models import Subscriber

    body = ".\n..\n.leading dot\nnormal line\n. space after a dot\nÜnïcödé línè\n.\n"
    readers = [*READERS[:11], "lëser@exämple.net"]

    def render(sub: Subscriber) -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = "Daily Papers <digest@papers.example.org>"
        msg["To"] = sub.email
        msg["Subject"] = "Tägliche Papiere: «agents» and more, a subject long enough to fold"
        msg.set_content(body)
        msg.add_alternative("<p>.dot</p>\n.<b>x</b>\n", subtype="html")
        return msg

    _, day = real_day(store)
    with four_sessions(store, tmp_path) as (config, server, _proxy, record):
        config = dataclasses.replace(
            config, subscribers=[SubscriberConfig(a, ["video"]) for a in readers]
        )
        report = send_digests(config, store, day, today=day, render=render)
    assert sorted(report.sent) == sorted(readers), report.summary()

    def txt(name: bytes, **_: Any) -> bytes | None:
        return record if name == f"{SELECTOR}._domainkey.{DOMAIN}.".encode() else None

    assert len(server.messages) == len(readers)
    for received in server.messages:
        assert dkim.verify(received.data, dnsfunc=txt), received.recipients
        text = received.message().get_body(("plain",))
        assert text is not None
        assert text.get_content().replace("\r\n", "\n") == body  # (8bit: CRLF kept)
