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


def _migrate_7(db: sqlite_utils.Database) -> None:
    """The web's reads, flat as the archive grows (issue 16).

    - papers_search: FTS5 over title, abstract, authors and AI keywords (the search box and
      `digest papers --search`), replacing papers_fts (which lacked the keywords). Its
      triggers fire only when an indexed column changes, as papers_au did.
    - counts: the number of papers, kept by triggers, so /healthz and `digest papers` do
      not run count(*) over the whole table.
    - papers (backfilled, first_seen): the newest new paper and the feed window (every
      fetch) are an index probe and a range, not a scan.
    - upvotes (at): the snapshots of the last 24 hours (rising) without a scan.
    """
    for trigger in ("papers_ai", "papers_ad", "papers_au"):
        db.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    db.execute("DROP TABLE IF EXISTS papers_fts")
    db.execute(
        "CREATE VIRTUAL TABLE papers_search USING fts5 (title, abstract, authors, ai_keywords, "
        "content='papers', content_rowid='rowid', tokenize='unicode61 remove_diacritics 2')"
    )
    cols = "title, abstract, authors, ai_keywords"
    new = "new.title, new.abstract, new.authors, new.ai_keywords"
    old = "old.title, old.abstract, old.authors, old.ai_keywords"
    db.execute(
        "CREATE TRIGGER papers_search_ai AFTER INSERT ON papers BEGIN\n"
        f"  INSERT INTO papers_search (rowid, {cols}) VALUES (new.rowid, {new});\n"
        "END"
    )
    db.execute(
        "CREATE TRIGGER papers_search_ad AFTER DELETE ON papers BEGIN\n"
        f"  INSERT INTO papers_search (papers_search, rowid, {cols}) "
        f"VALUES ('delete', old.rowid, {old});\n"
        "END"
    )
    db.execute(
        f"CREATE TRIGGER papers_search_au AFTER UPDATE OF {cols} ON papers BEGIN\n"
        f"  INSERT INTO papers_search (papers_search, rowid, {cols}) "
        f"VALUES ('delete', old.rowid, {old});\n"
        f"  INSERT INTO papers_search (rowid, {cols}) VALUES (new.rowid, {new});\n"
        "END"
    )
    db.execute("INSERT INTO papers_search (papers_search) VALUES ('rebuild')")
    db.execute("CREATE TABLE counts (name TEXT PRIMARY KEY, n INTEGER NOT NULL)")
    db.execute("INSERT INTO counts (name, n) SELECT 'papers', count(*) FROM papers")
    db.execute(
        "CREATE TRIGGER papers_count_ai AFTER INSERT ON papers BEGIN\n"
        "  UPDATE counts SET n = n + 1 WHERE name = 'papers';\n"
        "END"
    )
    db.execute(
        "CREATE TRIGGER papers_count_ad AFTER DELETE ON papers BEGIN\n"
        "  UPDATE counts SET n = n - 1 WHERE name = 'papers';\n"
        "END"
    )
    db.execute("CREATE INDEX papers_new_first_seen ON papers (backfilled, first_seen)")
    db.execute("CREATE INDEX upvotes_at ON upvotes (at)")


def _migrate_8(db: sqlite_utils.Database) -> None:
    """Relevance beyond keywords (issue 15).

    - paper_vectors: each paper's tf-idf vector (digest.relevance bytes) and the version
      of the vocabulary that made it; vectors of another version are never compared.
    - meta rows 'vocabulary' (its JSON text) and 'vocabulary_version'.
    - seed_papers: like-topic seeds that are not in the archive, fetched once from the
      API (`digest topics like`, `digest check`), so a send never goes to the network.
    - choices / reader_models: "more / fewer like this" per (reader, paper), and each
      reader's learned model with the time of the newest choice it learned from.
    """
    db.execute(
        "CREATE TABLE paper_vectors (paper_id TEXT PRIMARY KEY, vocab INTEGER NOT NULL, "
        "vector BLOB NOT NULL)"
    )
    db.execute(
        "CREATE TABLE seed_papers (id TEXT PRIMARY KEY, title TEXT NOT NULL, "
        "abstract TEXT NOT NULL, ai_keywords TEXT NOT NULL, fetched TEXT NOT NULL)"
    )
    db.execute(
        "CREATE TABLE choices (reader TEXT NOT NULL, paper_id TEXT NOT NULL, "
        "more INTEGER NOT NULL, at TEXT NOT NULL, PRIMARY KEY (reader, paper_id))"
    )
    db.execute(
        "CREATE TABLE reader_models (reader TEXT PRIMARY KEY, model BLOB NOT NULL, "
        "learned_at TEXT NOT NULL)"
    )


def _migrate_9(db: sqlite_utils.Database) -> None:
    """web_mails.choice: what a bouncing reader typed on the sign-up form, held with the
    confirm mail and applied on confirm. The table is made on first use
    (signups.ensure_mail_table, which has the column), so it may not exist yet."""
    if "web_mails" in db.table_names():
        db.execute("ALTER TABLE web_mails ADD COLUMN choice TEXT")


# Each entry takes the file from version N-1 to N. Append only; never edit a shipped step.
MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _migrate_1,
    _migrate_2,
    _migrate_3,
    _migrate_4,
    _migrate_5,
    _migrate_6,
    _migrate_7,
    _migrate_8,
    _migrate_9,
]
