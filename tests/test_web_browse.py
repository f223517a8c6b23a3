"""The reading pages through real HTTP (uvicorn on 127.0.0.1, httpx): `/` with the latest
edition ranked, its topic filter and the form below, topic pages, the archive by month,
day pages with previous / next and ?topic=, and hostile paper text shown as text on every
page. The archive is three real captures sent as three editions (tests/support/archive)."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from digest.config import Config
from digest.models import Paper
from digest.store import Store
from digest.topics import Matcher
from digest.web.app import create_app
from tests.support.archive import HOSTILE, SCRIPT, Archive, build_archive
from tests.support.webserver import make_config, serving

ARTICLE = re.compile(r'<article class="paper">.*?</article>', re.S)
PAPER_ID = re.compile(r'href="https://huggingface.co/papers/([^"]+)"')


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[Config, Archive, str]]:
    config = make_config(tmp_path)
    archive = build_archive(config)
    with serving(create_app(config)) as base:
        yield config, archive, base


def shown_ids(page: str) -> list[str]:
    """The paper ids of the page's cards, in order."""
    out = []
    for article in ARTICLE.findall(page):
        found = PAPER_ID.search(article)
        assert found, article[:300]
        out.append(found.group(1))
    return out


def stored(config: Config, ids: list[str]) -> dict[str, Paper]:
    store = Store.open(config.store.database)
    try:
        return {sp.paper.id: sp.paper for sp in store.papers(ids=ids)}
    finally:
        store.close()


def test_home_shows_the_latest_edition_ranked_with_links_and_the_form_below(
    site: tuple[Config, Archive, str],
) -> None:
    config, archive, base = site
    page = httpx.get(f"{base}/")
    assert page.status_code == 200
    today = archive.days[-1]
    edition = archive.ids[today]
    home, _, rest = page.text.partition('id="rising"')
    ids = shown_ids(home)
    assert sorted(ids) == sorted(edition)  # every paper of today's edition, nothing else
    papers = stored(config, ids)
    matcher = Matcher(config.topics)
    # Ranked: upvotes (the second fetch's) plus 5 per topic the paper is in.
    scores = [papers[i].upvotes + 5 * len(matcher.match(papers[i])) for i in ids]
    assert scores == sorted(scores, reverse=True)
    # A real paper with a repo and keywords shows them, with every link.
    with_repo = next(p for p in papers.values() if p.github_repo and p.ai_keywords)
    card = next(a for a in ARTICLE.findall(home) if with_repo.hf_url in a)
    for link in (with_repo.arxiv_url, with_repo.pdf_url, with_repo.github_repo):
        assert f'href="{html.escape(link or "")}"' in card
    assert html.escape(with_repo.ai_keywords[0]) in card
    assert f"{with_repo.upvotes} upvote" in card
    # The subscribe form comes after the papers.
    assert page.text.index("<article") < page.text.index('id="subscribe"')
    assert "rising" in rest.lower() and "/feeds/rising.xml" in rest


def test_the_topic_filter_on_home_and_day_pages(site: tuple[Config, Archive, str]) -> None:
    config, archive, base = site
    matcher = Matcher(config.topics)
    for path in ("/", f"/archive/{archive.days[1]}"):
        every = shown_ids(httpx.get(f"{base}{path}").text.partition('id="rising"')[0])
        only = httpx.get(f"{base}{path}", params={"topic": "vision"})
        assert only.status_code == 200
        ids = shown_ids(only.text.partition('id="rising"')[0])
        papers = stored(config, every)
        expected = [i for i in every if "vision" in {m.topic for m in matcher.match(papers[i])}]
        assert ids and ids == expected and len(ids) < len(every), path
        assert 'aria-current="page">Computer vision' in only.text
    missing = httpx.get(f"{base}/", params={"topic": "no-such-topic"})
    assert missing.status_code == 404 and "no topic named" in missing.text.lower()


def test_a_day_page_links_the_days_before_and_after(site: tuple[Config, Archive, str]) -> None:
    _config, archive, base = site
    first, middle, last = archive.days
    page = httpx.get(f"{base}/archive/{middle}").text
    assert f'rel="prev" href="/archive/{first}"' in page
    assert f'rel="next" href="/archive/{last}"' in page
    assert sorted(shown_ids(page)) == sorted(archive.ids[middle])
    assert "All past digests" in page and "unsubscribe" not in page.lower()
    oldest = httpx.get(f"{base}/archive/{first}").text
    assert 'rel="prev"' not in oldest and f'rel="next" href="/archive/{middle}"' in oldest
    newest = httpx.get(f"{base}/archive/{last}").text
    assert 'rel="next"' not in newest
    # The topic follows the reader from day to day (the ranked emails link here).
    filtered = httpx.get(f"{base}/archive/{middle}?topic=agents").text
    assert f'href="/archive/{first}?topic=agents"' in filtered
    assert httpx.get(f"{base}/archive/{middle}?topic=nope").status_code == 404
    assert httpx.get(f"{base}/archive/1999-01-01").status_code == 404
    assert httpx.get(f"{base}/archive/2026-02-30").status_code == 404


def test_the_archive_is_grouped_by_month(site: tuple[Config, Archive, str]) -> None:
    _config, archive, base = site
    page = httpx.get(f"{base}/archive").text
    months = re.findall(r"<h2 id=\"m(\d{4}-\d{2})\">", page)
    assert months == sorted({d.strftime("%Y-%m") for d in archive.days}, reverse=True)
    for day in archive.days:
        assert f'href="/archive/{day}"' in page
        assert f"({len(archive.ids[day])} papers)" in page


def test_a_topic_page_shows_its_terms_feeds_and_recent_papers(
    site: tuple[Config, Archive, str],
) -> None:
    config, archive, base = site
    page = httpx.get(f"{base}/topics/vision")
    assert page.status_code == 200
    assert "<h1>Computer vision</h1>" in page.text
    assert "image*, video*" in page.text  # the terms, as configured
    for ext in ("xml", "atom", "json"):
        assert f'href="/feeds/vision.{ext}"' in page.text
    ids = shown_ids(page.text)
    every = [i for day in archive.days for i in archive.ids[day]]
    papers = stored(config, every)
    matcher = Matcher(config.topics)
    expected = {i for i in every if "vision" in {m.topic for m in matcher.match(papers[i])}}
    assert set(ids) == expected and expected
    headings = re.findall(r'<h3 class="day">([^<]+)</h3>', page.text)
    assert len(headings) >= 2  # day by day
    assert httpx.get(f"{base}/topics/nope").status_code == 404


PAGES = [
    "/",
    "/?topic=agents",
    "/topics/agents",
    "/archive/{today}",
    "/archive/{today}?topic=agents",
    "/search?q=agent",
    "/search?q=owned",
]


@pytest.mark.parametrize("path", PAGES)
def test_hostile_paper_text_is_text_on_every_page(
    site: tuple[Config, Archive, str], path: str
) -> None:
    _config, archive, base = site
    page = httpx.get(base + path.format(today=archive.days[-1]))
    assert page.status_code == 200
    text = page.text
    assert HOSTILE.id in text, "the hostile paper is on this page"
    assert SCRIPT not in text and "<b>Eve</b>" not in text and "<i>Org</i>" not in text
    assert "<svg" not in text and "<img src=x" not in text
    assert "&lt;script&gt;" in text or "&lt;</mark>script" in text or "<mark>" in text
    assert 'href="javascript:' not in text and 'href="data:' not in text
    assert "\r\nX-Injected" not in page.headers.get("content-type", "")
    card = next(a for a in ARTICLE.findall(text) if HOSTILE.id in a)
    assert 'dir="auto"' in card  # the right-to-left override cannot turn the page around
    assert "W" * 200 in card  # the long title is there, as text (cut at 300 characters)
    assert "W" * 1_000 not in card
