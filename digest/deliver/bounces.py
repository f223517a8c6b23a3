"""Bounces and the unsubscribe mailbox: mail that comes back, read from IMAP (and relays'
webhooks), turned into bounce counts and unsubscribes.

Who a message is about:
- the VERP address it was sent to: bounces+<tag>@domain is each digest's envelope sender,
  so a late bounce report (DSN) comes back to the reader's own address; unsubscribe+<tag>
  is List-Unsubscribe's mailto. A tag is an HMAC of the reader's address
  (tokens.address_tag), so nobody can make one for another reader.
- else the addresses flufl.bounce (GNU Mailman's detector: DSNs and the home-made formats
  of many MTAs) finds in the report, when they are subscribers.

Whether it counts: flufl.bounce tells permanent failures from temporary ones (a delay
report changes nothing). A DSN whose Status is about the message rather than the address
(5.3-5.7: too big, spam, policy) is not held against the reader; 5.1.1 "no such user"
makes them bouncing at once (readers.bounce_kind).

Each message is handled in one store transaction, then marked \\Seen on the server: the
next poll reads only unseen mail, so a bounce or an unsubscribe is applied once.
"""

from __future__ import annotations

import contextlib
import email
import email.message
import imaplib
import json
import re
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import getaddresses
from enum import StrEnum
from typing import Any

from flufl.bounce import all_failures

from digest.addresses import address_key, normalize_address
from digest.config import BouncesConfig, Config
from digest.deliver.smtp import unsendable
from digest.errors import DigestError, SubscriberError
from digest.models import SubscriberStatus
from digest.store import Store
from digest.store.readers import (
    ReaderIndex,
    bounce_kind,
    known_subscribers,
    list_subscribers,
    reader_index,
    record_bounce,
)
from digest.store.signups import unsubscribe_row
from digest.tokens import BOUNCE_TAG, UNSUBSCRIBE_TAG

# Where an MTA writes the address a message was delivered to; To and Cc last (a bounce
# report's To is the envelope sender, which is what VERP counts on).
RECIPIENT_HEADERS = ("Delivered-To", "X-Original-To", "Envelope-To", "To", "Cc")
# A DSN Status about the message or the system, not about the reader's address.
_NOT_THE_ADDRESS = re.compile(r"^5\.[3-7]\.")


class MailboxError(DigestError):
    """The bounces mailbox cannot be read: `server` (host:port) and what went wrong."""

    def __init__(self, server: str, reason: str) -> None:
        self.server = server
        self.reason = reason
        super().__init__(f"IMAP mailbox {server}: {reason}")


class Kind(StrEnum):
    """What a message is, for one reader."""

    BOUNCE = "bounce"  # a permanent failure: counted against the reader
    TEMPORARY = "temporary"  # a delay report: nothing changes
    UNSUBSCRIBE = "unsubscribe"  # mail to the reader's unsubscribe address
    IGNORED = "ignored"  # not about a reader, or not a bounce (an auto-reply)


@dataclass(frozen=True)
class Verdict:
    """What one message means for one reader."""

    kind: Kind
    address: str | None
    hard: bool = False  # "no such user": bouncing at once
    why: str = ""


@dataclass
class PollReport:
    """What one read of the mailbox did."""

    read: int = 0
    bounces: list[str] = field(default_factory=list)  # addresses counted
    unsubscribed: list[str] = field(default_factory=list)
    temporary: int = 0
    ignored: int = 0
    not_polled: str | None = None

    def summary(self) -> str:
        """One line: messages read, bounces counted, unsubscribes, the rest."""
        if self.not_polled:
            return f"bounces: not polled: {self.not_polled}"
        return (
            f"bounces: read {self.read} new messages: {len(self.bounces)} bounces counted, "
            f"{len(self.unsubscribed)} unsubscribed, {self.temporary} temporary, "
            f"{self.ignored} not ours or not a bounce"
        )


# -- reading one message -------------------------------------------------------------------


def _tags(msg: email.message.Message) -> Iterator[tuple[str, str]]:
    """Yield (local part before "+", tag) of each plus address the message was sent to."""
    for name in RECIPIENT_HEADERS:
        for _, addr in getaddresses([str(v) for v in msg.get_all(name, [])]):
            local = addr.rpartition("@")[0]
            base, plus, tag = local.partition("+")
            if plus and tag:
                yield base.lower(), tag


def _statuses(msg: email.message.Message) -> list[str]:
    """The Status fields of the message's delivery-status parts (RFC 3464), e.g. "5.1.1"."""
    out: list[str] = []
    for part in msg.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        blocks = part.get_payload()
        for block in blocks if isinstance(blocks, list) else []:
            if isinstance(block, email.message.Message) and block.get("Status"):
                words = str(block.get("Status")).split()
                if words:
                    out.append(words[0])
    return out


def _decoded(addresses: Any) -> set[str]:
    out = set()
    for a in addresses:
        text = a.decode("utf-8", "replace") if isinstance(a, bytes) else str(a)
        out.add(text.strip())
    return out


def classify(readers: ReaderIndex, raw: bytes) -> list[Verdict]:
    """Return what the message `raw` says about `readers` (one Verdict each, or one
    "ignored" Verdict saying why it is about none)."""
    msg = email.message_from_bytes(raw)
    for base, tag in _tags(msg):
        if base == "unsubscribe":
            address = readers.by_tag(UNSUBSCRIBE_TAG, tag)
            if address is not None:
                return [Verdict(Kind.UNSUBSCRIBE, address, why="mail to its unsubscribe address")]
    verp = None
    for base, tag in _tags(msg):
        if base == "bounces":
            verp = readers.by_tag(BOUNCE_TAG, tag)
            if verp is not None:
                break
    try:
        temporary, permanent = (_decoded(s) for s in all_failures(msg))
    except Exception as e:  # a detector trips on a message of no format it knows
        # (flufl.bounce's Yale detector raises IndexError for a message without From).
        return [Verdict(Kind.IGNORED, verp, why=f"not a bounce report flufl.bounce reads: {e!r}")]
    statuses = _statuses(msg)
    hard = any(bounce_kind(None, s)[1] for s in statuses)
    policy = [s for s in statuses if _NOT_THE_ADDRESS.match(s)]
    if policy and len(policy) == len(statuses):
        why = f"refused for the message, not the address (Status {policy[0]})"
        return [Verdict(Kind.IGNORED, verp, why=why)]
    why = f"bounce report (Status {', '.join(statuses)})" if statuses else "bounce report"
    if verp is not None:
        if permanent:
            return [Verdict(Kind.BOUNCE, verp, hard=hard, why=why)]
        if temporary:
            return [Verdict(Kind.TEMPORARY, verp, why="a delay report")]
        return [Verdict(Kind.IGNORED, verp, why="no bounce found in it (an auto-reply?)")]
    known = readers.known
    found = [known[k] for k in sorted({address_key(a) for a in permanent}) if k in known]
    if found:
        return [Verdict(Kind.BOUNCE, a, hard=hard, why=why) for a in found]
    if any(address_key(a) in known for a in temporary):
        return [Verdict(Kind.TEMPORARY, None, why="a delay report")]
    return [Verdict(Kind.IGNORED, None, why="names no subscriber")]


def apply(store: Store, verdicts: list[Verdict], source: str) -> None:
    """Record each verdict: a bounce counted against its reader, an unsubscribe done."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    for v in verdicts:
        if v.address is None:
            continue
        if v.kind == Kind.BOUNCE:
            record_bounce(store, v.address, hard=v.hard, reply=v.why, source=source)
        elif v.kind == Kind.UNSUBSCRIBE:
            unsubscribe_row(store, v.address, now)


def _tally(report: PollReport, verdicts: list[Verdict]) -> None:
    for v in verdicts:
        if v.kind == Kind.BOUNCE and v.address:
            report.bounces.append(v.address)
        elif v.kind == Kind.UNSUBSCRIBE and v.address:
            report.unsubscribed.append(v.address)
        elif v.kind == Kind.TEMPORARY:
            report.temporary += 1
        else:
            report.ignored += 1


# -- the IMAP mailbox ------------------------------------------------------------------------


@contextlib.contextmanager
def _session(b: BouncesConfig) -> Iterator[imaplib.IMAP4]:
    where = f"{b.imap_host}:{b.imap_port}"
    try:
        context = ssl.create_default_context(cafile=b.ca_file or None)
        conn: imaplib.IMAP4
        if b.imap_security == "tls":
            conn = imaplib.IMAP4_SSL(
                b.imap_host, b.imap_port, ssl_context=context, timeout=b.timeout
            )
        else:
            conn = imaplib.IMAP4(b.imap_host, b.imap_port, timeout=b.timeout)
            if b.imap_security == "starttls":
                conn.starttls(ssl_context=context)
    except ssl.SSLError as e:
        raise MailboxError(where, f"TLS failed: {e}") from None
    except (OSError, imaplib.IMAP4.error) as e:
        raise MailboxError(where, f"cannot connect: {e}") from None
    try:
        try:
            conn.login(b.imap_user, b.password)
        except imaplib.IMAP4.error as e:
            raise MailboxError(where, f"login as {b.imap_user!r} refused: {e}") from None
        yield conn
    finally:
        with contextlib.suppress(OSError, imaplib.IMAP4.error):
            conn.logout()


def _ok(where: str, what: str, answer: tuple[str, list[Any]]) -> list[Any]:
    typ, data = answer
    if typ != "OK":
        detail = b" ".join(d for d in data if isinstance(d, bytes)).decode("utf-8", "replace")
        raise MailboxError(where, f"{what}: {typ} {detail}".strip())
    return data


def poll_mailbox(config: Config, store: Store, *, limit: int = 1000) -> PollReport:
    """Read the unseen mail of the bounces mailbox (at most `limit` messages a poll),
    record what each says, mark it \\Seen; return the PollReport.

    Raises MailboxError naming the server when it cannot be reached or read.
    """
    b = config.bounces
    report = PollReport()
    if not b.imap_host:
        report.not_polled = "no bounces mailbox is configured (set bounces.imap_host)"
        return report
    where = f"{b.imap_host}:{b.imap_port}"
    readers = reader_index(config, store)
    with _session(b) as conn:
        try:
            _ok(where, f"folder {b.folder!r}", conn.select(_quoted(b.folder)))
            [found] = _ok(where, "search", conn.uid("SEARCH", "UNSEEN"))
            for uid in found.split()[:limit]:
                data = _ok(where, "fetch", conn.uid("FETCH", uid, "(BODY.PEEK[])"))
                raw = next((d[1] for d in data if isinstance(d, tuple)), None)
                if raw is None:
                    continue
                verdicts = classify(readers, raw)
                apply(store, verdicts, "mailbox")
                # Seen only once recorded: a crash in between reads it again next time
                # (an unsubscribe is the same twice; a bounce counts once per day).
                _ok(where, "flag", conn.uid("STORE", uid, "+FLAGS", "(\\Seen)"))
                report.read += 1
                _tally(report, verdicts)
        except (OSError, imaplib.IMAP4.error) as e:
            raise MailboxError(where, f"connection lost: {e}") from None
    return report


def _quoted(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


# -- the webhook -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    """One bounce a relay reported: the address, permanent or not, the status if given."""

    email: str
    permanent: bool
    status: str = ""


def parse_webhook(body: Any) -> list[Report]:
    """Return the bounces in a webhook's JSON `body`: our own {"email": ..., "type":
    "permanent" | "temporary", "status": "5.1.1"} (or a list of them), Postmark's bounce
    ({"RecordType": "Bounce", "Type": "HardBounce", "Email": ...}) and Amazon SES's, direct
    or in an SNS envelope ({"notificationType": "Bounce", "bounce": {...}}).

    Raises SubscriberError naming the field when an address is missing or not one line.
    """
    if isinstance(body, list):
        return [r for item in body for r in parse_webhook(item)]
    if not isinstance(body, dict):
        raise SubscriberError("the body must be a JSON object (or a list of them)")
    if body.get("Type") == "Notification" and isinstance(body.get("Message"), str):
        try:  # SNS wraps the SES notification as a JSON string
            return parse_webhook(json.loads(body["Message"]))
        except json.JSONDecodeError:
            raise SubscriberError("SNS Message is not JSON") from None
    if body.get("notificationType") == "Bounce" or body.get("eventType") == "Bounce":
        bounce = body.get("bounce") or {}
        permanent = bounce.get("bounceType") == "Permanent"
        return [
            Report(_address(r.get("emailAddress"), "emailAddress"), permanent, r.get("status", ""))
            for r in bounce.get("bouncedRecipients") or []
            if isinstance(r, dict)
        ]
    if body.get("RecordType") == "Bounce":
        permanent = body.get("Type") in ("HardBounce", "BadEmailAddress")
        return [Report(_address(body.get("Email"), "Email"), permanent)]
    if "email" in body:
        kind = body.get("type", "permanent")
        if kind not in ("permanent", "temporary"):
            raise SubscriberError(f"type must be 'permanent' or 'temporary', not {kind!r}")
        status = body.get("status", "")
        if not isinstance(status, str) or unsendable(status):
            raise SubscriberError("status must be one line of text, such as '5.1.1'")
        return [Report(_address(body.get("email"), "email"), kind == "permanent", status)]
    raise SubscriberError('no bounce in the body (expected {"email": ..., "type": ...})')


def _address(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise SubscriberError(f"{name}: missing or not a string")
    bad = unsendable(value)
    if bad:
        raise SubscriberError(f"{name}: {bad}")
    return normalize_address(value)


def record_webhook(config: Config, store: Store, body: Any) -> tuple[int, int]:
    """Count the permanent bounces of a webhook body against the subscribers they name;
    return (counted, left alone: temporary, policy or not a subscriber).

    Raises SubscriberError when the body is not a bounce report we read.
    """
    reports = parse_webhook(body)
    known = known_subscribers(config, store)
    verdicts = []
    for r in reports:
        address = known.get(address_key(r.email))
        # A status about the message (5.7.1 spam, policy) is not the address's fault.
        counts, hard = bounce_kind(None, r.status) if r.status else (True, False)
        if address is None or not r.permanent or not counts:
            continue
        verdicts.append(Verdict(Kind.BOUNCE, address, hard=hard, why=f"webhook {r.status}".strip()))
    apply(store, verdicts, "webhook")
    return len(verdicts), len(reports) - len(verdicts)


def bouncing(config: Config, store: Store) -> list[str]:
    """Return the addresses of the readers not mailed because their mail bounces."""
    rows = list_subscribers(config, store)
    return [r.email for r in rows if r.status == SubscriberStatus.BOUNCING]
