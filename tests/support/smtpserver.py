"""A real aiosmtpd server on 127.0.0.1 with programmable replies, for the mail tests.

In a test:

    with SmtpServer() as server:
        server.rcpt_replies["bad@example.org"] = "550 5.1.1 no such user"
        server.data_plan = ["accept", "421 4.3.2 try later", "drop"]  # then accept all
        ... send to 127.0.0.1:server.port ...
        server.received_by("a@example.org")  # Counter of recipients

As a process (the benchmark runs it apart so it does not share the sender's GIL):

    python -m tests.support.smtpserver        prints "ready PORT"; reads "count" lines on stdin
                                      and answers the number of messages taken; EOF stops it.
    python -m tests.support.smtpserver [--pipelining] --log FILE [--port N]
                                      also appends each taken message's recipients to FILE
                                      (for tests that kill the server).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import ssl
import subprocess
import sys
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from digest.models import Subscriber
from tests.support.net import free_port


@dataclass
class Received:
    sender: str
    recipients: list[str]
    data: bytes

    def message(self) -> EmailMessage:
        msg = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        return msg


@dataclass
class Handler:
    """Keeps every accepted message; replies as programmed.

    `data_plan`: one action per message (after its final "."), in order, then "accept"
    for the rest: "accept", "drop" (close the connection without answering: the message
    is not taken), "take-drop" (take it, then close without answering), "accept-drop"
    (take it, answer 250, then close), "slow:SECONDS" (take it, answer 250 that late),
    "hang" (take it and never answer), or a reply like "421 ...".
    `data_for`: recipient -> the action for every message to it (before `data_plan`).
    `mail_plan`: one action per MAIL command, then "ok": "ok", "drop" (close before the
    message is sent) or a reply like "421 ...".
    `log`: a file to which each taken message's recipients are appended (one line each,
    flushed before the reply), so a test can count what a killed server had taken.
    """

    keep: bool = True
    messages: list[Received] = field(default_factory=list)
    count: int = 0
    taken: Counter[str] = field(default_factory=Counter)  # recipient -> messages taken
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    data_plan: list[str] = field(default_factory=list)
    mail_plan: list[str] = field(default_factory=list)
    data_for: dict[str, str] = field(default_factory=dict)
    log: Path | None = None
    sessions: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Offer PIPELINING (RFC 2920) in EHLO. aiosmtpd does not by itself, but it reads
    # commands line by line from a buffered stream, so pipelined commands work as sent.
    pipelining: bool = False

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: Any
    ) -> Any:
        session.host_name = hostname
        self.sessions += 1
        if self.pipelining:
            responses = [responses[0], "250-PIPELINING", *responses[1:]]
        return responses

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        action = self.mail_plan.pop(0) if self.mail_plan else "ok"
        if action == "drop":
            server.transport.close()  # type: ignore[union-attr]
            return "421 closing"  # never reaches the client
        if action != "ok":
            return action
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        reply = self.rcpt_replies.get(address.lower())
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        action = self.data_plan.pop(0) if self.data_plan else "accept"
        for rcpt in envelope.rcpt_tos:
            action = self.data_for.get(rcpt.lower(), action)
        if action == "drop":
            server.transport.close()  # type: ignore[union-attr]
            return "421 closing"  # never reaches the client: the transport is closed
        taking = ("accept", "accept-drop", "take-drop", "hang")
        if action not in taking and not action.startswith("slow:"):
            return action
        with self.lock:
            self.count += 1
            self.taken.update(envelope.rcpt_tos)
            if self.keep:
                data = envelope.original_content or b""
                self.messages.append(
                    Received(str(envelope.mail_from), list(envelope.rcpt_tos), data)
                )
            if self.log is not None:
                with self.log.open("a") as f:
                    f.write("".join(f"{r}\n" for r in envelope.rcpt_tos))
        if action == "take-drop":
            server.transport.close()  # type: ignore[union-attr]
            return "250 never sent"  # the transport is closed: the client gets no reply
        if action == "hang":
            await asyncio.sleep(3600)  # ended by the client hanging up or the server stopping
        if action.startswith("slow:"):
            await asyncio.sleep(float(action.partition(":")[2]))
        if action == "accept-drop":
            asyncio.get_running_loop().call_soon(server.transport.close)  # type: ignore[union-attr]
        return "250 2.0.0 Ok: queued"


class SmtpServer:
    """aiosmtpd's Controller on 127.0.0.1, a free port, started and stopped by `with`."""

    def __init__(
        self,
        *,
        keep: bool = True,
        tls: ssl.SSLContext | None = None,
        smtputf8: bool = True,
        pipelining: bool = False,
    ) -> None:
        self.handler = Handler(keep=keep, pipelining=pipelining)
        self.port = free_port()
        # With `tls`: STARTTLS offered and required before MAIL, as real relays do.
        extra: dict[str, Any] = {"tls_context": tls, "require_starttls": True} if tls else {}
        self.controller = Controller(
            self.handler, hostname="127.0.0.1", port=self.port, enable_SMTPUTF8=smtputf8, **extra
        )

    def __enter__(self) -> SmtpServer:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()

    @property
    def messages(self) -> list[Received]:
        return self.handler.messages

    @property
    def rcpt_replies(self) -> dict[str, str]:
        return self.handler.rcpt_replies

    @property
    def data_plan(self) -> list[str]:
        return self.handler.data_plan

    @data_plan.setter
    def data_plan(self, plan: list[str]) -> None:
        self.handler.data_plan[:] = plan

    @property
    def data_for(self) -> dict[str, str]:
        return self.handler.data_for

    @property
    def mail_plan(self) -> list[str]:
        return self.handler.mail_plan

    @mail_plan.setter
    def mail_plan(self, plan: list[str]) -> None:
        self.handler.mail_plan[:] = plan

    @property
    def sessions(self) -> int:
        return self.handler.sessions

    def received_by(self) -> Counter[str]:
        """Recipient address -> number of messages the server took for it."""
        with self.handler.lock:
            return Counter(self.handler.taken)


def simple_message(
    subscriber: Subscriber, day: date, sender: str = "digest@example.org"
) -> EmailMessage:
    """A stand-in digest (for delivery tests that do not exercise the renderer)."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = subscriber.email
    msg["Subject"] = f"Daily Papers {day.isoformat()}"
    msg.set_content(f"Papers for {', '.join(subscriber.topics) or 'everything'}.\n.dot line\n")
    msg.add_alternative(f"<p>Papers for {subscriber.email}</p>", subtype="html")
    return msg


def self_signed(folder: Path) -> tuple[Path, Path]:
    """Write a throwaway certificate for 127.0.0.1 and its key (openssl); return paths."""
    cert, key = folder / "smtp-cert.pem", folder / "smtp-key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def server_tls(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def main() -> None:
    # `--starttls CERT KEY`: offer and require STARTTLS with that certificate.
    args = sys.argv[1:]
    extra: dict[str, Any] = {}
    handler = Handler(keep=False)
    port = 0
    while args:
        if args[0] == "--starttls":
            tls = server_tls(Path(args[1]), Path(args[2]))
            extra = {"tls_context": tls, "require_starttls": True}
            args = args[3:]
        elif args[0] == "--log":
            handler.log = Path(args[1])
            args = args[2:]
        elif args[0] == "--pipelining":
            handler.pipelining = True
            args = args[1:]
        elif args[0] == "--port":
            port = int(args[1])
            args = args[2:]
        else:
            raise SystemExit(f"unknown argument {args[0]!r}")
    port = port or free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, **extra)
    controller.start()
    print(f"ready {port}", flush=True)
    try:
        for line in sys.stdin:
            if line.strip() == "count":
                print(handler.count, flush=True)
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
