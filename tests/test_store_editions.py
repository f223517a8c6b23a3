"""Digest editions: each new paper goes out in exactly one daily email.

Built from real API captures, stored at controlled times (time-machine), so the edges are
the ones a running service meets: a paper fetched after the morning send, a re-run of the
same day, a backfill, a first send after a long pause.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import time_machine

from digest.models import Listing
from digest.source.parse import parse_api
from digest.store import CLAIM_DAYS, Store
from tests.support.paths import REAL

DAY_A = REAL / "api-daily_papers-2024-03-12.json"
DAY_B = REAL / "api-daily_papers-2024-03-13.json"
DAY_C = REAL / "api-daily_papers-2024-03-15.json"


def listing(path: Path) -> Listing:
    return parse_api(path.read_bytes(), "https://huggingface.co/api/daily_papers")


def ids(papers: list) -> set[str]:
    return {sp.paper.id for sp in papers}


def store_at(store: Store, when: datetime, path: Path, **kw: object) -> set[str]:
    with time_machine.travel(when, tick=False):
        result = store.store_listing(listing(path), **kw)  # type: ignore[arg-type]
    return set(result.new_ids)


def test_paper_fetched_after_the_send_goes_in_the_next_email(store: Store) -> None:
    morning = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
    first = store_at(store, morning, DAY_A)
    edition_1 = store.claim_digest(date(2026, 3, 2), now=morning + timedelta(hours=2))
    assert ids(edition_1) == first

    # Fetched at 10:00, after the 08:00 send: not lost, not in today's edition.
    late = store_at(store, morning + timedelta(hours=4), DAY_B)
    assert late and not late & first
    again = store.claim_digest(date(2026, 3, 2), now=morning + timedelta(hours=5))
    assert ids(again) == first, "a re-run of the same day mails what the first attempt did"

    edition_2 = store.claim_digest(date(2026, 3, 3), now=morning + timedelta(days=1, hours=2))
    assert ids(edition_2) == late
    assert [d for d, _ in store.digest_days()] == [date(2026, 3, 3), date(2026, 3, 2)]


def test_preview_does_not_claim(store: Store) -> None:
    now = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
    new = store_at(store, now, DAY_A)
    assert ids(store.digest_papers(date(2026, 3, 2), now=now)) == new
    # Nothing was claimed: the real send still gets them all.
    assert ids(store.claim_digest(date(2026, 3, 2), now=now)) == new


def test_backfilled_papers_are_never_mailed_nor_in_the_feeds(store: Store) -> None:
    now = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
    old = store_at(store, now, DAY_A, backfilled=True)
    assert old
    assert store.claim_digest(date(2026, 3, 2), now=now) == []
    assert store.papers_in_window(7) == []
    fresh = store_at(store, now + timedelta(hours=1), DAY_C)
    assert ids(store.papers_in_window(7)) == fresh
    assert ids(store.claim_digest(date(2026, 3, 3), now=now + timedelta(days=1))) == fresh
    # Still searchable in the archive.
    assert old <= ids(store.papers())


def test_first_send_after_a_long_pause_takes_only_the_last_days(store: Store) -> None:
    start = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
    stale = store_at(store, start, DAY_A)
    recent = store_at(store, start + timedelta(days=CLAIM_DAYS + 3), DAY_B)
    edition = store.claim_digest(
        date(2026, 3, 2 + CLAIM_DAYS + 3), now=start + timedelta(days=CLAIM_DAYS + 3, hours=1)
    )
    assert ids(edition) == recent
    assert not ids(edition) & stale


def test_migration_keeps_fts_in_sync_and_refresh_leaves_it_alone(store: Store) -> None:
    now = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
    store_at(store, now, DAY_A)
    paper = listing(DAY_A).papers[0]
    word = paper.title.split()[0]
    assert paper.id in ids(store.papers(search=word))
    before = store.db.execute("SELECT count(*) FROM papers_search_data").fetchone()[0]
    store_at(store, now + timedelta(hours=2), DAY_A)  # every paper refreshed, last_seen moves
    after = store.db.execute("SELECT count(*) FROM papers_search_data").fetchone()[0]
    assert after == before, "refreshing votes and last_seen must not rewrite the FTS index"
    store.db.execute("UPDATE papers SET title = 'Zyzzyva quokka' WHERE id = ?", [paper.id])
    assert ids(store.papers(search="quokka")) == {paper.id}


def test_a_resend_of_a_past_day_takes_nothing_from_today(store: Store) -> None:
    # `digest send --date <last week>` to repair a missed day: today's papers stay for
    # today's email, and a day without an edition offers only papers no edition mailed.
    morning = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
    today = date(2026, 3, 2)
    waiting = store_at(store, morning, DAY_A)
    past = store.claim_digest(date(2026, 2, 20), today=today, now=morning)
    assert past == [] and store.digest_days() == []
    assert ids(store.claim_digest(today, today=today, now=morning)) == waiting
    # The UTC day those papers were first seen is a past day for a later send; its
    # fallback must not offer them again, they are in today's edition.
    later = morning + timedelta(days=1)
    assert store.digest_papers(today, today=date(2026, 3, 3), now=later) != []  # the edition
    assert store.claim_digest(date(2026, 3, 3), today=date(2026, 3, 3), now=later) == []


def test_evening_send_west_of_utc_does_not_repeat_papers(store: Store) -> None:
    # 20:00 in Los Angeles is 04:00 UTC the next day. A paper first seen at 03:00 UTC on
    # the 20th is mailed in the edition of the 19th (local); on the 20th (local), with
    # nothing new, the past-day fallback must not pick it up again.
    seen = datetime(2026, 8, 20, 3, 0, tzinfo=UTC)
    new = store_at(store, seen, DAY_A)
    evening_19 = datetime(2026, 8, 20, 4, 0, tzinfo=UTC)
    first = store.claim_digest(date(2026, 8, 19), today=date(2026, 8, 19), now=evening_19)
    assert ids(first) == new
    evening_20 = datetime(2026, 8, 21, 4, 0, tzinfo=UTC)
    second = store.claim_digest(date(2026, 8, 20), today=date(2026, 8, 20), now=evening_20)
    assert second == []
