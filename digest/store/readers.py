"""Subscribers (config file + database) and the delivery ledger.

Who gets the email: every `[[subscribers]]` entry of the config, plus every database
subscriber whose status is "active" (`digest subscribers add`). A database record with
status "unsubscribed" also silences a config entry with the same address: the person
asked to stop, and a config file must not override that.

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

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from digest.addresses import address_key, normalize_address
from digest.config import Config
from digest.errors import ConfigError, SubscriberError
from digest.models import DeliveryState, Subscriber, SubscriberStatus
from digest.store.meta import secret_key
from digest.tokens import PREFERENCES, UNSUBSCRIBE, make_token

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


def _config_addresses(config: Config) -> dict[str, tuple[str, tuple[str, ...]]]:
    """address_key -> (normal form, topics), for the config's subscribers."""
    out: dict[str, tuple[str, tuple[str, ...]]] = {}
    for i, sub in enumerate(config.subscribers):
        try:
            address = normalize_address(sub.email)
        except SubscriberError as e:
            raise ConfigError(str(e), path=config.path, key=f"subscribers[{i}].email") from None
        out.setdefault(address_key(address), (address, tuple(sub.topics)))
    return out


def add_subscriber(
    config: Config, store: Store, address: str, topics: Sequence[str] = ()
) -> SubscriberRow:
    """Add (or re-activate, with new topics) a database subscriber; return its row.

    Raises SubscriberError naming the address or the topic that is not acceptable.
    """
    address = normalize_address(address)
    chosen = check_topics(config, topics)
    if address_key(address) in _config_addresses(config):
        raise SubscriberError(
            f"{address} is already a subscriber in {config.path or 'the config'}; "
            "change its topics there"
        )
    stamp = _stamp()
    with store.transaction() as conn:
        conn.execute(
            "INSERT INTO subscribers (email, topics, status, created, updated) "
            "VALUES (?, ?, 'active', ?, ?) ON CONFLICT (email) DO UPDATE SET "
            "topics = excluded.topics, status = 'active', updated = excluded.updated",
            (address, json.dumps(list(chosen)), stamp, stamp),
        )
    return SubscriberRow(address, chosen, "database", SubscriberStatus.ACTIVE)


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
            "SELECT email, topics, status, keywords FROM subscribers ORDER BY email"
        )
    }
    out: list[SubscriberRow] = []
    for key, (address, topics) in _config_addresses(config).items():
        row = db_rows.pop(key, {})
        if row.get("status") in (SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.PENDING):
            # Pending: a sign-up on the web, not confirmed yet, can only follow an
            # unsubscribe (the form leaves active readers alone).
            out.append(SubscriberRow(address, topics, "config", SubscriberStatus.UNSUBSCRIBED))
        elif row.get("status") == SubscriberStatus.ACTIVE:
            # Changed on the web preferences page: the database row has the last word.
            out.append(
                SubscriberRow(
                    address,
                    tuple(json.loads(row["topics"])),
                    "config",
                    SubscriberStatus.ACTIVE,
                    row["keywords"],
                )
            )
        else:
            out.append(SubscriberRow(address, topics, "config", SubscriberStatus.ACTIVE))
    for r in db_rows.values():
        out.append(
            SubscriberRow(
                r["email"],
                tuple(json.loads(r["topics"])),
                "database",
                SubscriberStatus(r["status"]),
                r["keywords"],
            )
        )
    return out


def active_subscribers(config: Config, store: Store) -> list[Subscriber]:
    """Return who gets today's email, each with their link token.

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
        out.append(
            Subscriber(
                row.email,
                topics,
                make_token(key, row.email, UNSUBSCRIBE),
                row.keywords,
                preferences_token=make_token(key, row.email, PREFERENCES),
            )
        )
    return out


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


def _delivery(row: dict[str, Any]) -> Delivery:
    day, status = date.fromisoformat(row["day"]), DeliveryState(row["status"])
    return Delivery(**(row | {"day": day, "status": status}))


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
            rows = list(
                self.store.db.query(
                    "SELECT * FROM deliveries WHERE email = ? AND day = ?",
                    [address, day.isoformat()],
                )
            )
        return _delivery(rows[0]) if rows else None

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
        self, day: date, address: str, reply: str | None, attempts: int, reason: str
    ) -> None:
        """Record that the message was refused (with the server's reply) or could not be
        made or sent (`reply` None, `reason` says why); the next run tries again."""
        self._finish(
            day, address, DeliveryState.FAILED, attempts=attempts, reply=reply, reason=reason
        )

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
