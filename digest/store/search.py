"""The search box: full-text search over the whole archive, ranked, with the matched words
marked, a page at a time (SQLite FTS5, table papers_search; the query rules in store.fts).

Cost is bounded as the archive grows: matches are counted up to COUNTED, and the ranking
(bm25, title and keywords weighted above the abstract) is over the newest RANKED matches
only: ranking every match of a common word costs time in proportion to the archive
(220 ms for "model" at 200,000 papers). A rarer word has fewer matches than that, so its
results are ranked over the whole archive. What still grows: bm25 reads each term's
document count from the index, about 10 ms for a common word at 200,000 papers.

Marks come back as MARK_START / MARK_END around each matched word; the web escapes the
text and turns them into <mark>.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from digest.models import StoredPaper
from digest.store import Store, row_to_stored
from digest.store.fts import BadQuery, Query, parse_query

RANKED = 1000  # matches ranked, newest first: 50 pages of 20
COUNTED = 10_000  # matches counted; past that the page says "more than 10,000"
MARK_START, MARK_END = "\x02", "\x03"
# bm25 weights, in the table's column order: title, abstract, authors, ai_keywords.
_WEIGHTS = "10.0, 1.0, 3.0, 5.0"


@dataclass(frozen=True)
class Hit:
    """One result: the paper, its title and an abstract excerpt with the words marked."""

    paper: StoredPaper
    title: str
    excerpt: str


@dataclass(frozen=True)
class Results:
    """One page of a search."""

    query: Query
    hits: list[Hit]
    total: int  # the matches in the archive, up to COUNTED
    ranked: int  # the matches ranked and paged through (at most RANKED)
    page: int
    per_page: int

    @property
    def more(self) -> bool:
        """True when there are more than COUNTED matches (`total` stopped counting)."""
        return self.total > COUNTED

    @property
    def pages(self) -> int:
        return max(1, -(-self.ranked // self.per_page))


def search(store: Store, text: str, *, page: int = 1, per_page: int = 20) -> Results:
    """Return page `page` (from 1) of the papers matching `text`, best first.

    Raises BadQuery (store.fts) for a query that cannot run, with why, in words for the
    reader; a page past the last is empty, not an error.
    """
    query = parse_query(text)
    page = max(1, page)
    conn = store.db.conn
    try:
        # Counting stops past COUNTED: a common word's count would cost a pass over its
        # whole document list (10 ms for "language model" at 200,000 papers).
        total = conn.execute(
            "SELECT count(*) FROM (SELECT rowid FROM papers_search WHERE papers_search MATCH ? "
            "LIMIT ?)",
            [query.match, COUNTED + 1],
        ).fetchone()[0]
        offset = (page - 1) * per_page
        ranked = min(total, RANKED)
        if offset >= ranked:
            return Results(query, [], total, ranked, page, per_page)
        rowids = [
            r[0]
            for r in conn.execute(
                "SELECT rowid FROM (SELECT rowid, bm25(papers_search, "
                f"{_WEIGHTS}) AS score FROM papers_search WHERE papers_search MATCH ? "
                "ORDER BY rowid DESC LIMIT ?) ORDER BY score, rowid DESC LIMIT ? OFFSET ?",
                [query.match, RANKED, per_page, offset],
            )
        ]
        marks = ",".join("?" * len(rowids))
        marked = {
            r[0]: (r[1], r[2])
            for r in conn.execute(
                f"SELECT rowid, highlight(papers_search, 0, ?, ?), "
                f"snippet(papers_search, 1, ?, ?, '…', 40) FROM papers_search "
                f"WHERE papers_search MATCH ? AND rowid IN ({marks})",
                [MARK_START, MARK_END, MARK_START, MARK_END, query.match, *rowids],
            )
        }
        rows = {
            r["rowid"]: r
            for r in store.db.query(f"SELECT rowid, * FROM papers WHERE rowid IN ({marks})", rowids)
        }
    except sqlite3.OperationalError as e:  # the parser should make this impossible
        raise BadQuery(f"This search cannot be run ({e}); try plain words.") from None
    hits = []
    for rowid in rowids:
        row = dict(rows[rowid])
        row.pop("rowid", None)
        title, excerpt = marked.get(rowid, (row["title"], ""))
        hits.append(Hit(row_to_stored(row), title or row["title"], excerpt or ""))
    return Results(query, hits, total, ranked, page, per_page)
