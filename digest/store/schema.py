"""Every schema step of the SQLite file, in order: MIGRATIONS[N-1] takes it from version
N-1 to N (PRAGMA user_version). Store.open runs the missing ones in one transaction."""

from __future__ import annotations

from collections.abc import Callable

import sqlite_utils


def _migrate_1(db: sqlite_utils.Database) -> None:
    db.table("papers").create(
        {
            "id": str,
            "title": str,
            "abstract": str,
            "authors": str,
            "published_at": str,
            "daily_date": str,
            "upvotes": int,
            "comments": int,
            "organization": str,
            "github_repo": str,
            "github_stars": int,
            "project_page": str,
            "thumbnail": str,
            "ai_summary": str,
            "ai_keywords": str,
            "withdrawn": int,
            "submitted_by": str,
            "first_seen": str,
            "first_run": int,
            "last_seen": str,
        },
        pk="id",
        not_null={"title", "first_seen"},
    )
    db.table("papers").create_index(["first_seen"])
    db.table("papers").create_index(["daily_date"])
    db.table("runs").create(
        {
            "id": int,
            "started": str,
            "finished": str,
            "source_url": str,
            "source": str,
            "list_date": str,
            "trending": int,
            "status": str,
            "reason": str,
            "seen": int,
            "new": int,
            "updated": int,
            "error": str,
        },
        pk="id",
    )
    db.table("runs").create_index(["list_date", "status"])
    db.table("upvotes").create(
        {
            "paper_id": str,
            "run_id": int,
            "at": str,
            "upvotes": int,
            "comments": int,
            "github_stars": int,
        },
        pk=("paper_id", "run_id"),
        foreign_keys=[("paper_id", "papers", "id"), ("run_id", "runs", "id")],
    )
    db.table("papers").enable_fts(
        ["title", "abstract", "authors"],
        create_triggers=True,
        tokenize="unicode61 remove_diacritics 2",
    )


def _migrate_2(db: sqlite_utils.Database) -> None:
    """Schema step: meta (settings), subscribers, deliveries (the ledger)."""
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute(
        "CREATE TABLE subscribers ("
        " email TEXT PRIMARY KEY COLLATE NOCASE,"
        " topics TEXT NOT NULL DEFAULT '[]',"
        " status TEXT NOT NULL DEFAULT 'active',"
        " created TEXT NOT NULL,"
        " updated TEXT NOT NULL)"
    )
    db.execute(
        "CREATE TABLE deliveries ("
        " email TEXT NOT NULL COLLATE NOCASE,"
        " day TEXT NOT NULL,"
        " status TEXT NOT NULL,"
        " reply TEXT,"  # the server's last reply, e.g. "250 2.0.0 Ok: queued as 4F2"
        " reason TEXT,"  # why skipped / failed, in words
        " attempts INTEGER NOT NULL DEFAULT 0,"
        " message_id TEXT,"
        " queued TEXT NOT NULL,"
        " last_attempt TEXT,"
        " sent TEXT,"
        " PRIMARY KEY (email, day))"
    )
    db.execute("CREATE INDEX deliveries_day_status ON deliveries (day, status)")


def _migrate_3(db: sqlite_utils.Database) -> None:
    """Digest editions, backfilled papers, personal keywords, cheaper refreshes.

    - papers.digest_day: the daily email that carried the paper (NULL: none yet). A paper
      belongs to exactly one edition, so one fetched after the morning send goes out in the
      next morning's email instead of falling between two days.
    - papers.backfilled: stored by `digest backfill` for a past day: archive and search
      only, never "new" in an email or a feed.
    - subscribers.keywords: free keywords typed on the subscribe form (a personal topic).
    - The FTS update trigger fires only when an indexed column changes: every run touches
      last_seen and the vote counts of the day's papers, which must not rewrite the index.
    """
    db.execute("ALTER TABLE papers ADD COLUMN digest_day TEXT")
    db.execute("ALTER TABLE papers ADD COLUMN backfilled INTEGER NOT NULL DEFAULT 0")
    db.execute("CREATE INDEX papers_digest_day ON papers (digest_day)")
    db.execute("ALTER TABLE subscribers ADD COLUMN keywords TEXT NOT NULL DEFAULT ''")
    db.execute("DROP TRIGGER IF EXISTS papers_au")
    db.execute(
        "CREATE TRIGGER papers_au AFTER UPDATE OF title, abstract, authors ON papers BEGIN\n"
        "  INSERT INTO papers_fts (papers_fts, rowid, title, abstract, authors) "
        "VALUES ('delete', old.rowid, old.title, old.abstract, old.authors);\n"
        "  INSERT INTO papers_fts (rowid, title, abstract, authors) "
        "VALUES (new.rowid, new.title, new.abstract, new.authors);\n"
        "END"
    )


def _migrate_4(db: sqlite_utils.Database) -> None:
    """runs.left_out: the papers a run listed but could not store, as a JSON list of
    {"id", "reason"} (NULL: none). One bad paper no longer stops the whole day."""
    db.execute("ALTER TABLE runs ADD COLUMN left_out TEXT")


def _migrate_5(db: sqlite_utils.Database) -> None:
    """Daily or weekly readers (issue 14).

    - subscribers.frequency: "daily" or "weekly".
    - deliveries.covers_from: the first edition day a message covered when it covered more
      than its own day (a weekly edition, or a daily one catching up after a switch from
      weekly); NULL: its own day only. Each paper is in one edition (papers.digest_day), so
      a reader's covered days, never overlapping and never leaving a gap, mean each paper
      once.
    """
    db.execute("ALTER TABLE subscribers ADD COLUMN frequency TEXT NOT NULL DEFAULT 'daily'")
    db.execute("ALTER TABLE deliveries ADD COLUMN covers_from TEXT")
    db.execute("CREATE INDEX deliveries_email_day ON deliveries (email, day)")


def _migrate_6(db: sqlite_utils.Database) -> None:
    """bounces: permanent refusals per reader and day (a 5xx at send time, a bounce report
    read from the mailbox, a relay's webhook). A reader with smtp.max_bounces uncleared
    days, or one "no such user" (hard), is bouncing; reactivating clears the rows (kept,
    with the time, as the history)."""
    db.execute(
        "CREATE TABLE bounces ("
        " email TEXT NOT NULL COLLATE NOCASE,"
        " day TEXT NOT NULL,"
        " count INTEGER NOT NULL DEFAULT 1,"  # refusals that day
        " hard INTEGER NOT NULL DEFAULT 0,"  # 1: "no such user" (5.1.1)
        " reply TEXT,"  # the last one, e.g. "550 5.1.1 <a@b>: user unknown"
        " source TEXT NOT NULL,"  # "smtp", "mailbox" or "webhook"
        " cleared TEXT,"  # when the reader was reactivated after it (NULL: counts)
        " PRIMARY KEY (email, day))"
    )


# Each entry takes the file from version N-1 to N. Append only; never edit a shipped step.
MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _migrate_1,
    _migrate_2,
    _migrate_3,
    _migrate_4,
    _migrate_5,
    _migrate_6,
]
