"""The trending list is a first-class choice: the word in the config, the page, the API
fallback with sort=trending, all against a real local server.

No trending page was captured, so the page here is RECONSTRUCTED: the real daily page's
HTML shell with its data-props replaced by real API items and "isTrending": true.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Any

from digest.config import TRENDING_URL, SourceConfig, load_config
from digest.jobs import ingest
from digest.source.listing import api_params_for
from digest.store import Store
from tests.support.hfserver import (
    HFServer,
    Reply,
    fast_fetcher,
    local_config,
)
from tests.support.pages import with_props, without_hydration
from tests.support.paths import PAGE_2024_08_01, REAL

SHELL = PAGE_2024_08_01.read_text(encoding="utf-8")
ITEMS: list[dict[str, Any]] = json.loads(
    (REAL / "api-daily_papers-2024-03-25.json").read_text(encoding="utf-8")
)
IDS = {i["paper"]["id"] for i in ITEMS}
TODAY = date(2024, 3, 26)


def trending_page() -> bytes:
    """RECONSTRUCTED: real shell + real API items + isTrending, as HF's trending page."""
    return with_props(SHELL, {"dailyPapers": ITEMS, "isTrending": True}).encode()


def test_the_word_trending_resolves_to_the_trending_page_and_api_sort() -> None:
    assert (
        SourceConfig(list="trending").url
        == TRENDING_URL
        == "https://huggingface.co/papers/trending"
    )
    assert load_config(None, {"DIGEST_SOURCE": "trending"}).source.url == TRENDING_URL
    assert api_params_for(TRENDING_URL) == ({"sort": "trending"}, False)
    # Trending ignores dates, so no "future date" check can trip on it.
    assert api_params_for(TRENDING_URL, date(2000, 1, 1))[0] == {"sort": "trending"}


def test_trending_page_is_stored_as_trending(hf_server: HFServer, store: Store) -> None:
    hf_server.route("/papers/trending", Reply(trending_page()))
    config = local_config(hf_server, "/papers/trending")
    result = ingest(config, store, fast_fetcher(), today=TODAY)
    assert result.status == "ok" and result.source == "page"
    assert result.seen == len(IDS) and {p.paper.id for p in store.papers()} == IDS
    run = store.last_run()
    assert run is not None and run["trending"] == 1
    assert run["source_url"] == hf_server.url("/papers/trending")
    assert store.days_done(TODAY) == set()  # a trending run holds no day's list
    assert hf_server.requests_to("/api/daily_papers") == []


def test_broken_trending_page_falls_back_to_api_sorted_by_trending(
    hf_server: HFServer, store: Store
) -> None:
    hf_server.route("/papers/trending", Reply(without_hydration(SHELL).encode()))
    hf_server.route("/api/daily_papers", Reply.json(ITEMS), query={"sort": "trending"})
    config = local_config(hf_server, "/papers/trending")
    result = ingest(config, store, fast_fetcher(), today=TODAY)
    assert result.status == "ok" and result.source == "api" and result.new == len(IDS)
    (asked,) = hf_server.requests_to("/api/daily_papers")
    assert asked.query == {"sort": "trending", "limit": "100", "p": "0"}  # one page, no date
    run = store.last_run()
    assert run is not None and run["trending"] == 1 and run["source"] == "api"


def test_trending_api_first(hf_server: HFServer, store: Store) -> None:
    hf_server.route("/api/daily_papers", Reply.json(ITEMS), query={"sort": "trending"})
    config = local_config(hf_server, "/papers/trending", prefer="api")
    result = ingest(config, store, fast_fetcher(), today=TODAY)
    assert result.source == "api" and result.seen == len(IDS)
    assert [r.path for r in hf_server.requests] == ["/api/daily_papers"]


def test_an_empty_trending_list_says_so(hf_server: HFServer, store: Store) -> None:
    empty = with_props(SHELL, {"dailyPapers": [], "isTrending": True})  # RECONSTRUCTED
    hf_server.route("/papers/trending", Reply(empty.encode()))
    result = ingest(local_config(hf_server, "/papers/trending"), store, fast_fetcher())
    assert result.status == "empty" and result.reason == "the trending list is empty"
    assert store.count_papers() == 0
