"""The JSON API through real HTTP: paging with the cursor, the filters, ETag / 304, errors
that name the parameter, and every operation against its own OpenAPI description
(schemathesis generates the requests and checks the answers, against real uvicorn)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from digest.config import Config
from digest.store import Store
from digest.topics import Matcher
from digest.web.app import create_app
from tests.support.archive import HOSTILE, Archive, build_archive
from tests.support.webserver import make_config, serving


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Config, Archive, str]]:
    config = make_config(tmp_path_factory.mktemp("api"))
    archive = build_archive(config)
    with serving(create_app(config)) as base:
        yield config, archive, base


def every_paper(config: Config) -> list[str]:
    store = Store.open(config.store.database)
    try:
        return [
            r[0] for r in store.db.execute("SELECT id FROM papers ORDER BY rowid DESC").fetchall()
        ]
    finally:
        store.close()


def walk(base: str, **params: str) -> list[dict]:
    """Every paper the API gives for `params`, following next_cursor (bounded)."""
    out: list[dict] = []
    cursor = None
    for _ in range(100):
        answer = httpx.get(
            f"{base}/api/papers", params={**params, **({"cursor": cursor} if cursor else {})}
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        out += body["papers"]
        cursor = body["next_cursor"]
        if cursor is None:
            return out
    raise AssertionError("the cursor never ran out")


def test_the_cursor_walks_every_paper_once_newest_first(site: tuple[Config, Archive, str]) -> None:
    config, _archive, base = site
    got = walk(base, limit="7")
    assert [p["id"] for p in got] == every_paper(config)
    first = httpx.get(f"{base}/api/papers").json()
    assert len(first["papers"]) == 20 and first["next_cursor"]


def test_filters_by_day_topic_and_words(site: tuple[Config, Archive, str]) -> None:
    config, _archive, base = site
    store = Store.open(config.store.database)
    try:
        papers = {sp.paper.id: sp.paper for sp in store.papers()}
    finally:
        store.close()
    day = next(iter({p.daily_date for p in papers.values() if p.daily_date}))
    on_day = walk(base, since=day.isoformat(), until=day.isoformat())
    assert {p["id"] for p in on_day} == {i for i, p in papers.items() if p.daily_date == day}
    matcher = Matcher(config.topics)
    vision = walk(base, topic="vision", limit="3")
    assert {p["id"] for p in vision} == {
        i for i, p in papers.items() if "vision" in {m.topic for m in matcher.match(p)}
    }
    assert all("vision" in p["topics"] for p in vision)
    assert walk(base, since="2026-03-02", until="2026-03-01") == []  # an empty range
    found = walk(base, q="humanoid")
    assert found and all("humanoid" in (p["title"] + p["abstract"]).lower() for p in found)
    hostile = httpx.get(f"{base}/api/papers/{HOSTILE.id}").json()
    assert hostile["title"] == HOSTILE.title  # the data as it is: JSON escapes, not HTML
    assert set(hostile["links"]) == {"huggingface", "arxiv", "pdf"}  # no javascript: link


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-13-01"}, "until"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1000"}, "limit"),
        ({"limit": "-5"}, "limit"),
        ({"cursor": "abc"}, "cursor"),
        ({"cursor": "9" * 40}, "cursor"),
        ({"topic": "nope"}, "topic"),
        ({"q": "*"}, "q"),
        ({"q": "x" * 10_000}, "q"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_parameters_are_named(
    site: tuple[Config, Archive, str], params: dict[str, str], named: str
) -> None:
    _config, _archive, base = site
    answer = httpx.get(f"{base}/api/papers", params=params)
    assert answer.status_code == 400
    assert answer.headers["content-type"].startswith("application/json")
    assert named in answer.json()["error"]


def test_etag_and_304_like_the_feeds(site: tuple[Config, Archive, str]) -> None:
    _config, archive, base = site
    paper_id = archive.ids[archive.days[0]][0]
    for path in (
        "/api/papers?limit=5",
        f"/api/papers/{paper_id}",
        "/api/topics",
        "/api/openapi.json",
    ):
        first = httpx.get(base + path)
        assert first.status_code == 200 and first.headers["cache-control"] == "no-cache"
        etag = first.headers["etag"]
        again = httpx.get(base + path, headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.content == b"", path
        assert again.headers["etag"] == etag
        other = httpx.get(base + path, headers={"If-None-Match": '"something-else"'})
        assert other.status_code == 200
    missing = httpx.get(f"{base}/api/papers/0000.00000")
    assert missing.status_code == 404 and "0000.00000" in missing.json()["error"]


def test_topics_name_their_feeds_and_pages(site: tuple[Config, Archive, str]) -> None:
    config, _archive, base = site
    topics = httpx.get(f"{base}/api/topics").json()["topics"]
    assert [t["name"] for t in topics] == [t.name for t in config.topics]
    assert topics[0]["feeds"]["rss"].endswith("/feeds/agents.xml")
    assert topics[0]["page"].endswith("/topics/agents") and topics[0]["keywords"] == ["agent*"]


def test_the_api_answers_as_its_openapi_description_says(
    site: tuple[Config, Archive, str],
) -> None:
    _config, archive, base = site
    schema = schemathesis.openapi.from_url(f"{base}/api/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} == {"/api/papers", "/api/papers/{id}", "/api/topics"}
    known = archive.ids[archive.days[0]][0]
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=25,
            deadline=timedelta(seconds=5),
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def check(case) -> None:  # type: ignore[no-untyped-def]
            if (
                case.path_parameters
                and "id" in case.path_parameters
                and case.path_parameters["id"] == ""
            ):
                case.path_parameters["id"] = known
            case.call_and_validate(base_url=base)

        check()
