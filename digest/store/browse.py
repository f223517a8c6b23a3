"""What the web pages and the JSON API read: editions, their days and months, one paper,
a page of papers newest first, the rising papers. Each read is bounded (an index range,
a probe or a LIMIT) so a page costs the same at 10,000 papers as at 200,000.

An edition is a day's email (papers.digest_day); `/` shows the latest one, or, before the
day's email went out, the papers it would take (Store.digest_papers).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from digest.models import StoredPaper
from digest.store import Store, _iso, row_to_stored


def version(store: Store) -> str:
    """A token that changes whenever what the pages show can change: a run (new papers,
    new votes) or an edition claimed. Three index probes."""
    run = store.db.execute("SELECT max(id) FROM runs").fetchone()[0]
    day = store.db.execute("SELECT max(digest_day) FROM papers").fetchone()[0]
    return f"{run or 0}.{day or '-'}.{store.count_papers()}"


def has_edition(store: Store, day: date) -> bool:
    row = store.db.execute(
        "SELECT 1 FROM papers WHERE digest_day = ? LIMIT 1", [day.isoformat()]
    ).fetchone()
    return row is not None


def latest_edition(store: Store, today: date) -> tuple[date | None, list[StoredPaper]]:
    """Return (day, papers) of what `/` shows: today's email (sent, or what a send now
    would take), else the newest edition; (None, []) for an archive without either."""
    papers = store.digest_papers(today, today=today)
    if papers:
        return today, papers
    row = store.db.execute("SELECT max(digest_day) FROM papers").fetchone()
    if not row or not row[0]:
        return None, []
    day = date.fromisoformat(row[0])
    return day, store.digest_papers(day, today=today)


def neighbours(store: Store, day: date) -> tuple[date | None, date | None]:
    """The editions just before and just after `day` (index probes), None at either end."""
    before = store.db.execute(
        "SELECT max(digest_day) FROM papers WHERE digest_day < ?", [day.isoformat()]
    ).fetchone()[0]
    after = store.db.execute(
        "SELECT min(digest_day) FROM papers WHERE digest_day > ?", [day.isoformat()]
    ).fetchone()[0]
    return (
        date.fromisoformat(before) if before else None,
        date.fromisoformat(after) if after else None,
    )


@dataclass(frozen=True)
class Month:
    """One month of the archive: its editions (day, papers), newest first."""

    year: int
    month: int
    days: list[tuple[date, int]]

    @property
    def first(self) -> date:
        return date(self.year, self.month, 1)


def months(store: Store) -> list[Month]:
    """Every edition, grouped by month, newest first (one pass over the digest_day index:
    a few thousand rows for ten years of editions)."""
    out: list[Month] = []
    for day, count in store.digest_days(limit=1_000_000):
        if not out or (out[-1].year, out[-1].month) != (day.year, day.month):
            out.append(Month(day.year, day.month, []))
        out[-1].days.append((day, count))
    return out


def paper(store: Store, paper_id: str) -> StoredPaper | None:
    rows = list(store.db.query("SELECT * FROM papers WHERE id = ?", [paper_id]))
    return row_to_stored(rows[0]) if rows else None


def papers_before(
    store: Store,
    *,
    before: int | None = None,
    since: date | None = None,
    until: date | None = None,
    match: str | None = None,
    limit: int = 50,
) -> list[tuple[int, StoredPaper]]:
    """Return up to `limit` (position, paper) newest first, strictly before position
    `before` (the API's cursor: a paper's rowid, which grows with first_seen).

    `since` / `until` bound the day the paper was on the Daily Papers list (inclusive);
    `match` is an FTS5 expression (store.fts.parse_query) over title, abstract, authors
    and AI keywords. The walk is newest first on the rowid, or on the FTS index for
    `match`, and stops at `limit`: a first page costs the same at any archive size.
    """
    where: list[str] = []
    args: list[Any] = []
    if before is not None:
        where.append("papers.rowid < ?")
        args.append(before)
    if since is not None:
        where.append("papers.daily_date >= ?")
        args.append(since.isoformat())
    if until is not None:
        where.append("papers.daily_date <= ?")
        args.append(until.isoformat())
    if match:
        sql = (
            "SELECT papers.rowid AS position, papers.* FROM papers_search JOIN papers "
            "ON papers.rowid = papers_search.rowid WHERE papers_search MATCH ?"
            + "".join(f" AND {w}" for w in where)
            + " ORDER BY papers_search.rowid DESC LIMIT ?"
        )
        args = [match, *args]
    else:
        sql = (
            "SELECT papers.rowid AS position, papers.* FROM papers"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY papers.rowid DESC LIMIT ?"
        )
    out = []
    for row in store.db.query(sql, [*args, limit]):
        position = int(row.pop("position"))
        out.append((position, row_to_stored(row)))
    return out


@dataclass(frozen=True)
class Rising:
    """A paper whose upvotes grew, by how many, over which snapshots."""

    paper: StoredPaper
    gain: int
    since: datetime  # the snapshot the gain is counted from


def rising(store: Store, *, hours: int = 24, limit: int = 10) -> list[Rising]:
    """The papers whose upvotes grew most in the `hours` before the newest snapshot.

    A paper's gain is its newest count in that window minus its count at the last
    snapshot taken before the window (or, for a paper first seen inside it, its first
    snapshot there): a paper needs two snapshots to rise. Counted up to the newest
    snapshot, not the wall clock, so an archive whose fetches stopped still answers.
    Reads only the window's snapshots (index upvotes_at, named: left to itself the planner
    walks the whole primary key for the GROUP BY, 26 ms at 200,000 papers).
    """
    newest = store.db.execute("SELECT max(at) FROM upvotes").fetchone()[0]
    if not newest:
        return []
    end = datetime.fromisoformat(newest.replace("Z", "+00:00"))
    cut = _iso(end - timedelta(hours=hours))
    rows = list(
        store.db.query(
            "WITH w AS (SELECT paper_id, max(upvotes) AS hi, min(at) AS first_at "
            "  FROM upvotes INDEXED BY upvotes_at WHERE at > ? GROUP BY paper_id), "
            "b AS (SELECT w.paper_id, w.hi, "
            "  COALESCE((SELECT u.at FROM upvotes u WHERE u.paper_id = w.paper_id "
            "            AND u.at <= ? ORDER BY u.at DESC LIMIT 1), w.first_at) AS base_at "
            "  FROM w) "
            "SELECT p.*, b.hi - (SELECT u.upvotes FROM upvotes u WHERE u.paper_id = b.paper_id "
            "  AND u.at = b.base_at ORDER BY u.run_id LIMIT 1) AS gain, b.base_at AS base_at "
            "FROM b JOIN papers p ON p.id = b.paper_id "
            "WHERE gain > 0 ORDER BY gain DESC, p.upvotes DESC, p.id LIMIT ?",
            [cut, cut, limit],
        )
    )
    out = []
    for r in rows:
        gain, base_at = int(r.pop("gain")), r.pop("base_at")
        since = datetime.fromisoformat(base_at.replace("Z", "+00:00"))
        out.append(Rising(row_to_stored(r), gain, since))
    return out
