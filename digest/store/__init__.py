"""The SQLite file: papers (the differ), runs, upvote snapshots. Schema versioned.

The only place the file is opened (`Store.open`, read-only for the web's health reads)
and, with its submodules, the only code that speaks SQL: schema (every migration, in
order), readers (subscribers and the delivery ledger), signups (the web's sign-up rows),
runs (the scheduler's job log, /healthz), meta (the token key, notes to the operator).

Everything a run writes goes in one transaction: a run that fails part-way stores
nothing from its page, and a crash between parse and commit leaves no partial run.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlite_utils
import tenacity

from digest.clock import now_utc
from digest.errors import DigestError
from digest.models import Listing, Paper, RunResult, RunStatus, StoredPaper
from digest.store.fts import match_or_nothing
from digest.store.schema import MIGRATIONS

# A digest claims the papers first seen at most this many days before its send: a first send
# after weeks without one (no SMTP server yet, no subscribers) mails a week, not an archive.
CLAIM_DAYS = 7
# How long a writer waits for another process's transaction before giving up.
BUSY_SECONDS = 30


def _iso(value: datetime) -> str:
    """The time in UTC as YYYY-MM-DDTHH:MM:SSZ (a time without an offset is UTC).

    Raises OverflowError when it falls outside years 1-9999 in UTC. Not strftime: its %Y
    writes year 1 as "1", which no ISO reader takes back.
    """
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    utc = value.astimezone(UTC).replace(tzinfo=None, microsecond=0)
    return utc.isoformat(timespec="seconds") + "Z"


def _enable_wal(db: sqlite_utils.Database) -> None:
    """Switch the file to WAL, waiting while another process does the same.

    Changing the journal mode needs a lock that SQLite does not wait for (the busy
    timeout does not apply): two first runs on a new file would see "database is
    locked" at once. Retried for up to the busy timeout.
    """
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(_is_locked),
        wait=tenacity.wait_random(0.01, 0.1),
        stop=tenacity.stop_after_delay(BUSY_SECONDS),
        reraise=True,
    )
    for attempt in retrying:
        with attempt:
            db.enable_wal()


def _is_locked(error: BaseException) -> bool:
    return isinstance(error, sqlite3.OperationalError) and "locked" in str(error)


class Store:
    """One SQLite file. Open with `Store.open(path)`; every public method is one transaction."""

    def __init__(self, db: sqlite_utils.Database, path: str) -> None:
        self.db = db
        self.path = path

    @classmethod
    def open(cls, path: str | Path, *, read_only: bool = False) -> Store:
        """Return the store at `path`, created or migrated to the current schema; with
        `read_only`, the file as it is, opened so that nothing can be written (the web's
        reads: a reader never takes a write lock, nor creates the file).

        The one place the file is opened. Raises DigestError naming the file when it
        cannot be opened or is too new.
        """
        path = str(path)
        try:
            if read_only:
                conn = sqlite3.connect(
                    f"file:{path}?mode=ro", uri=True, timeout=10, check_same_thread=False
                )
                store = cls(sqlite_utils.Database(conn), path)
                store._check_version()
                return store
            if path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                path, timeout=BUSY_SECONDS, isolation_level=None, check_same_thread=False
            )
            db = sqlite_utils.Database(conn)
            if path != ":memory:":
                _enable_wal(db)
            conn.execute("PRAGMA foreign_keys = ON")
            store = cls(db, path)
            store._migrate()
        except sqlite3.DatabaseError as e:
            raise DigestError(f"{path}: cannot open the database: {e}") from None
        except OSError as e:  # its folder cannot be made: a file in the way, read-only volume
            why = f"{e.strerror}: {e.filename}"
            raise DigestError(f"{path}: cannot open the database: {why}") from None
        return store

    def close(self) -> None:
        self.db.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception."""
        conn = self.db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @property
    def schema_version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        """Bring the file to len(MIGRATIONS), all steps in one write transaction.

        The version is read again once the write lock is held: two processes that open
        a new file together both see version 0 first, and the second, once the first has
        committed, must find nothing left to do rather than create the tables again.
        """
        if self._check_version() == len(MIGRATIONS):
            return  # the common case: no write lock taken
        with self.transaction() as conn:
            version = self._check_version()
            for step in MIGRATIONS[version:]:
                step(self.db)
            conn.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")

    def _check_version(self) -> int:
        version = self.schema_version
        if version > len(MIGRATIONS):
            raise DigestError(
                f"{self.path}: schema version {version} is newer than this "
                f"papers-digest knows ({len(MIGRATIONS)}); upgrade papers-digest"
            )
        return version

    # -- runs ------------------------------------------------------------------------

    def store_listing(
        self,
        listing: Listing,
        *,
        started: datetime | None = None,
        reason_if_empty: str | None = None,
        backfilled: bool = False,
    ) -> RunResult:
        """Record a run of `listing`: insert unseen papers, refresh known ones, snapshot votes.

        Returns the RunResult. One transaction: on any error nothing is stored.
        A paper SQLite cannot hold (text that is not UTF-8, a time outside years 1-9999 in
        UTC, a count past 64 bits) is left out with why, in the run's `left_out` and its
        summary; the rest of the list is stored. A list none of whose papers can be
        stored is a failed run.
        `backfilled` marks the new papers as archive only (a past day's list): they are
        never mailed nor put in the feeds as new.
        """
        started = started or now_utc()
        finished = now_utc()
        rows, left_out = _storable(listing.papers)
        papers = [p for p, _ in rows]
        status, reason = RunStatus.OK, None
        if not listing.papers:
            status, reason = RunStatus.EMPTY, reason_if_empty
        elif not papers:
            status = RunStatus.FAILED
            reason = f"none of the {len(left_out)} papers listed could be stored"
        with self.transaction() as conn:
            run_id = self._insert_run(
                conn,
                started,
                listing.url,
                listing.source,
                status,
                list_date=listing.list_date,
                trending=listing.trending,
                reason=reason,
                error=reason if status == RunStatus.FAILED else None,
                left_out=left_out,
            )
            known = self._known_ids([p.id for p in papers])
            stamp = _iso(finished)
            new_rows = [
                row
                | {
                    "first_seen": stamp,
                    "first_run": run_id,
                    "last_seen": stamp,
                    "backfilled": int(backfilled),
                }
                for p, row in rows
                if p.id not in known
            ]
            if new_rows:
                self.db.table("papers").insert_all(new_rows)
            updated = 0
            for p, row in rows:
                if p.id in known:
                    updated += self._refresh(conn, row, stamp)
            self.db.table("upvotes").insert_all(
                (
                    {
                        "paper_id": p.id,
                        "run_id": run_id,
                        "at": stamp,
                        "upvotes": p.upvotes,
                        "comments": p.comments,
                        "github_stars": p.github_stars,
                    }
                    for p in papers
                ),
                replace=True,
            )
            conn.execute(
                "UPDATE runs SET finished = ?, seen = ?, new = ?, updated = ? WHERE id = ?",
                (stamp, len(listing.papers), len(new_rows), updated, run_id),
            )
        return RunResult(
            run_id=run_id,
            status=status,
            source=listing.source,
            url=listing.url,
            seen=len(listing.papers),
            new=len(new_rows),
            updated=updated,
            list_date=listing.list_date,
            reason=reason,
            new_ids=tuple(r["id"] for r in new_rows),
            left_out=tuple(left_out),
        )

    def record_failure(
        self,
        url: str,
        source: str,
        error: str,
        *,
        started: datetime | None = None,
        list_date: date | None = None,
    ) -> RunResult:
        """Record a run that stored nothing, with why. Returns its RunResult."""
        started = started or now_utc()
        with self.transaction() as conn:
            run_id = self._insert_run(
                conn,
                started,
                url,
                source,
                RunStatus.FAILED,
                list_date=list_date,
                error=error,
                reason=error,
            )
        return RunResult(
            run_id=run_id,
            status=RunStatus.FAILED,
            source=source,
            url=url,
            list_date=list_date,
            reason=error,
        )

    def _insert_run(
        self,
        conn: sqlite3.Connection,
        started: datetime,
        url: str,
        source: str,
        status: RunStatus,
        *,
        list_date: date | None = None,
        trending: bool = False,
        reason: str | None = None,
        error: str | None = None,
        left_out: list[tuple[str, str]] | None = None,
    ) -> int:
        cur = conn.execute(
            "INSERT INTO runs (started, finished, source_url, source, list_date, trending, "
            "status, reason, seen, new, updated, error, left_out) "
            "VALUES (?,?,?,?,?,?,?,?,0,0,0,?,?)",
            (
                _iso(started),
                _iso(now_utc()),
                url,
                source,
                list_date.isoformat() if list_date else None,
                int(trending),
                status,
                reason,
                error,
                # ASCII JSON: an id with a lone surrogate is written as its \u escape.
                json.dumps([{"id": i, "reason": r} for i, r in left_out]) if left_out else None,
            ),
        )
        return int(cur.lastrowid or 0)

    def _known_ids(self, ids: list[str]) -> set[str]:
        # Cost grows with the day's papers, not the archive: one primary-key probe each.
        known: set[str] = set()
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            known.update(
                r[0] for r in self.db.execute(f"SELECT id FROM papers WHERE id IN ({marks})", chunk)
            )
        return known

    def _refresh(self, conn: sqlite3.Connection, row: dict[str, Any], stamp: str) -> int:
        """Update what changes on a known paper; returns 1 if anything but last_seen changed.

        Counts and flags take the new value. Text and links take it when it is there: a
        paper first stored from a thinner source (the page's cards, with no abstract or
        authors) is filled in by the next full listing, and a field the new listing
        lacks never blanks a stored one.
        """
        # Each column's new value, as an SQL expression over the stored row and the paper.
        # The indexed text apart: the full-text trigger fires whenever those columns are
        # SET, so they are written only when they differ.
        text = {
            "title": ":title",
            "abstract": "COALESCE(NULLIF(:abstract, ''), abstract)",
            "authors": "CASE WHEN :authors = '[]' THEN authors ELSE :authors END",
        }
        rest = {
            "published_at": "COALESCE(:published_at, published_at)",
            "upvotes": ":upvotes",
            "comments": ":comments",
            "github_repo": "COALESCE(:github_repo, github_repo)",
            "github_stars": "COALESCE(:github_stars, github_stars)",
            "project_page": "COALESCE(:project_page, project_page)",
            "ai_summary": "COALESCE(:ai_summary, ai_summary)",
            "ai_keywords": "CASE WHEN :ai_keywords = '[]' THEN ai_keywords ELSE :ai_keywords END",
            "withdrawn": ":withdrawn",
            "organization": "COALESCE(:organization, organization)",
        }
        changed = 0
        for new in (text, rest):
            cur = conn.execute(
                f"UPDATE papers SET {', '.join(f'{c} = {e}' for c, e in new.items())} "
                f"WHERE id = :id AND ({', '.join(new)}) IS NOT ({', '.join(new.values())})",
                {k: row[k] for k in new} | {"id": row["id"]},
            )
            changed |= cur.rowcount
        conn.execute("UPDATE papers SET last_seen = ? WHERE id = ?", (stamp, row["id"]))
        return changed

    def runs(self, limit: int = 20) -> list[dict[str, Any]]:
        return list(self.db.query("SELECT * FROM runs ORDER BY id DESC LIMIT ?", [limit]))

    def last_run(self, *, kind: str | None = None) -> dict[str, Any] | None:
        """The latest run; with `kind`, the latest one marked with it (see mark_run)."""
        if kind is not None:
            row = self.db.execute("SELECT value FROM meta WHERE key = ?", [f"run:{kind}"])
            found = row.fetchone()
            if found is not None:
                rows = list(self.db.query("SELECT * FROM runs WHERE id = ?", [int(found[0])]))
                if rows:
                    return rows[0]
        rows = self.runs(1)
        return rows[0] if rows else None

    def mark_run(self, kind: str, run_id: int) -> None:
        """Remember `run_id` as the latest run of `kind` (e.g. "daily": the daily job's
        fetches, as opposed to a backfill of an old day)."""
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (f"run:{kind}", str(run_id)),
            )

    def days_done(self, today: date) -> set[date]:
        """Days whose final list we already hold: an ok run, or an empty one for a past
        day, that started after the day was over (UTC). A run during the day saw the
        list as it was then: papers added later, or a list "not filled yet" at 07:00,
        are still to fetch if the service was down for the rest of the day."""
        rows = self.db.execute(
            "SELECT list_date, status, MAX(started) FROM runs WHERE list_date IS NOT NULL "
            "AND trending = 0 AND status IN ('ok', 'empty') GROUP BY list_date, status"
        )
        done = set()
        for day, status, started in rows:
            d = date.fromisoformat(day)
            over = _iso(datetime(d.year, d.month, d.day, tzinfo=UTC) + timedelta(days=1))
            if (status == RunStatus.OK or d < today) and started >= over:
                done.add(d)
        return done

    # -- papers ----------------------------------------------------------------------

    def count_papers(self) -> int:
        """The number of stored papers, from the count the triggers keep (no scan)."""
        row = self.db.execute("SELECT n FROM counts WHERE name = 'papers'").fetchone()
        return int(row[0]) if row else 0

    def papers(
        self,
        *,
        since: date | None = None,
        search: str | None = None,
        ids: Iterable[str] | None = None,
        first_seen_since: datetime | None = None,
        new_only: bool = False,
        limit: int | None = None,
    ) -> list[StoredPaper]:
        """Return stored papers, newest first (by first seen, then upvotes).

        `search` is full-text over title, abstract, authors and AI keywords (store.fts:
        the FTS5 syntax is escaped). With a `limit`, a search walks the index newest
        first and stops at `limit` matches (papers are stored in first-seen order), then
        reads the whole run the cut falls in, so a common word costs the same at any
        archive size and the order is the one below.
        `new_only` leaves out backfilled papers (what the feeds show).
        """
        where: list[str] = []
        args: list[Any] = []
        if new_only:
            where.append("papers.backfilled = 0")
        if since:
            # Two index ranges, not an OR that scans the table (topics test, day pages).
            where.append(
                "papers.rowid IN (SELECT rowid FROM papers WHERE daily_date >= ? "
                "UNION SELECT rowid FROM papers WHERE first_seen >= ?)"
            )
            args += [since.isoformat(), _iso(datetime(since.year, since.month, since.day))]
        if first_seen_since:
            where.append("papers.first_seen >= ?")
            args.append(_iso(first_seen_since))
        if ids is not None:
            id_list = list(ids)
            where.append(f"papers.id IN ({','.join('?' * len(id_list))})")
            args += id_list
        if search and limit:
            sql = (
                "SELECT papers.* FROM papers_search JOIN papers "
                "ON papers.rowid = papers_search.rowid WHERE papers_search MATCH ?"
                + "".join(f" AND {w}" for w in where)
                + f" ORDER BY papers_search.rowid DESC LIMIT {int(limit)}"
            )
            match = match_or_nothing(search)
            rows = list(self.db.query(sql, [match, *args]))
            if len(rows) == limit:
                # The cut may fall inside one run's papers (one first_seen): take all of
                # that run's matches (a rowid range, so the FTS walk stays short) and let
                # the order decide, as the ORDER BY over every match did.
                edge = min(r["first_seen"] for r in rows)
                low, high = self.db.execute(
                    "SELECT min(rowid), max(rowid) FROM papers WHERE first_seen = ?", [edge]
                ).fetchone()
                tied = self.db.query(
                    "SELECT papers.* FROM papers_search JOIN papers "
                    "ON papers.rowid = papers_search.rowid WHERE papers_search MATCH ? "
                    "AND papers_search.rowid BETWEEN ? AND ?" + "".join(f" AND {w}" for w in where),
                    [match, low, high, *args],
                )
                rows = [r for r in rows if r["first_seen"] != edge] + list(tied)
            return [row_to_stored(r) for r in _newest_first(rows)[: int(limit)]]
        if search:
            where.append(
                "papers.rowid IN (SELECT rowid FROM papers_search WHERE papers_search MATCH ?)"
            )
            args.append(match_or_nothing(search))
        sql = "SELECT * FROM papers"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY first_seen DESC, daily_date DESC, upvotes DESC, id"
        if limit:
            sql += f" LIMIT {int(limit)}"
        return [row_to_stored(r) for r in self.db.query(sql, args)]

    def newest_first_seen(self) -> datetime | None:
        """When the newest paper that is not backfilled was first seen (an index probe)."""
        row = self.db.execute("SELECT max(first_seen) FROM papers WHERE backfilled = 0").fetchone()
        return datetime.fromisoformat(row[0].replace("Z", "+00:00")) if row and row[0] else None

    def papers_in_window(self, days: int) -> list[StoredPaper]:
        """Return the papers first seen within `days` days of the newest one, newest first.

        Backfilled papers are left out: a past day's list is archive, not news for a reader.
        """
        newest = self.newest_first_seen()
        if newest is None:
            return []
        return self.papers(first_seen_since=newest - timedelta(days=days), new_only=True)

    def papers_first_seen_between(self, start: datetime, end: datetime) -> list[StoredPaper]:
        rows = self.db.query(
            "SELECT * FROM papers WHERE first_seen >= ? AND first_seen < ? "
            "ORDER BY upvotes DESC, id",
            [_iso(start), _iso(end)],
        )
        return [row_to_stored(r) for r in rows]

    def papers_of_day(self, day: date) -> list[StoredPaper]:
        """Papers first seen on `day` (UTC), backfilled ones included."""
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        return self.papers_first_seen_between(start, start + timedelta(days=1))

    # -- digest editions -------------------------------------------------------------

    def claim_digest(
        self, day: date, *, today: date | None = None, now: datetime | None = None
    ) -> list[StoredPaper]:
        """Return the papers of `day`'s email, claiming them on the first call for that day.

        On `today` (the caller's date in the schedule's time zone; default UTC's), the
        first call takes every paper not yet in an edition, not backfilled, first seen at
        most CLAIM_DAYS ago; later calls for the same day return the same papers, so a
        re-run after a crash or a retry mails what the first attempt mailed. Papers
        fetched after the claim belong to the next day's email. Any other day claims
        nothing: a resend of a past day must not take what today's email is waiting for.
        """
        now = now or now_utc()
        today = today or now.date()
        if day == today:
            with self.transaction() as conn:
                claimed = conn.execute(
                    "SELECT 1 FROM papers WHERE digest_day = ? LIMIT 1", (day.isoformat(),)
                ).fetchone()
                if not claimed:
                    conn.execute(
                        "UPDATE papers SET digest_day = ? WHERE digest_day IS NULL "
                        "AND backfilled = 0 AND first_seen <= ? AND first_seen >= ?",
                        (day.isoformat(), _iso(now), _iso(now - timedelta(days=CLAIM_DAYS))),
                    )
        return self.digest_papers(day, today=today, now=now)

    def digest_papers(
        self, day: date, *, today: date | None = None, now: datetime | None = None
    ) -> list[StoredPaper]:
        """Return `day`'s email papers without claiming anything (previews, the archive).

        The edition when one was sent; for `today` or later, what a send now would take;
        for a past day without an edition, the papers first seen that day that no edition
        has mailed.
        """
        rows = list(
            self.db.query(
                "SELECT * FROM papers WHERE digest_day = ? ORDER BY upvotes DESC, id",
                [day.isoformat()],
            )
        )
        now = now or now_utc()
        today = today or now.date()
        if not rows and day < today:
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            rows = list(
                self.db.query(
                    "SELECT * FROM papers WHERE digest_day IS NULL AND backfilled = 0 "
                    "AND first_seen >= ? AND first_seen < ? ORDER BY upvotes DESC, id",
                    [_iso(start), _iso(start + timedelta(days=1))],
                )
            )
            return [row_to_stored(r) for r in rows]
        if not rows:
            rows = list(
                self.db.query(
                    "SELECT * FROM papers WHERE digest_day IS NULL AND backfilled = 0 "
                    "AND first_seen <= ? AND first_seen >= ? ORDER BY upvotes DESC, id",
                    [_iso(now), _iso(now - timedelta(days=CLAIM_DAYS))],
                )
            )
        return [row_to_stored(r) for r in rows]

    def edition_papers(self, first: date, last: date) -> dict[date, list[StoredPaper]]:
        """Return edition day -> its papers, for the editions from `first` to `last`
        (both included) that hold any: what a weekly reader's email is made of."""
        rows = self.db.query(
            "SELECT * FROM papers WHERE digest_day >= ? AND digest_day <= ? "
            "ORDER BY digest_day, upvotes DESC, id",
            [first.isoformat(), last.isoformat()],
        )
        out: dict[date, list[StoredPaper]] = {}
        for r in rows:
            out.setdefault(date.fromisoformat(r["digest_day"]), []).append(row_to_stored(r))
        return out

    def digest_days(self, limit: int = 60) -> list[tuple[date, int]]:
        """Return (day, papers) of the latest editions, newest first."""
        rows = self.db.execute(
            "SELECT digest_day, count(*) FROM papers WHERE digest_day IS NOT NULL "
            "GROUP BY digest_day ORDER BY digest_day DESC LIMIT ?",
            [limit],
        )
        return [(date.fromisoformat(d), int(n)) for d, n in rows]


def _newest_first(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows in Store.papers' order: first seen, list day, upvotes (all newest / most
    first), then id."""
    rows = sorted(rows, key=lambda r: r["id"])
    return sorted(
        rows,
        key=lambda r: (r["first_seen"], r["daily_date"] or "", r["upvotes"] or 0),
        reverse=True,
    )


def _json(values: tuple[str, ...]) -> str:
    return json.dumps(list(values), ensure_ascii=False)


def _paper_row(p: Paper) -> dict[str, Any]:
    return {
        "id": p.id,
        "title": p.title,
        "abstract": p.abstract,
        "authors": _json(p.authors),
        "published_at": _iso(p.published_at) if p.published_at else None,
        "daily_date": p.daily_date.isoformat() if p.daily_date else None,
        "upvotes": p.upvotes,
        "comments": p.comments,
        "organization": p.organization,
        "github_repo": p.github_repo,
        "github_stars": p.github_stars,
        "project_page": p.project_page,
        "thumbnail": p.thumbnail,
        "ai_summary": p.ai_summary,
        "ai_keywords": _json(p.ai_keywords),
        "withdrawn": int(p.withdrawn),
        "submitted_by": p.submitted_by,
    }


_SQLITE_INT = 2**63


def _storable(
    papers: Iterable[Paper],
) -> tuple[list[tuple[Paper, dict[str, Any]]], list[tuple[str, str]]]:
    """Split papers into (paper, row) pairs SQLite can hold and (id, why) for the rest.

    The parser already cleans what it reads; this is the last line for a Paper made any
    other way, so that one bad paper is left out instead of failing the whole run.
    """
    rows: list[tuple[Paper, dict[str, Any]]] = []
    left_out: list[tuple[str, str]] = []
    for p in papers:
        try:
            row = _paper_row(p)
        except OverflowError:
            left_out.append((p.id, f"published_at {p.published_at} is outside years 1-9999 in UTC"))
            continue
        problem = _row_problem(row)
        if problem:
            left_out.append((p.id, problem))
        else:
            rows.append((p, row))
    return rows, left_out


def _row_problem(row: dict[str, Any]) -> str | None:
    """Why SQLite cannot take `row` (text that is not UTF-8, an integer past 64 bits)."""
    for column, value in row.items():
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as e:
                return f"{column} is not valid text (character {e.start} is a lone surrogate)"
        elif isinstance(value, int) and not -_SQLITE_INT <= value < _SQLITE_INT:
            return f"{column} {value} does not fit in 64 bits"
    return None


def row_to_stored(r: dict[str, Any]) -> StoredPaper:
    """A `papers` row -> StoredPaper."""
    paper = Paper(
        id=r["id"],
        title=r["title"],
        abstract=r["abstract"] or "",
        authors=tuple(json.loads(r["authors"] or "[]")),
        published_at=datetime.fromisoformat(r["published_at"].replace("Z", "+00:00"))
        if r["published_at"]
        else None,
        daily_date=date.fromisoformat(r["daily_date"]) if r["daily_date"] else None,
        upvotes=r["upvotes"] or 0,
        comments=r["comments"] or 0,
        organization=r["organization"],
        github_repo=r["github_repo"],
        github_stars=r["github_stars"],
        project_page=r["project_page"],
        thumbnail=r["thumbnail"],
        ai_summary=r["ai_summary"],
        ai_keywords=tuple(json.loads(r["ai_keywords"] or "[]")),
        withdrawn=bool(r["withdrawn"]),
        submitted_by=r["submitted_by"],
    )
    return StoredPaper(
        paper=paper,
        first_seen=datetime.fromisoformat(r["first_seen"].replace("Z", "+00:00")),
        backfilled=bool(r.get("backfilled")),
    )
