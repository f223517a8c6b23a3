"""Backfill over past days from real API captures served on 127.0.0.1: bounded
concurrency (measured by the server), resumable, one progress call per day fetched."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import pytest

from digest.config import BackfillConfig
from digest.errors import DigestError
from digest.jobs import backfill
from digest.models import RunResult
from digest.store import Store
from tests.support.cli import process_env, run_digest
from tests.support.hfserver import (
    HFServer,
    Reply,
    fast_fetcher,
    local_config,
)
from tests.support.paths import PAGE_2024_08_01, REAL

GOOD = [date(2024, 3, 25), date(2024, 3, 26), date(2024, 3, 27), date(2024, 3, 28)]
BAD = date(2024, 3, 29)  # a real capture exists; the server 500s on it until told otherwise
TODAY = date(2024, 4, 5)
HOLD = 0.15  # each answer waits this long, so requests in flight overlap if they can


def capture(day: date) -> bytes:
    return (REAL / f"api-daily_papers-{day.isoformat()}.json").read_bytes()


def ids_of(day: date) -> set[str]:
    return {i["paper"]["id"] for i in json.loads(capture(day))}


def serve_days(server: HFServer, days: list[date]) -> None:
    for day in days:
        server.route("/api/daily_papers", Reply(capture(day), hold=HOLD), query={"date": str(day)})


def test_backfill_is_bounded_resumable_and_counts_right(hf_server: HFServer, store: Store) -> None:
    serve_days(hf_server, GOOD)
    hf_server.route(
        "/api/daily_papers", Reply(b"boom", status=500, hold=HOLD), query={"date": str(BAD)}
    )
    config = local_config(hf_server)
    assert config.backfill.concurrency == 2
    calls: list[tuple[date, RunResult]] = []

    first = backfill(
        config,
        store,
        fast_fetcher(retries=1),
        GOOD[0],
        BAD,
        today=TODAY,
        progress=lambda d, r: calls.append((d, r)),
    )

    assert hf_server.max_in_flight == 2  # overlapped, but never more than configured
    assert sorted(d for d, _ in calls) == [*GOOD, BAD]  # once per day
    want = set().union(*(ids_of(d) for d in GOOD))
    assert {p.paper.id for p in store.papers()} == want
    assert [r.list_date for r in first.failed] == [BAD]
    assert len(hf_server.requests_to("/api/daily_papers")) == len(GOOD) + 2  # BAD: 1 retry
    assert first.summary() == (
        f"backfill: 5 days, 0 already stored and skipped, 5 fetched (0 empty, 1 failed): "
        f"seen {len(want)}, new {len(want)}; failed: {BAD}"
    )
    reasons = [r["reason"] for r in store.runs() if r["status"] == "failed"]
    assert len(reasons) == 1 and "HTTP 500" in reasons[0] and str(BAD) in reasons[0]

    # The server recovers; the second backfill only asks for the day that failed.
    serve_days(hf_server, [BAD])
    hf_server.reset_log()
    calls.clear()
    second = backfill(
        config,
        store,
        fast_fetcher(retries=1),
        GOOD[0],
        BAD,
        today=TODAY,
        progress=lambda d, r: calls.append((d, r)),
    )
    assert {r.query["date"] for r in hf_server.requests} == {str(BAD)}
    assert [d for d, _ in calls] == [BAD]
    assert second.failed == []
    new = len(ids_of(BAD) - want)
    assert second.summary() == (
        f"backfill: 5 days, 4 already stored and skipped, 1 fetched (0 empty, 0 failed): "
        f"seen {len(ids_of(BAD))}, new {new}"
    )
    assert store.count_papers() == len(want) + new
    assert store.days_done(TODAY) >= {*GOOD, BAD}


def test_concurrency_one_means_one_in_flight(hf_server: HFServer, store: Store) -> None:
    serve_days(hf_server, GOOD[:3])
    config = local_config(hf_server)
    config = type(config)(source=config.source, backfill=BackfillConfig(concurrency=1))
    result = backfill(config, store, fast_fetcher(), GOOD[0], GOOD[2], today=TODAY)
    assert hf_server.max_in_flight == 1
    assert len(result.runs) == 3 and result.failed == []


def test_weekend_days_are_empty_and_not_asked_again(hf_server: HFServer, store: Store) -> None:
    saturday, sunday = date(2024, 3, 23), date(2024, 3, 24)
    for day in (saturday, sunday):
        hf_server.route("/api/daily_papers", Reply.json([]), query={"date": str(day)})
    result = backfill(local_config(hf_server), store, fast_fetcher(), saturday, sunday, today=TODAY)
    assert [r.status for r in result.runs] == ["empty", "empty"]
    assert all(r.reason and "weekend" in r.reason for r in result.runs)
    assert "(2 empty, 0 failed)" in result.summary()
    hf_server.reset_log()
    again = backfill(local_config(hf_server), store, fast_fetcher(), saturday, sunday, today=TODAY)
    assert again.skipped == 2 and hf_server.requests == []


def test_never_asks_for_a_day_after_today(hf_server: HFServer, store: Store) -> None:
    serve_days(hf_server, [GOOD[0]])
    today = GOOD[0]
    result = backfill(
        local_config(hf_server),
        store,
        fast_fetcher(),
        today,
        today + timedelta(days=5),
        today=today,
    )
    assert result.days == 1
    assert {r.query["date"] for r in hf_server.requests} == {str(today)}
    with pytest.raises(DigestError, match="after --until"):
        backfill(local_config(hf_server), store, fast_fetcher(), today + timedelta(1), today=today)


def test_an_interrupted_backfill_stops_fetching(hf_server: HFServer, store: Store) -> None:
    days = [GOOD[0] + timedelta(days=n) for n in range(20)]
    for day in days:
        hf_server.route("/api/daily_papers", Reply.json([], hold=0.05), query={"date": str(day)})

    def interrupt(_day: date, _result: RunResult) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        backfill(
            local_config(hf_server),
            store,
            fast_fetcher(),
            days[0],
            days[-1],
            today=TODAY,
            progress=interrupt,
        )
    # The day stored stays stored; the days not yet started are not fetched for nothing.
    assert len(store.runs()) == 1
    assert len(hf_server.requests) <= 4


def test_backfill_from_date_pages(hf_server: HFServer, store: Store) -> None:
    page = PAGE_2024_08_01.read_bytes()
    hf_server.route("/papers/date/2024-08-01", Reply(page))
    day = date(2024, 8, 1)
    result = backfill(
        local_config(hf_server),
        store,
        fast_fetcher(),
        day,
        day,
        today=TODAY.replace(month=8),
        source="page",
    )
    assert [(r.source, r.seen, r.list_date) for r in result.runs] == [("page", 13, day)]
    assert [r.path for r in hf_server.requests] == ["/papers/date/2024-08-01"]


def test_cli_backfill_prints_the_summary_and_exits_1_on_a_failed_day(
    hf_server: HFServer, tmp_path: Path
) -> None:
    serve_days(hf_server, GOOD[:2])  # GOOD[2] is not served: 404
    (tmp_path / "config.toml").write_text("[source]\nretries = 0\n")
    env = process_env(
        DIGEST_DB=str(tmp_path / "cli.db"),
        DIGEST_SOURCE_URL=hf_server.url("/papers"),
        DIGEST_API_URL=hf_server.url("/api/daily_papers"),
    )
    since = ["backfill", "--since", str(GOOD[0])]
    done = run_digest(None, *since, "--until", str(GOOD[2]), cwd=tmp_path, env=env)
    assert done.returncode == 1, done.stderr
    seen = len(ids_of(GOOD[0]) | ids_of(GOOD[1]))
    assert done.stdout.strip() == (
        f"backfill: 3 days, 0 already stored and skipped, 3 fetched (0 empty, 1 failed): "
        f"seen {seen}, new {seen}; failed: {GOOD[2]}"
    )
    assert "Traceback" not in done.stderr
