"""Page-first / API-first with fallback, through `ingest`, against a real local server.

Pages and API answers are the real captures (or built from them, as each test says).
After every failure the database holds exactly what it held before, plus one failed
run row that names the reason.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from digest.errors import DigestError, PageFormatError
from digest.jobs import ingest
from digest.source.listing import API_PAGE_SIZE, fetch_api, fetch_listing
from digest.store import Store
from tests.support.hfserver import (
    HFServer,
    Reply,
    fast_fetcher,
    local_config,
)
from tests.support.pages import without_cards, without_hydration
from tests.support.paths import PAGE_2024_08_01, REAL

PAGE = PAGE_2024_08_01.read_text(encoding="utf-8")
DAY = date(2024, 8, 1)
LATER = date(2024, 8, 5)


def api_items(name: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads((REAL / name).read_text(encoding="utf-8"))
    return items


API_0801 = api_items("api-daily_papers-2024-08-01.reserialised.json")


def snapshot(store: Store) -> tuple[int, int, list[str]]:
    ids = [r[0] for r in store.db.execute("SELECT id FROM papers ORDER BY id")]
    votes = int(store.db.execute("SELECT count(*) FROM upvotes").fetchone()[0])
    return len(ids), votes, ids


def assert_failed_run(store: Store, before: tuple[int, int, list[str]], *words: str) -> str:
    assert snapshot(store) == before, "a failed run changed the stored papers"
    run = store.last_run()
    assert run is not None and run["status"] == "failed"
    assert run["seen"] == 0 and run["new"] == 0
    for word in words:
        assert word in run["reason"], f"{word!r} not in {run['reason']!r}"
    return str(run["reason"])


def test_real_page_behind_redirect_stores_13_papers(hf_server: HFServer, store: Store) -> None:
    hf_server.route("/papers", Reply.redirect("/papers/date/2024-08-01"))
    hf_server.route("/papers/date/2024-08-01", Reply(PAGE.encode()))
    result = ingest(local_config(hf_server), store, fast_fetcher(), today=LATER)
    assert (result.status, result.source, result.seen, result.new) == ("ok", "page", 13, 13)
    assert result.list_date == DAY
    assert store.count_papers() == 13
    run = store.last_run()
    assert run is not None
    assert run["source"] == "page" and run["source_url"] == hf_server.url("/papers/date/2024-08-01")
    assert "papers-digest" in hf_server.requests[0].headers["user-agent"]
    assert hf_server.requests_to("/api/daily_papers") == []  # the page sufficed


def _clone(item: dict[str, Any], new_id: str) -> dict[str, Any]:
    return {**item, "paper": {**item["paper"], "id": new_id}}


def test_api_pages_until_a_short_page_without_duplicates(hf_server: HFServer, store: Store) -> None:
    # Built from a real capture: one real day is < 100 papers, so p=0 is filled to the
    # API's limit with its real items again under made-up ids derived from the real ones.
    real = api_items("api-daily_papers-2024-03-21.json")
    day = "2024-03-21"
    clones = [
        _clone(real[k % len(real)], f"{real[k % len(real)]['paper']['id']}{k:03d}")
        for k in range(API_PAGE_SIZE + 30 - len(real))
    ]
    everything = real + clones
    first, rest = everything[:API_PAGE_SIZE], everything[API_PAGE_SIZE:]
    # The list moved between our two requests: p=1 repeats the last item of p=0.
    second = [first[-1], *rest]
    query = {"date": day, "limit": str(API_PAGE_SIZE)}
    hf_server.route("/api/daily_papers", Reply.json(first), query={**query, "p": "0"})
    hf_server.route("/api/daily_papers", Reply.json(second), query={**query, "p": "1"})
    hf_server.route("/api/daily_papers", Reply.json([]), query={**query, "p": "2"})
    config = local_config(hf_server, f"/papers/date/{day}", prefer="api")

    result = ingest(config, store, fast_fetcher(), today=date(2024, 3, 25))

    assert [r.query.get("p") for r in hf_server.requests] == ["0", "1"]  # stopped: short page
    assert all(r.query["date"] == day for r in hf_server.requests)
    assert all(r.query["limit"] == "100" for r in hf_server.requests)
    want = {i["paper"]["id"] for i in everything}
    assert len(want) == len(everything)
    assert result.status == "ok" and result.source == "api"
    assert result.seen == len(want) and result.new == len(want)
    assert {p.paper.id for p in store.papers()} == want


@pytest.mark.parametrize("prefer", ["page", "api"])
def test_a_future_date_raises_before_any_request(
    hf_server: HFServer, store: Store, prefer: str
) -> None:
    url = hf_server.url("/papers/date/2024-08-02")
    with pytest.raises(DigestError, match="later than today in UTC"):
        fetch_listing(fast_fetcher(), url, hf_server.url("/api/daily_papers"), prefer, DAY)
    before = snapshot(store)
    config = local_config(hf_server, prefer=prefer)
    result = ingest(config, store, fast_fetcher(), url=url, today=DAY)
    assert result.status == "failed"
    assert_failed_run(store, before, "2024-08-02", "later than today")
    assert hf_server.requests == []


def test_a_page_without_hydration_falls_back_to_the_api_for_that_day(
    hf_server: HFServer, store: Store
) -> None:
    # /papers redirects to the day; the API must be asked for that day, not its default.
    hf_server.route("/papers", Reply.redirect("/papers/date/2024-08-01"))
    hf_server.route("/papers/date/2024-08-01", Reply(without_hydration(PAGE).encode()))
    hf_server.route("/api/daily_papers", Reply.json(API_0801), query={"date": "2024-08-01"})
    result = ingest(local_config(hf_server), store, fast_fetcher(), today=LATER)
    assert result.status == "ok" and result.source == "api"
    assert result.seen == len(API_0801) and result.list_date == DAY
    (api_request,) = hf_server.requests_to("/api/daily_papers")
    assert api_request.query == {"date": "2024-08-01", "limit": "100", "p": "0"}
    run = store.last_run()
    assert run is not None and run["source"] == "api"


@pytest.mark.parametrize(
    "api_reply",
    [Reply(b"down", status=500), Reply.json({"error": "Invalid date"})],
    ids=["api-500", "api-not-a-list"],
)
def test_with_the_api_failing_too_the_cards_are_read(
    hf_server: HFServer, store: Store, api_reply: Reply
) -> None:
    hf_server.route("/papers/date/2024-08-01", Reply(without_hydration(PAGE).encode()))
    hf_server.route("/api/daily_papers", api_reply)
    config = local_config(hf_server, "/papers/date/2024-08-01")
    result = ingest(config, store, fast_fetcher(retries=1), today=LATER)
    assert result.status == "ok" and result.source == "page-dom"
    assert result.seen == 13 and store.count_papers() == 13
    assert hf_server.requests_to("/api/daily_papers")  # it did try the API first


def test_no_papers_and_no_cards_is_a_failed_run(hf_server: HFServer, store: Store) -> None:
    # Something is stored already: a failure must leave it exactly as it was.
    hf_server.route("/papers/date/2024-08-01", Reply(PAGE.encode()))
    config = local_config(hf_server, "/papers/date/2024-08-01")
    assert ingest(config, store, fast_fetcher(), today=LATER).new == 13
    before = snapshot(store)
    broken = without_cards(without_hydration(PAGE))
    hf_server.route("/papers/date/2024-08-01", Reply(broken.encode()))
    result = ingest(config, store, fast_fetcher(), today=LATER)  # the API answers 404
    assert result.status == "failed"
    reason = assert_failed_run(store, before, "layout:", "no paper cards", "HTTP 404")
    assert hf_server.url("/papers/date/2024-08-01") in reason
    assert "nothing stored" in result.summary()


def test_truncated_json_is_a_format_error(hf_server: HFServer, store: Store) -> None:
    body = (REAL / "api-daily_papers-2024-03-25.json").read_bytes()
    hf_server.route("/api/daily_papers", Reply(body[: len(body) // 2]))
    api = hf_server.url("/api/daily_papers")
    with pytest.raises(PageFormatError, match="not JSON") as err:
        fetch_api(fast_fetcher(), api, {"date": "2024-03-25"}, True)
    assert api in str(err.value)
    # API first, and the page is gone too (404): the run fails naming both.
    before = snapshot(store)
    config = local_config(hf_server, "/papers/date/2024-03-25", prefer="api")
    result = ingest(config, store, fast_fetcher(), today=LATER)
    assert result.status == "failed"
    assert_failed_run(store, before, "not JSON", "fallback failed too", "HTTP 404")


def test_a_network_error_on_the_page_is_not_hidden_by_a_fallback(
    hf_server: HFServer, store: Store
) -> None:
    hf_server.route("/papers", Reply(b"down", status=502))
    before = snapshot(store)
    result = ingest(local_config(hf_server), store, fast_fetcher(retries=1), today=LATER)
    assert result.status == "failed"
    assert_failed_run(store, before, "network:", "HTTP 502 after 2 attempts")
    assert hf_server.requests_to("/api/daily_papers") == []


def test_an_empty_saturday_is_empty_not_failed(hf_server: HFServer, store: Store) -> None:
    saturday = date(2024, 3, 30)
    assert saturday.weekday() == 5
    hf_server.route("/api/daily_papers", Reply.json([]), query={"date": saturday.isoformat()})
    config = local_config(hf_server, f"/papers/date/{saturday}", prefer="api")
    result = ingest(config, store, fast_fetcher(), today=date(2024, 4, 1))
    assert result.status == "empty" and result.list_date == saturday
    assert result.reason is not None and "weekend" in result.reason
    run = store.last_run()
    assert run is not None and run["status"] == "empty" and "weekend" in run["reason"]
    assert store.count_papers() == 0
    assert saturday in store.days_done(date(2024, 4, 1))


def test_prefer_api_reads_the_api_and_never_the_page(hf_server: HFServer, store: Store) -> None:
    hf_server.route("/api/daily_papers", Reply.json(API_0801), query={"date": "2024-08-01"})
    config = local_config(hf_server, "/papers/date/2024-08-01", prefer="api")
    result = ingest(config, store, fast_fetcher(), today=LATER)
    assert result.source == "api" and result.new == len(API_0801)
    assert {r.path for r in hf_server.requests} == {"/api/daily_papers"}


def test_config_from_env_points_at_the_local_server(hf_server: HFServer, tmp_path: Path) -> None:
    from digest.config import load_config

    env = {
        "DIGEST_SOURCE_URL": hf_server.url("/papers"),
        "DIGEST_API_URL": hf_server.url("/api/daily_papers"),
    }
    config = load_config(None, env)
    assert dataclasses.replace(config, path=None).source == local_config(hf_server).source
