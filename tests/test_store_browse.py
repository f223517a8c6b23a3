"""The web's reads stay flat as the archive grows: every statement behind `digest papers
--search`, `digest topics test`, /healthz's count, the fetch's newest-paper lookup and
the reading pages is an index probe or range (checked on SQLite's own query plans, not
on timings), the cached paper count stays right, and the rising papers are the gains
worked out by hand."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import time_machine

from digest.models import Listing, Paper
from digest.store import Store, browse
from digest.store.runs import health_facts
from digest.store.search import search
from tests.support.archive import DAYS, listing


def fill(store: Store, days: int = 12) -> None:
    """`days` days of real papers under fresh ids, one fetch at 06:00 each, as editions."""
    pool = [p for path in DAYS for p in listing(path).papers]
    start = date(2026, 3, 2)
    for d in range(days):
        day = start + timedelta(days=d)
        papers = tuple(
            replace(p, id=f"9{d:04d}.{i:05d}", daily_date=day) for i, p in enumerate(pool[:20])
        )
        at = datetime(day.year, day.month, day.day, 6, tzinfo=UTC)
        with time_machine.travel(at, tick=False):
            store.store_listing(Listing(papers, url=f"test://{day}", source="api"))
        store.claim_digest(day, today=day, now=at + timedelta(hours=1))


def plans(store: Store, work: Callable[[], Any]) -> list[tuple[str, str]]:
    """(statement, its query plan) for every SELECT `work` runs on the store."""
    statements: list[str] = []
    store.db.conn.set_trace_callback(statements.append)
    try:
        work()
    finally:
        store.db.conn.set_trace_callback(None)
    out = []
    for sql in statements:
        if not sql.lstrip().upper().startswith(("SELECT", "WITH")):
            continue
        # The trace has the values in place: the plan is the one those values get.
        rows = store.db.conn.execute(f"EXPLAIN QUERY PLAN {sql}").fetchall()
        out.append((sql, " | ".join(r[-1] for r in rows)))
    return out


READS: dict[str, Callable[[Store], Any]] = {
    "papers --search (CLI)": lambda s: s.papers(search="model", limit=50),
    "topics test window": lambda s: s.papers(since=date(2026, 3, 10)),
    "paper count (/healthz, CLI)": lambda s: s.count_papers(),
    "newest paper (every fetch)": lambda s: s.newest_first_seen(),
    "feed window (every fetch)": lambda s: s.papers_in_window(3),
    "version (every page)": browse.version,
    "latest edition (/)": lambda s: browse.latest_edition(s, date(2026, 3, 13)),
    "day page": lambda s: (
        s.digest_papers(date(2026, 3, 5)),
        browse.neighbours(s, date(2026, 3, 5)),
    ),
    "rising": browse.rising,
    "api first page": lambda s: browse.papers_before(s, limit=20),
    "api next page": lambda s: browse.papers_before(s, before=100, limit=20),
    "api search": lambda s: browse.papers_before(s, match='"model"', limit=20),
    "one paper": lambda s: browse.paper(s, "90003.00004"),
    "search page": lambda s: search(s, "model agent*"),
}


# Reads whose result is a few rows of a large set: a sort (a temporary B-tree) would be a
# sort of that whole set (every match of a word, every paper not backfilled), so none.
NO_SORT = {
    "papers --search (CLI)",
    "paper count (/healthz, CLI)",
    "newest paper (every fetch)",
    "version (every page)",
    "api first page",
    "api next page",
    "api search",
    "one paper",
}


@pytest.mark.parametrize("name", list(READS))
def test_no_read_scans_a_table(store: Store, name: str) -> None:
    fill(store)
    found = plans(store, lambda: READS[name](store))
    assert found, "the read ran statements"
    for sql, plan in found:
        for step in plan.split(" | "):
            # "SCAN papers" / "SCAN upvotes" walk the whole table (or, with USING INDEX
            # and no range, a whole index); a SEARCH is a probe or a range. Bounded
            # anyway: the FTS index's own walk, a walk down the rowid that stops at a
            # LIMIT, a scan of a LIMITed subquery or of the few rows a CTE kept.
            walk_to_limit = step == "SCAN papers" and "ORDER BY papers.rowid DESC LIMIT" in sql
            bounded = step.startswith(
                ("SCAN papers_search VIRTUAL TABLE", "SCAN w", "SCAN b", "SCAN (subquery")
            )
            scans_all = step.startswith("SCAN ") and not (walk_to_limit or bounded)
            assert not scans_all, f"{name}: {step}\n{sql}"
            if name in NO_SORT:
                assert "TEMP B-TREE" not in step, f"{name}: {step}\n{sql}"


def test_the_cached_count_follows_inserts_and_deletes(store: Store) -> None:
    assert store.count_papers() == 0
    fill(store, days=3)
    real = store.db.execute("SELECT count(*) FROM papers").fetchone()[0]
    assert store.count_papers() == real == 60
    fill(store, days=3)  # the same ids again: nothing new
    assert store.count_papers() == 60
    store.db.execute("DELETE FROM upvotes WHERE paper_id = '90000.00000'")
    store.db.execute("DELETE FROM papers WHERE id = '90000.00000'")
    assert store.count_papers() == 59
    assert health_facts(store.path).papers == 59


def snapshot(store: Store, when: datetime, votes: dict[str, int]) -> None:
    papers = tuple(Paper(id=i, title=f"Paper {i}", upvotes=v) for i, v in votes.items())
    with time_machine.travel(when, tick=False):
        store.store_listing(Listing(papers, url="test://votes", source="api"))


def test_rising_counts_from_the_last_snapshot_before_the_day(store: Store) -> None:
    now = datetime(2026, 3, 10, 12, tzinfo=UTC)
    snapshot(store, now - timedelta(hours=30), {"old": 10, "flat": 50})
    snapshot(store, now - timedelta(hours=20), {"old": 15, "flat": 50, "new": 5})
    snapshot(store, now - timedelta(hours=2), {"new": 12, "one": 99})
    snapshot(store, now, {"old": 40, "flat": 50})
    rising = browse.rising(store)
    assert [(r.paper.paper.id, r.gain) for r in rising] == [("old", 30), ("new", 7)]
    # "old" from its snapshot 30 hours ago (the last before the day); "new" from its
    # first; "flat" gained nothing; "one" has a single snapshot.
    assert rising[0].since == now - timedelta(hours=30)
    assert rising[1].since == now - timedelta(hours=20)
    assert browse.rising(store, limit=1)[0].paper.paper.id == "old"
    assert browse.rising(Store.open(":memory:")) == []


def test_the_cli_search_reads_ai_keywords_and_walks_newest_first(store: Store) -> None:
    # `digest papers --search` (Store.papers with a limit): keywords are indexed, and the
    # walk down the index gives the newest matches, as the ORDER BY did before.
    fill(store, days=4)
    tagged = Paper(id="2612.00001", title="Plain title", ai_keywords=("zyzzyvaword",))
    snapshot(store, datetime(2026, 3, 9, 6, tzinfo=UTC), {})
    with time_machine.travel(datetime(2026, 3, 9, 6, tzinfo=UTC), tick=False):
        store.store_listing(Listing((tagged,), url="test://tagged", source="api"))
    assert [sp.paper.id for sp in store.papers(search="zyzzyvaword", limit=5)] == [tagged.id]
    walked = store.papers(search="model", limit=7)
    everything = store.papers(search="model")
    assert [sp.paper.id for sp in walked] == [sp.paper.id for sp in everything[:7]]
