"""The store: the differ, runs, upvote snapshots, crash safety, schema, search."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import subprocess
import sys
import textwrap
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from digest.errors import DigestError
from digest.models import Listing, Paper
from digest.source.parse import parse_api, parse_page, parse_page_cards
from digest.store import MIGRATIONS, Store
from tests.conftest import PAGE_2024_08_01, REAL, ROOT
from tests.test_parse import PAGE_URL, api_url_of, raw_items

API_0801 = REAL / "api-daily_papers-2024-08-01.reserialised.json"
API_0802 = REAL / "api-daily_papers-2024-08-02.reserialised.json"


def page_0801() -> Listing:
    return parse_page(PAGE_2024_08_01.read_bytes(), PAGE_URL)


def api(path: Path) -> Listing:
    return parse_api(path.read_bytes(), api_url_of(path))


def counts(store: Store) -> tuple[int, int, int]:
    """(runs, papers, upvote snapshots)."""
    return tuple(  # type: ignore[return-value]
        store.db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
        for t in ("runs", "papers", "upvotes")
    )


def test_same_listing_twice(store: Store) -> None:
    listing = page_0801()
    first = store.store_listing(listing)
    second = store.store_listing(listing)
    assert (first.status, first.seen, first.new) == ("ok", 13, 13)
    assert set(first.new_ids) == {p.id for p in listing.papers}
    assert (second.seen, second.new, second.updated, second.new_ids) == (13, 0, 0, ())
    assert store.count_papers() == 13
    assert counts(store) == (2, 13, 26)  # one snapshot per paper per run


def test_overlapping_lists_store_only_the_new(store: Store) -> None:
    # Real overlap: the API capture of 2024-08-01 (11 papers, taken earlier) is a
    # subset of the page of the same day (13 papers, more upvotes).
    early, late = api(API_0801), page_0801()
    r1 = store.store_listing(early)
    r2 = store.store_listing(late)
    early_ids = {p.id for p in early.papers}
    assert r1.new == len(early.papers)
    assert set(r2.new_ids) == {p.id for p in late.papers} - early_ids
    assert r2.new == len(late.papers) - len(early.papers)
    changed = {p.id for p in late.papers if p.id in early_ids} - {
        p.id for p in early.papers if p.upvotes == _by_id(late)[p.id].upvotes
    }
    assert changed, "the later capture should have different upvotes"
    assert r2.updated == len(changed)
    # The next day only adds its own papers.
    r3 = store.store_listing(api(API_0802))
    assert r3.new == len({p.id for p in api(API_0802).papers} - {p.id for p in late.papers})
    assert store.count_papers() == len(late.papers) + r3.new


def _by_id(listing: Listing) -> dict[str, Paper]:
    return {p.id: p for p in listing.papers}


def test_upvotes_refreshed_and_snapshotted_per_run(store: Store) -> None:
    early, late = api(API_0801), page_0801()
    r1 = store.store_listing(early)
    r2 = store.store_listing(late)
    late_votes = {p.id: p.upvotes for p in late.papers}
    stored = {sp.paper.id: sp for sp in store.papers()}
    for p in early.papers:
        assert stored[p.id].paper.upvotes == late_votes[p.id]
        snaps = dict(
            store.db.execute(
                "SELECT run_id, upvotes FROM upvotes WHERE paper_id = ? ORDER BY run_id", [p.id]
            ).fetchall()
        )
        assert snaps == {r1.run_id: p.upvotes, r2.run_id: late_votes[p.id]}
    # first_seen is when we first saw it, not refreshed by later runs.
    first = store.papers(ids=[early.papers[0].id])[0].first_seen
    store.store_listing(late)
    assert store.papers(ids=[early.papers[0].id])[0].first_seen == first


class Boom(Exception):
    pass


# The fault: a temporary trigger (this connection only) on the run's last write, the UPDATE
# of runs.finished just before COMMIT, calls into Python, which fails or dies there.
LAST_WRITE_FAILS = (
    "CREATE TEMP TRIGGER fail_last_write AFTER UPDATE OF finished ON runs "
    "BEGIN SELECT fault((SELECT count(*) FROM runs)); END"
)


def test_exception_before_commit_stores_nothing(store: Store) -> None:
    base = store.store_listing(api(API_0801))
    before = counts(store)
    votes_before = {sp.paper.id: sp.paper.upvotes for sp in store.papers()}
    runs_seen: list[int] = []

    def fault(runs: int) -> None:
        # Inside the transaction the run is written (papers and snapshots with it).
        runs_seen.append(runs)
        raise Boom

    store.db.conn.create_function("fault", 1, fault)
    store.db.execute(LAST_WRITE_FAILS)
    with pytest.raises(sqlite3.OperationalError, match="user-defined function raised"):
        store.store_listing(page_0801())
    assert runs_seen == [before[0] + 1]
    assert counts(store) == before
    assert {sp.paper.id: sp.paper.upvotes for sp in store.papers()} == votes_before
    assert store.last_run()["id"] == base.run_id  # type: ignore[index]
    # The store is usable afterwards.
    store.db.execute("DROP TRIGGER temp.fail_last_write")
    assert store.store_listing(page_0801()).new == 2


def test_process_killed_before_commit_stores_nothing(tmp_path: Path) -> None:
    db = tmp_path / "crash.db"
    s = Store.open(db)
    s.store_listing(api(API_0801))
    before = counts(s)
    s.close()
    script = textwrap.dedent(
        f"""
        import os
        from digest.source.parse import parse_page
        from digest.store import Store
        store = Store.open({str(db)!r})
        listing = parse_page(open({str(PAGE_2024_08_01)!r}, "rb").read(), "page")
        store.db.conn.create_function("fault", 1, lambda runs: os._exit(17))
        store.db.execute({LAST_WRITE_FAILS!r})
        store.store_listing(listing)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True)
    assert proc.returncode == 17, proc.stderr.decode()
    s = Store.open(db)
    try:
        assert counts(s) == before
        assert s.store_listing(page_0801()).new == 2  # not locked, not half-written
    finally:
        s.close()


def test_wal_and_schema_version(tmp_path: Path) -> None:
    s = Store.open(tmp_path / "w.db")
    try:
        assert s.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert s.schema_version == len(MIGRATIONS)
    finally:
        s.close()
    # Opening again migrates nothing and keeps the data.
    s = Store.open(tmp_path / "w.db")
    assert s.schema_version == len(MIGRATIONS)
    s.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "future.db"
    Store.open(db).close()
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(DigestError) as err:
        Store.open(db)
    assert str(db) in str(err.value)
    assert "newer" in str(err.value)


def test_not_a_database_is_named(tmp_path: Path) -> None:
    db = tmp_path / "junk.db"
    db.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(DigestError, match=r"junk\.db"):
        Store.open(db)


def test_search_by_author_and_abstract_word(store: Store) -> None:
    listing = page_0801()
    store.store_listing(listing)
    target = next(p for p in listing.papers if p.authors and p.abstract)
    # An author name and an abstract word that only this paper has.
    others = [p for p in listing.papers if p.id != target.id]
    author = next(
        a for a in target.authors if not any(a in o.authors for o in others) and a.isascii()
    )
    word = next(
        w
        for w in target.abstract.split()
        if w.isalpha() and len(w) > 6 and not any(w.lower() in o.abstract.lower() for o in others)
    )
    assert [sp.paper.id for sp in store.papers(search=author)] == [target.id]
    assert [sp.paper.id for sp in store.papers(search=word)] == [target.id]
    assert [sp.paper.id for sp in store.papers(search=word.upper())] == [target.id]
    assert store.papers(search="zzqxnotaword") == []


@pytest.mark.parametrize(
    "hostile", ['C++ "AND', '"', "AND", "NEAR(", "*", "title:", "-x", "'; DROP TABLE papers;--"]
)
def test_search_survives_hostile_input(store: Store, hostile: str) -> None:
    store.store_listing(page_0801())
    found = store.papers(search=hostile)
    assert isinstance(found, list)
    assert store.count_papers() == 13


def test_record_failure_stores_a_failed_run_and_no_papers(store: Store) -> None:
    result = store.record_failure(PAGE_URL, "page", "layout: no DailyPapers div")
    assert result.status == "failed"
    run = store.last_run()
    assert run is not None
    assert (run["status"], run["source_url"], run["seen"], run["new"]) == (
        "failed",
        PAGE_URL,
        0,
        0,
    )
    assert "no DailyPapers div" in run["error"]
    assert store.count_papers() == 0
    assert "nothing stored" in result.summary()


def test_empty_list_is_a_run_with_a_reason(store: Store) -> None:
    empty = Listing(papers=(), url=PAGE_URL, source="page", list_date=date(2024, 8, 3))
    result = store.store_listing(empty, reason_if_empty="no papers on weekends")
    assert (result.status, result.seen, result.new) == ("empty", 0, 0)
    assert "no papers on weekends" in result.summary()
    assert store.last_run()["reason"] == "no papers on weekends"  # type: ignore[index]


def test_days_done(store: Store) -> None:
    today = date(2024, 8, 5)

    def listing(day: date, papers: bool = True, trending: bool = False) -> Listing:
        return dataclasses.replace(
            page_0801(),
            list_date=day,
            papers=page_0801().papers if papers else (),
            trending=trending,
        )

    ok_day, empty_past, empty_today, failed_day, trending_day = (
        today - timedelta(days=4),
        today - timedelta(days=2),
        today,
        today - timedelta(days=1),
        today - timedelta(days=3),
    )
    store.store_listing(listing(ok_day))
    store.store_listing(listing(empty_past, papers=False))
    store.store_listing(listing(empty_today, papers=False))
    store.record_failure(PAGE_URL, "page", "network: timeout", list_date=failed_day)
    store.store_listing(listing(trending_day, trending=True))
    # An ok run holds the day; an empty past day is done (weekend, holiday); today's
    # empty list may still fill; a failure or a trending list says nothing about the day.
    assert store.days_done(today) == {ok_day, empty_past}
    # Tomorrow, today's empty list counts as done.
    assert store.days_done(today + timedelta(days=1)) == {ok_day, empty_past, empty_today}


def test_absurd_counts_from_the_source_still_store(store: Store) -> None:
    # RECONSTRUCTED item: numbers SQLite cannot hold (or NaN) are read as 0, not a crash
    # at insert time that would lose the whole run.
    item = raw_items(API_0801)[0]
    item["paper"]["upvotes"] = 10**30
    item["paper"]["githubStars"] = float("nan")
    item["numComments"] = float("inf")
    listing = parse_api(json.dumps([item]), "reconstructed")
    assert store.store_listing(listing).new == 1
    (stored,) = store.papers()
    assert (stored.paper.upvotes, stored.paper.github_stars, stored.paper.comments) == (0, 0, 0)


def test_a_fuller_listing_fills_in_what_a_thinner_one_lacked(store: Store) -> None:
    # The page's cards (the DOM fallback) carry no abstract or authors; the next full
    # listing of the same day must fill them in, and the full-text index with them.
    html = PAGE_2024_08_01.read_bytes()
    cards = parse_page_cards(html, PAGE_URL)
    full = parse_page(html, PAGE_URL)
    store.store_listing(cards)
    llama = "2407.21783"
    assert get(store, llama).abstract == "" and get(store, llama).authors == ()
    result = store.store_listing(full)
    assert result.updated == len(full.papers)
    paper = get(store, llama)
    assert paper.abstract.startswith("Modern artificial intelligence")
    assert paper.authors
    assert llama in {sp.paper.id for sp in store.papers(search="foundation")}

    # A later thinner listing blanks nothing, and a change in AI keywords alone counts.
    store.store_listing(cards)
    assert get(store, llama).abstract.startswith("Modern artificial intelligence")
    item = {p.id: p for p in full.papers}[llama]
    changed = dataclasses.replace(item, ai_keywords=("new keyword",))
    again = store.store_listing(dataclasses.replace(full, papers=(changed,)))
    assert again.updated == 1 and get(store, llama).ai_keywords == ("new keyword",)
    assert store.store_listing(dataclasses.replace(full, papers=(changed,))).updated == 0


def get(store: Store, paper_id: str) -> Paper:
    (found,) = store.papers(ids=[paper_id])
    return found.paper


def test_a_run_during_the_day_does_not_close_it(store: Store) -> None:
    # 07:00 UTC: the list is "not filled yet" (empty); the service is then down for the
    # rest of the day. A backfill the day after must fetch it, not skip it as done.
    day = date(2024, 8, 1)
    morning = datetime(2024, 8, 1, 7, 0, tzinfo=UTC)
    empty = dataclasses.replace(page_0801(), list_date=day, papers=())
    store.store_listing(empty, started=morning, reason_if_empty="not filled yet")
    store.store_listing(dataclasses.replace(page_0801(), list_date=day), started=morning)
    assert day not in store.days_done(day + timedelta(days=1))
    store.store_listing(
        dataclasses.replace(page_0801(), list_date=day), started=morning + timedelta(days=1)
    )
    assert day in store.days_done(day + timedelta(days=1))
