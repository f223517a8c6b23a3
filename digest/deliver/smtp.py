"""SMTP delivery: one connection for many messages, reconnect and retry on temporary trouble.

`Mailer.deliver(message, address)` returns only when the server has accepted the message
(250 after DATA) and raises otherwise, telling temporary failures (4xx, a dropped
connection; retried here with backoff) from permanent ones (5xx; not retried). The caller
records the outcome in the ledger right after each call.

What SMTP cannot promise: once the final "." of a message has gone out, the server may
have taken it even if its reply never reaches us (a slow server, a dropped connection).
Sending it again could make two copies, so such a message is never retried here: it
raises `Uncertain`, and the caller records it for the operator to decide. Everything
before the final "." (a drop, a timeout, a 4xx) is safe to retry, and is.

When the server offers PIPELINING (RFC 2920), MAIL, RCPT and DATA go in one write and
their replies are read one by one, each handled as before (a refused RCPT is that reader's
failure); and the commands of the next message (`send(..., follow=next)`) go in the same
write as this one's final ".", which RFC 2920 3.1 allows (message content first in a
group, DATA last). A message then costs one round trip, not four. Nothing of the next
message is delivered before its own final ".", so the claim rules below are unchanged.

Timeouts follow RFC 5321 4.5.3.2: `smtp.timeout` for the connection and each command,
and `DATA_TIMEOUT` (10 minutes) for the reply to the final ".", which a busy server may
take long to give while it scans the message.
"""

from __future__ import annotations

import contextlib
import io
import math
import re
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.generator import BytesGenerator
from email.message import EmailMessage
from email.policy import EmailPolicy
from email.utils import make_msgid
from types import TracebackType
from typing import Any

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from digest.config import SmtpConfig
from digest.deliver.dkim import dkim_signer
from digest.errors import (
    DeliveryError,
    PermanentFailure,
    TemporaryFailure,
    Uncertain,
)
from digest.render.mailheaders import WireMessage


class NotClaimed(Exception):
    """`before_dot` said no (another send has this message): nothing was sent."""


class _ConnectFailure(TemporaryFailure):
    """Could not open a session at all: after the retries, the whole send stops."""


@dataclass(frozen=True)
class Accepted:
    """The server took the message."""

    reply: str  # e.g. "250 2.0.0 Ok: queued as 4F2A1"
    attempts: int
    message_id: str


@dataclass(frozen=True)
class Outgoing:
    """A message ready for the wire."""

    address: str
    payload: bytes
    utf8: bool  # needs SMTPUTF8 (a non-ASCII address)
    message_id: str
    envelope_from: str = ""  # MAIL FROM (a VERP bounces+ address); "": smtp.sender


class RateLimiter:
    """Spaces messages evenly so that at most `per_minute` go out in any minute.

    `per_minute` <= 0 means no limit. Thread-safe: the sessions of one send share one
    limiter, so the rate holds for all of them together.
    """

    def __init__(
        self,
        per_minute: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.interval = 60.0 / per_minute if per_minute > 0 else 0.0
        self.clock = clock
        self.sleep = sleep
        self._next: float | None = None
        self._lock = threading.Lock()

    def wait(self) -> None:
        """Return when the next message may go (sleeping if it is too early)."""
        if not self.interval:
            return
        with self._lock:  # take the next slot; sleep for it outside the lock
            now = self.clock()
            slot = now if self._next is None or now >= self._next else self._next
            self._next = slot + self.interval
        if slot > now:
            self.sleep(slot - now)


def rate_note(smtp: SmtpConfig, readers: int) -> str:
    """One line for `digest check`: what smtp.rate_per_minute means for a send to
    `readers` readers (the least time it takes), so a limit never caps a send unseen."""
    sessions = f"{smtp.connections} SMTP session{'s' if smtp.connections != 1 else ''}"
    who = f"{readers} reader{'s' if readers != 1 else ''}"
    if smtp.rate_per_minute <= 0:
        return f"no limit, {sessions}: a send to {who} goes as fast as the relay takes it"
    minutes = readers / smtp.rate_per_minute
    if minutes <= 1:
        took = "fits in one minute"
    elif minutes < 90:
        took = f"takes at least {math.ceil(minutes)} minutes"
    else:
        took = f"takes at least {minutes / 60:.1f} hours"
    return (
        f"at most {smtp.rate_per_minute} messages a minute over {sessions}: a send to {who} {took}"
    )


# RFC 5321 4.5.3.2.6: wait up to 10 minutes for the reply to the final ".".
DATA_TIMEOUT = 600.0


def _reply(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{code} {' '.join(text.split())}".strip()


def unsendable(address: str) -> str:
    """Return why `address` cannot go on the SMTP wire ("" if it can): a control
    character, such as the line break of a forged sign-up's "csrf\0\r\nbcc: x@evil.org",
    which smtplib would quietly turn into the envelope address <x@evil.org>."""
    if address.isprintable():  # no control character (the usual case, checked in C)
        return ""
    bad = sorted({c for c in address if ord(c) < 32 or ord(c) == 127})
    if not bad:
        return ""
    return f"the address contains control characters ({', '.join(repr(c) for c in bad)})"


# A dot-atom addr-spec (RFC 5322 atext, a plain domain): smtplib.quoteaddr gives it back
# in angle brackets as it is, after parsing it (email.utils.parseaddr: a third of the
# envelope's CPU). tests/test_deliver_envelope.py holds the two to the same answers.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM_ADDRESS = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")


def quoteaddr(address: str) -> str:
    """Return `address` as MAIL FROM / RCPT TO take it: smtplib.quoteaddr's answer, made
    without parsing for a plain dot-atom address."""
    if _DOT_ATOM_ADDRESS.fullmatch(address):
        return f"<{address}>"
    return smtplib.quoteaddr(address)


_LINE_END = re.compile(r"\r\n|\r|\n")  # email.generator's NLCRE


# A header value that folding leaves as it is: printable ASCII words, single spaces, no
# encoded word. (Checked against the stock generator in tests/test_deliver_smtp.py.)
_PLAIN_VALUE = re.compile(r"[!-~]+(?: [!-~]+)*")


class _Generator(BytesGenerator):
    """BytesGenerator, the same bytes for less CPU (flattening was 19% of the sender's):

    - each body is written in one piece; the stock one writes it line by line, two
      writes a line (a 10 KB digest: about 800 calls);
    - a header that fits on one line in plain ASCII is written as "Name: value"; the
      stock one parses and re-folds every header (3 in 4 of a digest's fit).
    """

    def _write_lines(self, lines: str) -> None:
        if not lines:
            return
        if "\r" in lines:
            self.write(_LINE_END.sub(self._NL, lines))  # type: ignore[attr-defined]
        else:  # the usual case, and several times faster than the regex
            self.write(lines.replace("\n", self._NL))  # type: ignore[attr-defined]

    def _write_headers(self, msg: Any) -> None:
        policy = self.policy
        most = policy.max_line_length if isinstance(policy, EmailPolicy) else None
        for name, value in msg.raw_items():
            text = str(value)
            if (
                most
                and len(name) + 2 + len(text) <= most
                and "=?" not in text
                and _PLAIN_VALUE.fullmatch(text)
            ):
                self._fp.write(f"{name}: {text}{self._NL}".encode("ascii"))  # type: ignore[attr-defined]
            else:
                self._fp.write(policy.fold_binary(name, value))  # type: ignore[attr-defined,union-attr]
        self.write(self._NL)  # type: ignore[attr-defined]


def flatten(message: EmailMessage, utf8: bool = False) -> bytes:
    """Return the message as SMTP DATA bytes (CRLF line ends; dots are quoted on sending)."""
    buf = io.BytesIO()
    policy = message.policy.clone(linesep="\r\n")
    if utf8 and isinstance(policy, EmailPolicy):  # non-ASCII addresses go as SMTPUTF8
        policy = policy.clone(utf8=True)
    _Generator(buf, policy=policy).flatten(message, linesep="\r\n")
    return buf.getvalue()


class Mailer:
    """One SMTP session, opened on first use, reused for every message, reopened when lost.

    Use as a context manager so the session ends with QUIT.
    """

    def __init__(
        self,
        smtp: SmtpConfig,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        data_timeout: float = DATA_TIMEOUT,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.smtp = smtp
        self.data_timeout = max(data_timeout, smtp.timeout)
        self.sleep = sleep
        self.backoff = backoff
        self.max_backoff = max_backoff
        # Shared between the sessions of one send when given.
        self.limiter = limiter or RateLimiter(smtp.rate_per_minute, clock=clock, sleep=sleep)
        self.password = smtp.password if smtp.user else ""  # load_config resolved it
        self.connections = 0  # sessions opened, for reports and tests
        self._retrying = Retrying(
            retry=retry_if_exception_type(TemporaryFailure),
            stop=stop_after_attempt(max(smtp.retries, 0) + 1),
            wait=wait_exponential(multiplier=backoff, max=max_backoff),
            sleep=sleep,
            reraise=True,
        )
        self._conn: smtplib.SMTP | None = None
        # The message whose MAIL, RCPT and DATA went out with the previous final "."
        # (pipelining), replies not read yet.
        self._pending: Outgoing | None = None
        domain = smtp.sender.rpartition("@")[2] or "localhost"
        self.domain = domain
        self.dkim = dkim_signer(smtp)  # None: DKIM is off

    @property
    def where(self) -> str:
        return f"SMTP server {self.smtp.host}:{self.smtp.port}"

    def __enter__(self) -> Mailer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """End the session politely (QUIT), ignoring a server that already left."""
        conn, self._conn = self._conn, None
        pending, self._pending = self._pending, None
        if conn is None:
            return
        if pending is not None:  # the server may be waiting for a body: hang up instead
            conn.close()
            return
        try:
            conn.quit()
        except (smtplib.SMTPException, OSError):
            conn.close()

    def _drop(self) -> None:
        self._pending = None
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _connect(self) -> smtplib.SMTP:
        s = self.smtp
        try:
            context = ssl.create_default_context(cafile=s.ca_file or None)
        except (OSError, ssl.SSLError) as e:
            raise DeliveryError(
                self.where, f"smtp.ca_file {s.ca_file!r}: cannot load: {e}"
            ) from None
        conn: smtplib.SMTP | None = None
        try:
            if s.security == "tls":
                conn = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout, context=context)
            else:
                conn = smtplib.SMTP(s.host, s.port, timeout=s.timeout)
            # A message over TLS goes out as several records, i.e. several writes, and
            # then waits for the reply: with Nagle on, the last write waits for the
            # server's delayed ACK (40 ms per message here, 26 messages/s instead of 400).
            if conn.sock is not None:
                conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.ehlo_or_helo_if_needed()
            if s.security == "starttls":
                conn.starttls(context=context)
                conn.ehlo()
            if s.user:
                conn.login(s.user, self.password)
        except smtplib.SMTPAuthenticationError as e:
            _close_quietly(conn)
            raise DeliveryError(
                self.where, f"login as {s.user!r} refused: {_reply(e.smtp_code, e.smtp_error)}"
            ) from None
        except smtplib.SMTPNotSupportedError as e:
            _close_quietly(conn)
            raise DeliveryError(self.where, f"{e} (smtp.security = {s.security!r})") from None
        except ssl.SSLError as e:
            _close_quietly(conn)
            raise DeliveryError(self.where, f"TLS failed: {e}") from None
        except smtplib.SMTPResponseException as e:
            _close_quietly(conn)
            raise _ConnectFailure(_reply(e.smtp_code, e.smtp_error)) from None
        except OSError as e:  # refused, unreachable, timeout, dropped during the greeting
            _close_quietly(conn)
            raise _ConnectFailure(f"cannot connect: {e}") from None
        self.connections += 1
        return conn

    def prepare(self, message: EmailMessage, address: str, envelope_from: str = "") -> Outgoing:
        """Return the message flattened for SMTP (DKIM-signed when configured), to
        `address`, from `envelope_from` (default smtp.sender); adds a Message-ID if it
        has none. Pure CPU work: callers may do it ahead, in another thread."""
        utf8 = not (self.smtp.sender.isascii() and address.isascii())
        # The renderer's messages come with their 7-bit bytes; any other, and any going
        # as SMTPUTF8 (its headers then written in UTF-8), is flattened here.
        wire, message_id = None, ""
        if isinstance(message, WireMessage) and not utf8:
            wire, message_id = message.wire(), message.message_id
        if wire is not None and message_id:
            payload = wire
        else:
            if not message["Message-ID"]:
                message["Message-ID"] = make_msgid(domain=self.domain)
            payload = flatten(message, utf8)
            message_id = str(message["Message-ID"])
        if self.dkim is not None:
            payload = self.dkim(payload)
        return Outgoing(
            address, payload, utf8, message_id, envelope_from=envelope_from or self.smtp.sender
        )

    def deliver(self, message: EmailMessage, address: str) -> Accepted:
        """Return Accepted once the server took `message` for `address` (see `send`)."""
        return self.send(self.prepare(message, address))

    def send(
        self,
        out: Outgoing,
        before_dot: Callable[[], bool] | None = None,
        follow: Outgoing | None = None,
    ) -> Accepted:
        """Return Accepted once the server took the prepared message.

        `before_dot`, if given, is called once, just before the first final "." goes out
        (the caller marks the message in flight); if it returns False nothing is sent and
        NotClaimed is raised. `follow`: the message the caller sends next on this session;
        with PIPELINING its MAIL, RCPT and DATA go out with this one's final ".", and the
        next `send` must be of it (any other message first ends the session).

        Raises PermanentFailure (5xx), TemporaryFailure (4xx or dropped connection before
        the final ".", still so after the configured retries), Uncertain (no reply to the
        final "."; not retried) or DeliveryError when no session can be opened at all
        (the whole send should stop).
        """
        bad = unsendable(out.address)
        if bad:  # refused here: smtplib would send it to whatever address it can parse out
            raise PermanentFailure(f"{out.address!r}: {bad}", self.where)
        attempts = 0
        claimed = before_dot is None

        def claim() -> bool:
            nonlocal claimed
            if not claimed:
                claimed = before_dot() if before_dot else True
            return claimed

        def attempt() -> str:
            nonlocal attempts
            attempts += 1
            self.limiter.wait()
            if self._pending is not None and self._pending is not out:
                self._drop()  # the session is mid-way into another message: start afresh
            if self._conn is None:
                self._conn = self._connect()
            return self._transaction(self._conn, out, claim, follow)

        try:
            reply = self._retrying(attempt)
        except _ConnectFailure as e:
            raise DeliveryError(self.where, f"{e.reply} (after {attempts} attempts)") from None
        except (TemporaryFailure, PermanentFailure, Uncertain) as e:
            e.attempts = attempts
            raise
        except BaseException:
            self._drop()  # the session is in an unknown state: never reuse it
            raise
        return Accepted(reply=reply, attempts=attempts, message_id=out.message_id)

    def _envelope(self, conn: smtplib.SMTP, out: Outgoing) -> bytes:
        """MAIL, RCPT and DATA of `out` as one write (for a pipelining server)."""
        options = ""
        if out.utf8:
            if not conn.has_extn("smtputf8"):
                raise smtplib.SMTPNotSupportedError("SMTPUTF8 not supported by server")
            options = " SMTPUTF8 BODY=8BITMIME"
        sender = out.envelope_from or self.smtp.sender
        if any(c in a for a in (sender, out.address) for c in "\r\n"):
            raise ValueError("a line break in an address")  # as smtplib's putcmd refuses
        text = (
            f"MAIL FROM:{quoteaddr(sender)}{options}\r\n"
            f"RCPT TO:{quoteaddr(out.address)}\r\nDATA\r\n"
        )
        return text.encode("utf-8" if out.utf8 else "ascii")

    def _envelope_replies(self, conn: smtplib.SMTP) -> tuple[int, bytes, bool]:
        """Read the replies to a pipelined MAIL, RCPT, DATA, in order; return the one that
        decides (the first refusal, else DATA's) and whether it was MAIL's. A 354 after a
        refusal (a server that should have refused DATA) leaves the session in the body:
        it is hung up."""
        replies = [conn.getreply() for _ in range(3)]
        (mail, mail_text), (rcpt, rcpt_text), (data, data_text) = replies
        if mail != 250:
            decided = (mail, mail_text, True)
        elif rcpt not in (250, 251):
            decided = (rcpt, rcpt_text, False)
        else:
            return data, data_text, False
        if data == 354:
            self._drop()
        return decided

    def _transaction(
        self,
        conn: smtplib.SMTP,
        out: Outgoing,
        claim: Callable[[], bool],
        follow: Outgoing | None,
    ) -> str:
        """MAIL, RCPT, DATA; returns the final reply or raises a classified failure."""
        address, utf8 = out.address, out.utf8
        options = ["SMTPUTF8", "BODY=8BITMIME"] if utf8 else []
        pipelining = conn.has_extn("pipelining")
        text: bytes | str
        at_mail = False  # the deciding reply was MAIL FROM's: about our sender, not the reader
        try:
            if self._pending is out:  # sent with the previous message's final "."
                self._pending = None
                code, text, at_mail = self._envelope_replies(conn)
            elif pipelining:
                conn.send(self._envelope(conn, out))
                code, text, at_mail = self._envelope_replies(conn)
            else:
                code, text = conn.mail(out.envelope_from or self.smtp.sender, options)
                at_mail = code != 250
                if code == 250:
                    code, text = conn.rcpt(address)
                if code in (250, 251):
                    code, text = conn.docmd("DATA")
            if code == 354:
                code, text = self._data(conn, out.payload, claim, follow if pipelining else None)
            if code == 250:
                return _reply(code, text)
        except smtplib.SMTPNotSupportedError as e:
            self._reset()
            raise PermanentFailure(
                f"{self.where} cannot take this address: {e}", self.where
            ) from None
        except smtplib.SMTPResponseException as e:  # refused before the body went
            code, text = e.smtp_code, e.smtp_error
        except ValueError as e:  # smtplib refuses a line break in an address
            self._reset()
            raise PermanentFailure(f"cannot be sent to {address!r}: {e}", self.where) from None
        except OSError as e:  # SMTPServerDisconnected is one; so are resets and timeouts
            self._drop()
            raise TemporaryFailure(
                f"connection lost: {e or type(e).__name__}", self.where
            ) from None
        reply = _reply(code, text)
        if code == 421:  # the server is closing this session
            self._drop()
            raise TemporaryFailure(reply, self.where)
        self._reset()
        if 400 <= code < 500:
            raise TemporaryFailure(reply, self.where)
        if 500 <= code < 600:
            raise PermanentFailure(reply, self.where, sender_refused=at_mail)
        raise TemporaryFailure(f"unexpected reply: {reply}", self.where)

    def _data(
        self,
        conn: smtplib.SMTP,
        payload: bytes,
        claim: Callable[[], bool],
        follow: Outgoing | None = None,
    ) -> tuple[int, bytes]:
        """After 354: the message and its final "." (and `follow`'s MAIL, RCPT, DATA in
        the same write, pipelining); return the server's reply to the ".".

        Raises OSError while the final "." has not gone out (safe to retry), Uncertain
        when it has and no reply came (unknown whether the message was taken).
        """
        # RFC 5321 4.5.2 dot stuffing: a "." that starts a line is doubled (what
        # `(?m)^\.` finds, by plain replaces: several times faster on a 10 KB digest).
        body = payload.replace(b"\n.", b"\n..")
        if body.startswith(b"."):
            body = b"." + body
        if not body.endswith(b"\r\n"):
            body += b"\r\n"
        after = b""
        if follow is not None and not unsendable(follow.address):
            try:
                after = self._envelope(conn, follow)
            except (smtplib.SMTPNotSupportedError, ValueError, UnicodeError):
                after = b""  # its own send finds the problem and reports it
        try:
            claimed = claim()
        except BaseException:
            self._drop()  # mid-DATA the only way out without a "." is to hang up
            raise
        if not claimed:
            self._drop()
            raise NotClaimed()
        conn.send(body + b".\r\n" + after)
        if after:
            self._pending = follow
        # The end of data is out: from here on, no reply means "maybe taken".
        try:
            if conn.sock is not None:
                conn.sock.settimeout(self.data_timeout)
            code, text = conn.getreply()
            if conn.sock is not None:
                conn.sock.settimeout(self.smtp.timeout)
        except Exception as e:  # timeout, reset, closed, garbled reply
            self._drop()
            why = f"no reply to the end of the message: {e or type(e).__name__}"
            raise Uncertain(why, self.where) from None
        return code, text

    def _reset(self) -> None:
        # After a refused transaction, RSET so the next one starts clean. Not when the
        # next message's commands are out already: the refusal was of a final ".", which
        # ends the transaction anyway, and an RSET would read their replies as its own.
        if self._conn is None or self._pending is not None:
            return
        try:
            self._conn.rset()
        except (smtplib.SMTPException, OSError):
            self._drop()


def _close_quietly(conn: smtplib.SMTP | None) -> None:
    if conn is not None:
        with contextlib.suppress(OSError):
            conn.close()
