"""Subscribers (config file + database) and the delivery ledger.

Who gets the email: every `[[subscribers]]` entry of the config, plus every database
subscriber whose status is "active" (`digest subscribers add`). A database record with
status "unsubscribed" also silences a config entry with the same address: the person
asked to stop, and a config file must not override that.

A reader is "bouncing" when the `bounces` table holds permanent refusals of their mail on
smtp.max_bounces different days since they were last reactivated, or one "no such user"
(5.1.1): they stay subscribed but are not mailed (`active_subscribers` leaves them out)
until `digest subscribers activate` or a confirmed new sign-up clears the rows. It is
worked out when read, so a changed max_bounces applies at once.

The token key is store.meta.secret_key; the tokens themselves are digest.tokens.

The ledger (table `deliveries`) has one row per (address, digest day): queued, sending,
sent, failed, skipped or uncertain, with the server's last reply, the number of attempts
and times. A row is claimed ("sending", committed) just before the message's final "."
goes out, by an UPDATE that re-checks its state, so two sends can never both take it; it
turns "sent" once the server accepted the message, committed at once. A message whose
final "." went out without a reply, or whose "sending" row a crashed run left behind, is
"uncertain": the reader has at most one copy, and only the operator resends it.

Several sessions of one send share one Ledger: its reads and writes are serialised by a
lock (one SQLite connection, one transaction at a time), and the claim's re-checking
UPDATE gives each row to exactly one session.

During a send (`Ledger.light`), the claim and the outcome are committed with
`synchronous = NORMAL` (WAL): the commit is
in the WAL file, not yet fsynced. A killed process (kill -9, a crash, OOM) loses nothing:
the operating system has the write. What only a power cut or kernel crash can lose is
the rows committed since the last synced commit, and one commit in `DURABLE_EVERY`
seconds is synced (FULL), so that is at most that long of the send: those readers' rows
go back to "queued" (or "sending", then "uncertain"), and the next run may mail them a
second copy. That trade buys back the fsync per message, most of the ledger's cost.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from email.utils import parseaddr
from typing import TYPE_CHECKING, Any

from digest.addresses import address_key, normalize_address
from digest.config import FREQUENCIES, Config
from digest.errors import ConfigError, SubscriberError
from digest.models import DeliveryState, Subscriber, SubscriberStatus
from digest.store.meta import secret_key
from digest.tokens import (
    BOUNCE_TAG,
    PREFERENCES,
    UNSUBSCRIBE,
    UNSUBSCRIBE_TAG,
    address_tag,
    make_token,
)

if TYPE_CHECKING:
    from digest.store import Store

# What a send of the day takes up by itself.
RETRIED = (DeliveryState.QUEUED, DeliveryState.FAILED, DeliveryState.SKIPPED)
DURABLE_EVERY = 1.0  # seconds: at most this much of a send's ledger rests on the OS cache
CRASHED = "the send was stopped (crash or kill) while this message was in flight"


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- subscribers -------------------------------------------------------------------------


@dataclass(frozen=True)
class SubscriberRow:
    """One subscriber as `digest subscribers list` shows it."""

    email: str
    topics: tuple[str, ...]
    source: str  # "config" or "database"
    status: SubscriberStatus
    keywords: str = ""  # a personal topic typed on the subscribe form
    frequency: str = "daily"  # "daily" or "weekly"


def check_topics(config: Config, topics: Iterable[str]) -> tuple[str, ...]:
    known = [t.name for t in config.topics]
    out: list[str] = []
    for name in topics:
        name = name.strip()
        if not name:
            continue
        if name not in known:
            raise SubscriberError(
                f"no topic named {name!r} in {config.path or 'the config'} "
                f"(topics: {', '.join(known) or 'none configured'})"
            )
        if name not in out:
            out.append(name)
    return tuple(out)


def check_frequency(frequency: str) -> str:
    """Return the frequency, checked. Raises SubscriberError naming it when unknown."""
    value = frequency.strip().lower()
    if value not in FREQUENCIES:
        raise SubscriberError(f"frequency {frequency!r}: must be one of {', '.join(FREQUENCIES)}")
    return value


def _config_addresses(config: Config) -> dict[str, tuple[str, tuple[str, ...], str]]:
    """address_key -> (normal form, topics, frequency), for the config's subscribers."""
    out: dict[str, tuple[str, tuple[str, ...], str]] = {}
    for i, sub in enumerate(config.subscribers):
        try:
            address = normalize_address(sub.email)
        except SubscriberError as e:
            raise ConfigError(str(e), path=config.path, key=f"subscribers[{i}].email") from None
        out.setdefault(address_key(address), (address, tuple(sub.topics), sub.frequency))
    return out


def add_subscriber(
    config: Config,
    store: Store,
    address: str,
    topics: Sequence[str] = (),
    frequency: str = "daily",
) -> SubscriberRow:
    """Add (or re-activate, with new topics) a database subscriber; return its row.

    Re-adding a bouncing reader clears their bounces, as `activate_subscriber` does: the
    operator adding an address is an explicit reactivation, and it must be mailed as the
    "subscribed" said (it is bouncing again after one more permanent refusal).

    Raises SubscriberError naming the address, the topic or the frequency that is not
    acceptable.
    """
    row = _checked(config, address, topics, frequency)
    with store.transaction() as conn:
        _insert(conn, row, _stamp())
    return row


def _checked(config: Config, address: str, topics: Sequence[str], frequency: str) -> SubscriberRow:
    address = normalize_address(address)
    chosen = check_topics(config, topics)
    how = check_frequency(frequency)
    if address_key(address) in _config_addresses(config):
        raise SubscriberError(
            f"{address} is already a subscriber in {config.path or 'the config'}; "
            "change its topics there"
        )
    return SubscriberRow(address, chosen, "database", SubscriberStatus.ACTIVE, frequency=how)


def _insert(conn: Any, row: SubscriberRow, stamp: str) -> None:
    """Write `row` as active and clear its bounces (see add_subscriber)."""
    conn.execute(
        "INSERT INTO subscribers (email, topics, status, frequency, created, updated) "
        "VALUES (?, ?, 'active', ?, ?, ?) ON CONFLICT (email) DO UPDATE SET "
        "topics = excluded.topics, status = 'active', frequency = excluded.frequency, "
        "updated = excluded.updated",
        (row.email, json.dumps(list(row.topics)), row.frequency, stamp, stamp),
    )
    clear_bounces(conn, row.email, stamp)


@dataclass(frozen=True)
class ImportReport:
    """What `import_subscribers` did: the rows added, each refused row with why, how many
    of the added were bouncing (their bounces cleared, as `add_subscriber` does), and the
    rows of readers who had unsubscribed, left unsubscribed (line, address, since when)."""

    added: list[SubscriberRow]
    refused: list[tuple[int, str, str]]  # (line number, the address as written, why)
    reactivated: int = 0
    kept_unsubscribed: list[tuple[int, str, str]] = field(default_factory=list)

    def summary(self) -> str:
        again = f", {self.reactivated} bouncing made active" if self.reactivated else ""
        kept = len(self.kept_unsubscribed)
        left = f", {kept} kept unsubscribed" if kept else ""
        return f"imported {len(self.added)}, refused {len(self.refused)}{again}{left}"


def import_subscribers(
    config: Config, store: Store, rows: Iterable[tuple[int, dict[str, str]]]
) -> ImportReport:
    """Add many database subscribers in one transaction, each checked as `add_subscriber`
    checks one; return what was added and, per refused row, its line and why.

    `rows`: (line number, {"email", "topics" (comma- or space-separated), "frequency"}).
    A row whose address comes twice is refused the second time. Nothing is written when
    every row is refused; the good rows go in even when some are refused.

    A reader who unsubscribed stays unsubscribed: a list (an old export, a CRM's) is no
    consent to mail them again. `add_subscriber`, one address typed on purpose, is the
    way back.
    """
    added: list[SubscriberRow] = []
    refused: list[tuple[int, str, str]] = []
    kept: list[tuple[int, str, str]] = []
    seen: set[str] = set()
    gone = {
        address_key(email): (email, str(updated or "")[:10])
        for email, updated in store.db.execute(
            "SELECT email, updated FROM subscribers WHERE status = 'unsubscribed'"
        ).fetchall()
    }
    for line, fields in rows:
        address = (fields.get("email") or "").strip()
        try:
            if not address:
                raise SubscriberError("no address in the email column")
            topics = [t for t in re.split(r"[,\s;]+", fields.get("topics") or "") if t]
            row = _checked(config, address, topics, fields.get("frequency") or "daily")
            if address_key(row.email) in seen:
                raise SubscriberError(f"{row.email} comes twice in the file")
        except SubscriberError as e:
            refused.append((line, address, str(e)))
            continue
        seen.add(address_key(row.email))
        if address_key(row.email) in gone:
            kept.append((line, *gone[address_key(row.email)]))  # as they are stored
            continue
        added.append(row)
    reactivated = 0
    if added:
        stamp = _stamp()
        with store.transaction() as conn:
            was = bouncing_addresses(store, config.smtp.max_bounces)
            reactivated = sum(address_key(r.email) in was for r in added)
            for row in added:
                _insert(conn, row, stamp)
    return ImportReport(added, refused, reactivated, kept)


def set_frequency(config: Config, store: Store, address: str, frequency: str) -> None:
    """Set how often an active reader gets the digest (the database row has the last word,
    as for topics changed on the web). Raises SubscriberError for an unknown frequency or
    an address that is not a subscriber."""
    how = check_frequency(frequency)
    address = normalize_address(address)
    config_row = _config_addresses(config).get(address_key(address))
    stamp = _stamp()
    with store.transaction() as conn:
        cur = conn.execute(
            "UPDATE subscribers SET frequency = ?, updated = ? WHERE email = ?",
            (how, stamp, address),
        )
        if not cur.rowcount:
            if config_row is None:
                raise SubscriberError(f"{address} is not a subscriber")
            conn.execute(
                "INSERT INTO subscribers (email, topics, status, frequency, created, updated) "
                "VALUES (?, ?, 'active', ?, ?, ?)",
                (config_row[0], json.dumps(list(config_row[1])), how, stamp, stamp),
            )


def remove_subscriber(config: Config, store: Store, address: str) -> SubscriberRow:
    """Mark a database subscriber unsubscribed (the row and its ledger stay); return it.

    Raises SubscriberError when the address is not a subscriber, or is one only
    through the config file (which we do not edit).
    """
    address = normalize_address(address)
    stamp = _stamp()
    with store.transaction() as conn:
        cur = conn.execute(
            "UPDATE subscribers SET status = 'unsubscribed', updated = ? WHERE email = ?",
            (stamp, address),
        )
        found = cur.rowcount
    in_config = address_key(address) in _config_addresses(config)
    if not found:
        if in_config:
            raise SubscriberError(
                f"{address} is a subscriber in {config.path or 'the config'}; remove it there"
            )
        raise SubscriberError(f"{address} is not a subscriber")
    row = store.db.execute(
        "SELECT email, topics FROM subscribers WHERE email = ?", [address]
    ).fetchone()
    return SubscriberRow(
        row[0], tuple(json.loads(row[1])), "database", SubscriberStatus.UNSUBSCRIBED
    )


def list_subscribers(config: Config, store: Store) -> list[SubscriberRow]:
    """Return every subscriber, config ones first, then the database's by address."""
    db_rows: dict[str, dict[str, Any]] = {
        address_key(r["email"]): r
        for r in store.db.query(
            "SELECT email, topics, status, keywords, frequency FROM subscribers ORDER BY email"
        )
    }
    out: list[SubscriberRow] = []
    for key, (address, topics, frequency) in _config_addresses(config).items():
        row = db_rows.pop(key, {})
        if row.get("status") in (SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.PENDING):
            # Pending: a sign-up on the web, not confirmed yet, can only follow an
            # unsubscribe (the form leaves active readers alone).
            out.append(
                SubscriberRow(
                    address, topics, "config", SubscriberStatus.UNSUBSCRIBED, frequency=frequency
                )
            )
        elif row.get("status") == SubscriberStatus.ACTIVE:
            # Changed on the web preferences page: the database row has the last word.
            out.append(
                SubscriberRow(
                    address,
                    tuple(json.loads(row["topics"])),
                    "config",
                    SubscriberStatus.ACTIVE,
                    row["keywords"],
                    row["frequency"],
                )
            )
        else:
            out.append(
                SubscriberRow(
                    address, topics, "config", SubscriberStatus.ACTIVE, frequency=frequency
                )
            )
    for r in db_rows.values():
        out.append(
            SubscriberRow(
                r["email"],
                tuple(json.loads(r["topics"])),
                "database",
                SubscriberStatus(r["status"]),
                r["keywords"],
                r["frequency"],
            )
        )
    bouncing = bouncing_addresses(store, config.smtp.max_bounces)
    if bouncing:
        out = [
            dataclasses.replace(row, status=SubscriberStatus.BOUNCING)
            if row.status == SubscriberStatus.ACTIVE and address_key(row.email) in bouncing
            else row
            for row in out
        ]
    return out


def active_subscribers(config: Config, store: Store) -> list[Subscriber]:
    """Return who gets today's email, each with their link tokens (and, with a bounces
    mailbox configured, their unsubscribe mailto and envelope sender). Bouncing readers
    are left out.

    Topics a database subscriber chose that are no longer in the config are dropped
    here (see `unknown_topics`), never passed to the renderer.
    """
    key = secret_key(store, config.secret_key)
    known = {t.name for t in config.topics}
    out: list[Subscriber] = []
    for row in list_subscribers(config, store):
        if row.status != SubscriberStatus.ACTIVE:
            continue
        topics = tuple(t for t in row.topics if t in known) if row.topics else ()
        mailto = envelope = ""
        if config.bounces.imap_host:
            domain = mailbox_domain(config)
            unsubscribe_tag = address_tag(key, row.email, UNSUBSCRIBE_TAG)
            mailto = f"mailto:unsubscribe+{unsubscribe_tag}@{domain}?subject=unsubscribe"
            envelope = f"bounces+{address_tag(key, row.email, BOUNCE_TAG)}@{domain}"
        out.append(
            Subscriber(
                row.email,
                topics,
                make_token(key, row.email, UNSUBSCRIBE),
                row.keywords,
                preferences_token=make_token(key, row.email, PREFERENCES),
                frequency=row.frequency,
                unsubscribe_mailto=mailto,
                envelope_from=envelope,
            )
        )
    return out


def mailbox_domain(config: Config) -> str:
    """The domain of the bounces+ / unsubscribe+ addresses: bounces.domain, else the
    sender's."""
    sender = parseaddr(config.smtp.sender)[1] or config.smtp.sender
    return config.bounces.domain or sender.rpartition("@")[2] or "localhost"


@dataclass(frozen=True)
class ReaderIndex:
    """Every subscriber (any status) by address and by the tags of their VERP and
    unsubscribe addresses: what reading the bounces mailbox looks readers up in."""

    known: dict[str, str]  # address_key -> address
    tags: dict[tuple[str, str], str]  # (purpose, tag) -> address

    def by_tag(self, purpose: str, tag: str) -> str | None:
        return self.tags.get((purpose, tag.strip().lower()))


def reader_index(config: Config, store: Store) -> ReaderIndex:
    """Return the ReaderIndex of every subscriber (two HMACs each, computed once)."""
    key = secret_key(store, config.secret_key)
    rows = list_subscribers(config, store)
    tags = {
        (purpose, address_tag(key, row.email, purpose)): row.email
        for row in rows
        for purpose in (BOUNCE_TAG, UNSUBSCRIBE_TAG)
    }
    return ReaderIndex({address_key(row.email): row.email for row in rows}, tags)


def known_subscribers(config: Config, store: Store) -> dict[str, str]:
    """Return address_key -> address of every subscriber, whatever their status."""
    return {address_key(row.email): row.email for row in list_subscribers(config, store)}


# -- bounces -----------------------------------------------------------------------------

BOUNCING_SQL = (
    "SELECT email FROM bounces WHERE cleared IS NULL GROUP BY email "
    "HAVING count(*) >= ? OR max(hard) = 1"
)
# RFC 3463 enhanced status codes: 5.1.x is about the address, 5.2.x the mailbox, 5.0.0 says
# nothing more than "failed" (many MTAs' DSNs). A refusal of the message or of our sender
# (5.7.1 "relay access denied", spam, 5.1.7 / 5.1.8 a bad sender address, a full system)
# says nothing about the reader's address, and must not put every reader on the list.
_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
SENDER = (("1", "7"), ("1", "8"))  # 5.1.7, 5.1.8: the sender's address, not the reader's
ADDRESS_CODES = ("550", "551", "553")  # basic codes about the mailbox, with no enhanced code


def bounce_kind(reply: str | None, status: str | None = None) -> tuple[bool, bool]:
    """Return (counts, hard) for a refusal: whether `reply` (an SMTP reply such as "550
    5.1.1 <a@b>: user unknown") or the DSN `status` ("5.1.1") is a permanent failure of
    the reader's address, and whether it is "no such user" (5.1.1), which counts in full
    at once."""
    text = " ".join(t for t in (status, reply) if t)
    m = _ENHANCED.search(text)
    if m:
        klass, subject, detail = m.groups()
        counts = klass == "5" and subject in ("0", "1", "2") and (subject, detail) not in SENDER

        return counts, counts and (subject, detail) == ("1", "1")
    return bool(reply) and (reply or "")[:3] in ADDRESS_CODES, False


def record_bounce(
    store: Store,
    address: str,
    *,
    hard: bool,
    reply: str | None,
    source: str,
    day: date | None = None,
) -> None:
    """Count a permanent refusal of `address`'s mail on `day` (default today in UTC); a
    second one the same day adds to that day's count, not to the days."""
    day = day or datetime.now(UTC).date()
    with store.transaction() as conn:
        conn.execute(
            "INSERT INTO bounces (email, day, count, hard, reply, source) "
            "VALUES (?, ?, 1, ?, ?, ?) ON CONFLICT (email, day) DO UPDATE SET "
            "count = CASE WHEN cleared IS NULL THEN count + 1 ELSE 1 END, "
            "hard = CASE WHEN cleared IS NULL THEN max(hard, excluded.hard) "
            "ELSE excluded.hard END, "
            "reply = excluded.reply, source = excluded.source, cleared = NULL",
            (address, day.isoformat(), int(hard), reply, source),
        )


def bouncing_addresses(store: Store, max_bounces: int) -> set[str]:
    """Return the address_key of every address that is bouncing (see the module doc)."""
    rows = store.db.execute(BOUNCING_SQL, [max_bounces]).fetchall()
    return {address_key(r[0]) for r in rows}


def clear_bounces(conn: Any, address: str, now: str) -> int:
    """Stop counting `address`'s bounces (reactivated); return how many days were cleared."""
    cur = conn.execute(
        "UPDATE bounces SET cleared = ? WHERE email = ? AND cleared IS NULL", (now, address)
    )
    return int(cur.rowcount)


def activate_subscriber(config: Config, store: Store, address: str) -> tuple[SubscriberRow, int]:
    """Mail a bouncing reader again: clear their bounces; return (their row, the days of
    bounces cleared).

    Raises SubscriberError when the address is no subscriber, or one who unsubscribed
    (that was their choice: `digest subscribers add` subscribes them again).
    """
    address = normalize_address(address)
    rows = {address_key(r.email): r for r in list_subscribers(config, store)}
    row = rows.get(address_key(address))
    if row is None:
        raise SubscriberError(f"{address} is not a subscriber")
    if row.status in (SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.PENDING):
        raise SubscriberError(
            f"{row.email} is {row.status}, not bouncing; "
            "`digest subscribers add` subscribes them again"
        )
    with store.transaction() as conn:
        cleared = clear_bounces(conn, row.email, _stamp())
    return dataclasses.replace(row, status=SubscriberStatus.ACTIVE), cleared


def unknown_topics(config: Config, store: Store) -> dict[str, tuple[str, ...]]:
    """Return address -> its topics gone from the config, for active subscribers whose
    topics are all gone and who have no keywords of their own (they would otherwise get
    every paper; with keywords, those still choose what they get)."""
    known = {t.name for t in config.topics}
    out: dict[str, tuple[str, ...]] = {}
    for row in list_subscribers(config, store):
        if row.status != SubscriberStatus.ACTIVE or not row.topics or row.keywords:
            continue
        if not any(t in known for t in row.topics):
            out[row.email] = row.topics
    return out


# -- the delivery ledger -----------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """One ledger row: what became of one subscriber's digest of one day."""

    email: str
    day: date
    status: DeliveryState
    reply: str | None = None
    reason: str | None = None
    attempts: int = 0
    message_id: str | None = None
    queued: str | None = None
    last_attempt: str | None = None
    sent: str | None = None
    covers_from: date | None = None  # the first edition day it covered, when before `day`


def _delivery(row: dict[str, Any]) -> Delivery:
    day, status = date.fromisoformat(row["day"]), DeliveryState(row["status"])
    covers = row.get("covers_from")
    covers_from = date.fromisoformat(covers) if covers else None
    return Delivery(**(row | {"day": day, "status": status, "covers_from": covers_from}))


# A delivery in these states may be in the reader's inbox: its editions count as theirs.
DELIVERED = (DeliveryState.SENT, DeliveryState.SENDING, DeliveryState.UNCERTAIN)


class Ledger:
    """The `deliveries` table. Each write is its own committed transaction; safe to share
    between the threads of one send (see the module's docstring for what is synced)."""

    def __init__(self, store: Store, *, durable_every: float = DURABLE_EVERY) -> None:
        self.store = store
        self.durable_every = durable_every
        self._lock = threading.RLock()
        self._light_mode = False
        self._synced = time.monotonic()

    @contextmanager
    def light(self) -> Iterator[Ledger]:
        """Within: commits do not wait for the disk, except one in `durable_every`
        seconds, which syncs all before it (see the module's docstring). For a send."""
        db = self.store.db.conn
        with self._lock:
            before = int(db.execute("PRAGMA synchronous").fetchone()[0])
            db.execute("PRAGMA synchronous = NORMAL")
            self._light_mode, self._synced = True, time.monotonic()
        try:
            yield self
        finally:
            with self._lock:
                self._light_mode = False
                db.execute(f"PRAGMA synchronous = {before}")

    @contextmanager
    def _commit(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, under the lock; in light mode, synced if the last
        synced one is `durable_every` old."""
        with self._lock:
            db = self.store.db.conn
            sync = self._light_mode and time.monotonic() - self._synced >= self.durable_every
            if sync:
                db.execute("PRAGMA synchronous = FULL")
            try:
                with self.store.transaction() as conn:
                    yield conn
            finally:
                if sync:
                    db.execute("PRAGMA synchronous = NORMAL")
                    self._synced = time.monotonic()

    def of_day(self, day: date) -> dict[str, Delivery]:
        """Return address_key(address) -> Delivery, for every row of `day`."""
        with self._lock:
            rows = list(
                self.store.db.query("SELECT * FROM deliveries WHERE day = ?", [day.isoformat()])
            )
        return {address_key(r["email"]): _delivery(r) for r in rows}

    def get(self, day: date, address: str) -> Delivery | None:
        """Return the row of (`address`, `day`), or None."""
        with self._lock:
            # On the connection itself: once per message of a send, and sqlite-utils'
            # query() parses each statement for its first keyword.
            cur = self.store.db.conn.execute(
                "SELECT * FROM deliveries WHERE email = ? AND day = ?", (address, day.isoformat())
            )
            row = cur.fetchone()
            names = [d[0] for d in cur.description]
        return _delivery(dict(zip(names, row, strict=True))) if row else None

    def rows(self, statuses: Iterable[DeliveryState], day: date | None = None) -> list[Delivery]:
        """Return the rows in `statuses` (of `day`, or of every day), newest day first."""
        wanted = list(statuses)
        where = f"status IN ({', '.join('?' for _ in wanted)})"
        args: list[str] = [str(s) for s in wanted]
        if day is not None:
            where += " AND day = ?"
            args = [*args, day.isoformat()]
        rows = self.store.db.query(
            f"SELECT * FROM deliveries WHERE {where} ORDER BY day DESC, email", args
        )
        return [_delivery(r) for r in rows]

    def last_delivered(self, before: date) -> dict[str, Delivery]:
        """Return address_key -> the reader's latest delivery before `before` that may be
        in their inbox (sent, sending or uncertain): where their next edition starts."""
        rows = self.store.db.query(
            "SELECT * FROM deliveries WHERE day < ? AND status IN (?, ?, ?) ORDER BY day",
            [before.isoformat(), *DELIVERED],
        )
        return {address_key(r["email"]): _delivery(r) for r in rows}

    def cover(self, day: date, covers: dict[str, date]) -> None:
        """Record, for rows of `day` not sent yet, the first edition day each covers
        (address -> day); a message covering only its own day needs no entry."""
        with self.store.transaction() as conn:
            conn.executemany(
                "UPDATE deliveries SET covers_from = ? WHERE email = ? AND day = ? "
                "AND status != 'sent'",
                [(first.isoformat(), a, day.isoformat()) for a, first in covers.items()],
            )

    def last_sent(self) -> dict[str, Delivery]:
        """Return address_key -> the reader's latest delivery the server accepted."""
        rows = self.store.db.query(
            "SELECT * FROM deliveries WHERE status = 'sent' ORDER BY day, sent"
        )
        return {address_key(r["email"]): _delivery(r) for r in rows}

    def queue(self, day: date, addresses: Iterable[str]) -> None:
        """Record the day's batch as queued (rows already there keep their state)."""
        stamp = _stamp()
        with self.store.transaction() as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO deliveries (email, day, status, queued) "
                "VALUES (?, ?, 'queued', ?)",
                [(a, day.isoformat(), stamp) for a in addresses],
            )

    def settle_in_flight(self) -> int:
        """Turn "sending" rows left by a run that died into "uncertain"; return how many.

        Call only under the run lock, before sending: then no live send owns them."""
        with self.store.transaction() as conn:
            cur = conn.execute(
                "UPDATE deliveries SET status = ?, reason = ? WHERE status = ?",
                (DeliveryState.UNCERTAIN, CRASHED, DeliveryState.SENDING),
            )
            return cur.rowcount

    def claim(self, day: date, address: str, *, uncertain_too: bool = False) -> bool:
        """Mark the row in flight ("sending", committed) if no other send has taken it;
        return whether it is ours. `uncertain_too`: an operator's resend may take an
        "uncertain" row as well."""
        states = [*RETRIED, DeliveryState.UNCERTAIN] if uncertain_too else list(RETRIED)
        # In light mode, committed without waiting for the disk (fsync): a killed process
        # loses nothing written, only a power cut could (see the module's docstring).
        with self._commit() as conn:
            # The state is re-checked here, in the transaction that claims the row.
            cur = conn.execute(
                "UPDATE deliveries SET status = ?, last_attempt = ? WHERE email = ? "
                f"AND day = ? AND status IN ({', '.join('?' for _ in states)})",
                (DeliveryState.SENDING, _stamp(), address, day.isoformat(), *states),
            )
            return cur.rowcount == 1

    def _finish(
        self,
        day: date,
        address: str,
        status: DeliveryState,
        *,
        attempts: int,
        reply: str | None = None,
        reason: str | None = None,
        message_id: str | None = None,
    ) -> None:
        stamp = _stamp()
        with self._commit() as conn:
            # Never downgrade a "sent" row: another run may have sent it meanwhile.
            conn.execute(
                "UPDATE deliveries SET status = ?, reply = ?, reason = ?, "
                "attempts = attempts + ?, message_id = COALESCE(?, message_id), "
                "last_attempt = CASE WHEN ? > 0 THEN ? ELSE last_attempt END, "
                "sent = CASE WHEN ? = 'sent' THEN ? ELSE sent END "
                "WHERE email = ? AND day = ? AND status != 'sent'",
                (
                    status,
                    reply,
                    reason,
                    attempts,
                    message_id,
                    attempts,
                    stamp,
                    status,
                    stamp,
                    address,
                    day.isoformat(),
                ),
            )

    def sent(self, day: date, address: str, reply: str, attempts: int, message_id: str) -> None:
        """Record that the server accepted the message (committed before returning)."""
        self._finish(
            day, address, DeliveryState.SENT, attempts=attempts, reply=reply, message_id=message_id
        )

    def failed(
        self,
        day: date,
        address: str,
        reply: str | None,
        attempts: int,
        reason: str,
        *,
        about_reader: bool = True,
    ) -> None:
        """Record that the message was refused (with the server's reply) or could not be
        made or sent (`reply` None, `reason` says why); the next run tries again.
        `about_reader` False (the server refused our MAIL FROM): the reply is not counted
        as the reader's bounce, whatever its code says."""
        counts, hard = bounce_kind(reply) if about_reader else (False, False)
        with self._lock:  # the sessions share one connection: one writer at a time
            self._finish(
                day, address, DeliveryState.FAILED, attempts=attempts, reply=reply, reason=reason
            )
            if counts:  # a 5xx about the address: it counts towards "bouncing"
                record_bounce(self.store, address, hard=hard, reply=reply, source="smtp")

    def uncertain(
        self, day: date, address: str, reply: str, attempts: int, message_id: str
    ) -> None:
        """Record that the final "." went out and no reply came: maybe delivered."""
        reason = "no reply to the end of the message: maybe delivered; not resent by itself"
        self._finish(
            day,
            address,
            DeliveryState.UNCERTAIN,
            attempts=attempts,
            reply=reply,
            reason=reason,
            message_id=message_id,
        )

    def skipped(self, day: date, address: str, reason: str) -> None:
        """Record that there was nothing to send; a later run of the day tries again."""
        self._finish(day, address, DeliveryState.SKIPPED, attempts=0, reason=reason)

    def count(self, status: DeliveryState) -> int:
        """Return how many rows (of every day) are in `status`."""
        row = self.store.db.execute(
            "SELECT count(*) FROM deliveries WHERE status = ?", [status]
        ).fetchone()
        return int(row[0])
