"""The web's sign-up rows: table `web_mails` (the queue of sign-up mails, and what the
limits count) and the subscriber transitions the sign-up flow makes (pending, confirmed,
unsubscribed, preferences). The rules are web/subscribe.py's; the SQL is here.

Functions taking `conn` run inside the caller's `store.transaction()`, so a rule and the
rows it checks stay in one transaction (BEGIN IMMEDIATE).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from digest.models import SubscriberStatus
from digest.store import Store

Conn = sqlite3.Connection


def ensure_mail_table(store: Store) -> None:
    """Create `web_mails` (the sign-up mails: the queue, and what the limits count)."""
    store.db.execute(
        "CREATE TABLE IF NOT EXISTS web_mails ("
        " id INTEGER PRIMARY KEY,"
        " email TEXT NOT NULL COLLATE NOCASE,"
        " kind TEXT NOT NULL,"  # "confirm" or "note" (already subscribed)
        " nonce TEXT,"  # confirm: the sign-up its link is for
        " subject TEXT NOT NULL,"
        " body TEXT NOT NULL,"
        " queued TEXT NOT NULL,"
        " status TEXT NOT NULL DEFAULT 'queued',"  # queued, sending, sent, failed
        " claimed TEXT,"  # when a sender took it
        " used TEXT,"  # when its link was used up or voided (confirm, unsubscribe)
        " reason TEXT,"
        " choice TEXT)"  # confirm of a bouncing reader: what they typed, applied on confirm
    )
    store.db.execute("CREATE INDEX IF NOT EXISTS web_mails_email ON web_mails (email, queued)")


# -- the queue ---------------------------------------------------------------------------


def claim_next_mail(store: Store, now: str, stale: str) -> tuple[int, str, str, str] | None:
    """Take the oldest queued mail (queued -> sending, stamped `now`); return (id, email,
    subject, body), or None when none waits.

    A mail left "sending" since before `stale` by a process that died: we cannot know
    whether it went; it is called failed (never resent by itself), so the address may
    ask again.
    """
    with store.transaction() as conn:
        conn.execute(
            "UPDATE web_mails SET status = 'failed', reason = 'interrupted' "
            "WHERE status = 'sending' AND claimed < ?",
            (stale,),
        )
        row = conn.execute(
            "SELECT id, email, subject, body FROM web_mails WHERE status = 'queued' "
            "ORDER BY id LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        conn.execute(
            "UPDATE web_mails SET status = 'sending', claimed = ? WHERE id = ?", (now, row[0])
        )
    return int(row[0]), str(row[1]), str(row[2]), str(row[3])


def finish_mail(store: Store, mail_id: int, status: str, reason: str | None) -> None:
    """Record how the mail went: "sent", or "failed" with why."""
    with store.transaction() as conn:
        conn.execute(
            "UPDATE web_mails SET status = ?, reason = ? WHERE id = ?", (status, reason, mail_id)
        )


def unsent_mails(store: Store) -> int:
    """Return how many sign-up mails are queued or being sent (tests wait on this)."""
    ensure_mail_table(store)
    row = store.db.execute(
        "SELECT count(*) FROM web_mails WHERE status IN ('queued', 'sending')"
    ).fetchone()
    return int(row[0])


def mails_since(conn: Conn, since: str) -> int:
    """How many sign-up mails were queued since `since` (every address)."""
    return int(
        conn.execute("SELECT count(*) FROM web_mails WHERE queued >= ?", (since,)).fetchone()[0]
    )


def first_mail_since(conn: Conn, since: str) -> str | None:
    """When the oldest sign-up mail queued since `since` was queued (for "try again in")."""
    row = conn.execute("SELECT min(queued) FROM web_mails WHERE queued >= ?", (since,)).fetchone()
    return str(row[0]) if row and row[0] else None


def has_outstanding_mail(conn: Conn, address: str, since: str) -> bool:
    """True when `address` has a sign-up mail since `since` not used up nor failed."""
    row = conn.execute(
        "SELECT 1 FROM web_mails WHERE email = ? AND queued >= ? AND used IS NULL "
        "AND status != 'failed' LIMIT 1",
        (address, since),
    ).fetchone()
    return row is not None


def hold_latest_choice(
    conn: Conn, address: str, since: str, choice: tuple[Sequence[str], str, str]
) -> None:
    """A second sign-up of `address` while its confirmation mail (queued since `since`)
    is outstanding: the link stays the same, and what they typed last is what confirming
    applies. The choice held with that mail (a bouncing reader's) is replaced, or, for a
    reader not yet active, the pending row's; an active reader's row is never touched."""
    topics, keywords, frequency = choice
    conn.execute(
        "UPDATE web_mails SET choice = ? WHERE email = ? AND kind = 'confirm' "
        "AND queued >= ? AND used IS NULL AND status != 'failed' AND choice IS NOT NULL",
        (json.dumps([list(topics), keywords, frequency]), address, since),
    )
    conn.execute(
        "UPDATE subscribers SET topics = ?, keywords = ?, frequency = ? "
        "WHERE email = ? AND status IN ('pending', 'unsubscribed') AND EXISTS ("
        " SELECT 1 FROM web_mails WHERE web_mails.email = subscribers.email"
        " AND kind = 'confirm' AND queued >= ? AND used IS NULL AND status != 'failed')",
        (json.dumps(list(topics)), keywords, frequency, address, since),
    )


def queue_mail(
    conn: Conn,
    address: str,
    kind: str,
    nonce: str | None,
    subject: str,
    body: str,
    now: str,
    choice: tuple[Sequence[str], str, str] | None = None,
) -> None:
    """Queue one sign-up mail ("confirm", with the sign-up's nonce, or "note"). `choice`
    (topics, keywords, frequency) is held with a confirm mail until its link is used:
    a reader who has a row already (a bouncing one) must not change before that."""
    held = None if choice is None else json.dumps([list(choice[0]), choice[1], choice[2]])
    conn.execute(
        "INSERT INTO web_mails (email, kind, nonce, subject, body, queued, choice) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (address, kind, nonce, subject, body, now, held),
    )


# -- subscriber rows the flow changes ----------------------------------------------------


def delete_pending_before(store: Store, before: str) -> int:
    """Delete sign-ups not confirmed since `before`; return how many."""
    with store.transaction() as conn:
        cur = conn.execute(
            "DELETE FROM subscribers WHERE status = ? AND updated < ?",
            (SubscriberStatus.PENDING, before),
        )
    return cur.rowcount


def record_pending(
    conn: Conn,
    address: str,
    topics: Sequence[str],
    keywords: str,
    now: str,
    frequency: str = "daily",
) -> None:
    """Note a sign-up (pending) with its choice. Someone who unsubscribed stays
    unsubscribed (only their confirmation changes that)."""
    conn.execute(
        "INSERT INTO subscribers (email, topics, keywords, frequency, status, created, updated) "
        "VALUES (?, ?, ?, ?, 'pending', ?, ?) ON CONFLICT (email) DO UPDATE SET "
        "topics = excluded.topics, keywords = excluded.keywords, "
        "frequency = excluded.frequency, "
        "status = CASE WHEN status = 'unsubscribed' THEN status ELSE 'pending' END, "
        "updated = CASE WHEN status = 'unsubscribed' THEN updated "
        "ELSE excluded.updated END",
        (address, json.dumps(list(topics)), keywords, frequency, now, now),
    )


def keep_row(
    conn: Conn,
    address: str,
    topics: Sequence[str],
    keywords: str,
    now: str,
    frequency: str = "daily",
) -> None:
    """Give an active reader (a config one too) a database row, as they are, if they have
    none: a bouncing reader's sign-up is confirmed on that row, and changes nothing else
    before it is. The frequency too: the row's has the last word over the config's."""
    conn.execute(
        "INSERT INTO subscribers (email, topics, keywords, frequency, status, created, updated) "
        "VALUES (?, ?, ?, ?, 'active', ?, ?) ON CONFLICT (email) DO NOTHING",
        (address, json.dumps(list(topics)), keywords, frequency, now, now),
    )


def confirm_mail_unused(store: Store, address: str, nonce: str) -> bool:
    """True when the confirmation mail of sign-up `nonce` to `address` is not used up."""
    ensure_mail_table(store)
    row = store.db.execute(
        "SELECT 1 FROM web_mails WHERE email = ? AND kind = 'confirm' AND nonce = ? "
        "AND used IS NULL",
        [address, nonce],
    ).fetchone()
    return row is not None


def is_active(store: Store, address: str) -> bool:
    """True when the database has `address` as an active subscriber."""
    row = store.db.execute(
        "SELECT 1 FROM subscribers WHERE email = ? AND status = ?",
        [address, SubscriberStatus.ACTIVE],
    ).fetchone()
    return row is not None


def unused_confirm_mail(conn: Conn, address: str, nonce: str) -> int | None:
    """The id of sign-up `nonce`'s confirmation mail to `address` while unused, else None."""
    row = conn.execute(
        "SELECT id FROM web_mails WHERE email = ? AND kind = 'confirm' AND nonce = ? "
        "AND used IS NULL",
        (address, nonce),
    ).fetchone()
    return int(row[0]) if row else None


def confirm_choice(
    store: Store, address: str, nonce: str
) -> tuple[tuple[str, ...], str, str] | None:
    """What confirming sign-up `nonce` of `address` applies, as (topics, keywords,
    frequency): the choice held with its mail (a bouncing reader's), else the row's (a
    pending one's; both what was typed last, see hold_latest_choice). None when the
    mail is used up or the address has no row."""
    ensure_mail_table(store)
    held = store.db.execute(
        "SELECT choice FROM web_mails WHERE email = ? AND kind = 'confirm' AND nonce = ? "
        "AND used IS NULL",
        [address, nonce],
    ).fetchone()
    if held is None:
        return None
    if held[0]:
        topics, keywords, frequency = json.loads(held[0])
        return tuple(topics), keywords, frequency
    return row_choice(store.db.conn, address)


def row_choice(conn: Conn, address: str) -> tuple[tuple[str, ...], str, str] | None:
    """The database row's (topics, keywords, frequency) of `address`, or None."""
    row = conn.execute(
        "SELECT topics, keywords, frequency FROM subscribers WHERE email = ?", (address,)
    ).fetchone()
    if row is None:
        return None
    return tuple(json.loads(row[0] or "[]")), row[1] or "", row[2] or "daily"


def subscriber_status(conn: Conn, address: str) -> SubscriberStatus | None:
    """The database row's status of `address`, or None when it has none."""
    row = conn.execute("SELECT status FROM subscribers WHERE email = ?", (address,)).fetchone()
    return SubscriberStatus(row[0]) if row else None


def activate(conn: Conn, mail_id: int, address: str, now: str) -> None:
    """Use up confirmation mail `mail_id` and make `address` an active subscriber; a
    bouncing one is mailed again (confirming proves the mailbox works), with the choice
    held with that mail, if any (queue_mail)."""
    conn.execute("UPDATE web_mails SET used = ? WHERE id = ?", (now, mail_id))
    held = conn.execute("SELECT choice FROM web_mails WHERE id = ?", (mail_id,)).fetchone()
    if held and held[0]:
        topics, keywords, frequency = json.loads(held[0])
        conn.execute(
            "UPDATE subscribers SET topics = ?, keywords = ?, frequency = ? WHERE email = ?",
            (json.dumps(topics), keywords, frequency, address),
        )
    conn.execute(
        "UPDATE subscribers SET status = 'active', updated = ? WHERE email = ?", (now, address)
    )
    conn.execute(
        "UPDATE bounces SET cleared = ? WHERE email = ? AND cleared IS NULL", (now, address)
    )


def unsubscribe_row(store: Store, address: str, now: str) -> None:
    """Mark `address` unsubscribed (a config subscriber gets a row saying so) and void its
    outstanding sign-up links, in one transaction."""
    ensure_mail_table(store)
    with store.transaction() as conn:
        conn.execute(
            "INSERT INTO subscribers (email, topics, status, created, updated) "
            "VALUES (?, '[]', 'unsubscribed', ?, ?) ON CONFLICT (email) DO UPDATE SET "
            "status = 'unsubscribed', updated = excluded.updated",
            (address, now, now),
        )
        conn.execute(
            "UPDATE web_mails SET used = ? WHERE email = ? AND used IS NULL", (now, address)
        )


def save_choice(
    conn: Conn,
    address: str,
    topics: Sequence[str],
    keywords: str,
    now: str,
    frequency: str = "daily",
) -> None:
    """Set an active reader's topics, keywords and frequency (a config reader without a
    row gets one: the row has the last word)."""
    conn.execute(
        "INSERT INTO subscribers (email, topics, keywords, frequency, status, created, updated) "
        "VALUES (?, ?, ?, ?, 'active', ?, ?) ON CONFLICT (email) DO UPDATE SET "
        "topics = excluded.topics, keywords = excluded.keywords, "
        "frequency = excluded.frequency, updated = excluded.updated",
        (address, json.dumps(list(topics)), keywords, frequency, now, now),
    )
