"""The search box through real HTTP, and store.search / store.fts underneath: ranked results
over the whole archive with the words marked, pages, a clear answer (never a 500) for an
empty, hostile or impossible query."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from digest.config import Config
from digest.store import Store
from digest.store.fts import MAX_QUERY, BadQuery, parse_query
from digest.store.search import MARK_END, MARK_START, search
from digest.web.app import create_app
from digest.web.browse import marked
from tests.support.archive import Archive, build_archive
from tests.support.webserver import make_config, serving

ARTICLE = re.compile(r'<article class="paper">.*?</article>', re.S)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[Config, Archive, str]]:
    config = make_config(tmp_path)
    archive = build_archive(config)
    with serving(create_app(config)) as base:
        yield config, archive, base


def test_results_are_marked_ranked_and_paged(site: tuple[Config, Archive, str]) -> None:
    config, _archive, base = site
    first = httpx.get(f"{base}/search", params={"q": "model"})
    assert first.status_code == 200
    cards = ARTICLE.findall(first.text)
    assert len(cards) == 20  # a full first page
    assert all("<mark>model" in c.lower() for c in cards)
    assert 'rel="next" href="/search?q=model&amp;page=2"' in first.text
    second = httpx.get(f"{base}/search", params={"q": "model", "page": "2"})
    cards2 = ARTICLE.findall(second.text)
    assert cards2 and not set(cards) & set(cards2)
    assert 'rel="prev"' in second.text
    store = Store.open(config.store.database)
    try:
        results = search(store, "model", page=1, per_page=20)
        total = store.db.execute(
            "SELECT count(*) FROM papers WHERE title LIKE '%model%' OR abstract LIKE '%model%' "
            "OR ai_keywords LIKE '%model%' OR authors LIKE '%model%'"
        ).fetchone()[0]
    finally:
        store.close()
    assert 20 < results.total <= total  # LIKE also finds "models", "modelling"
    assert f"{results.total:,} papers match" in first.text


def test_a_title_word_ranks_above_an_abstract_mention(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    build_archive(config, hostile=False)
    store = Store.open(config.store.database)
    try:
        hits = search(store, "humanoid").hits
    finally:
        store.close()
    assert hits, "a real paper is about humanoids"
    in_title = ["humanoid" in h.paper.paper.title.lower() for h in hits]
    assert in_title[0] and in_title == sorted(in_title, reverse=True)
    assert f"{MARK_START}Humanoid{MARK_END}" in hits[0].title


def test_author_and_keyword_search(site: tuple[Config, Archive, str]) -> None:
    config, _archive, base = site
    store = Store.open(config.store.database)
    try:
        paper = next(sp.paper for sp in store.papers() if sp.paper.ai_keywords and sp.paper.authors)
    finally:
        store.close()
    surname = paper.authors[0].split()[-1]
    for q in (surname, paper.ai_keywords[0]):
        page = httpx.get(f"{base}/search", params={"q": q}).text
        assert paper.hf_url in page, q


@pytest.mark.parametrize(
    "q",
    [
        '"',
        '"unclosed phrase',
        "NEAR(",
        "NEAR(a b",
        "*",
        "**",
        "agent**",
        "title:agent",
        "AND OR NOT",
        "^agent",
        "-agent",
        "a + b - c",
        "C++",
        "()",
        "{title abstract}: x",
        "日本語 モデル",
        "Ünïcödé",
        "مرحبا",
        "\u202eevil",
        "\x00",
        "😀",
        "x" * 10_000,
        " ".join(["w"] * 40),
        "' OR 1=1 --",
        "<script>alert(1)</script>",
    ],
)
def test_hostile_queries_get_a_page_never_a_500(site: tuple[Config, Archive, str], q: str) -> None:
    _config, _archive, base = site
    answer = httpx.get(f"{base}/search", params={"q": q})
    assert answer.status_code in (200, 400), answer.text[-500:]
    assert "<script>alert" not in answer.text
    if answer.status_code == 400:
        error = re.search(r'<p class="error" role="alert" id="q-error">([^<]+)</p>', answer.text)
        assert error and len(error.group(1)) > 10


def test_bad_queries_say_what_is_wrong() -> None:
    with pytest.raises(BadQuery, match="Type a word"):
        parse_query("   ")
    with pytest.raises(BadQuery, match=f"the most is {MAX_QUERY}"):
        parse_query("x" * 10_000)
    with pytest.raises(BadQuery, match="no letters or digits"):
        parse_query('" * ( ^')
    with pytest.raises(BadQuery, match="the most is 12"):
        parse_query(" ".join(["w"] * 13))
    assert parse_query('agent* "tool use" NEAR(').match == '"agent"* "tool use" "NEAR("'


def test_bad_page_numbers_are_the_first_or_an_empty_page(
    site: tuple[Config, Archive, str],
) -> None:
    _config, _archive, base = site
    for page in ("-1", "abc", "0", "99999999999999999999999"):
        answer = httpx.get(f"{base}/search", params={"q": "model", "page": page})
        assert answer.status_code == 200, page
    far = httpx.get(f"{base}/search", params={"q": "model", "page": "500"})
    assert "No results on this page" in far.text
    empty = httpx.get(f"{base}/search", params={"q": ""})
    assert empty.status_code == 200 and "<h1>Search</h1>" in empty.text


def test_no_match_says_so(site: tuple[Config, Archive, str]) -> None:
    _config, _archive, base = site
    answer = httpx.get(f"{base}/search", params={"q": "zyzzyvaquokka"})
    assert answer.status_code == 200 and "No paper matches zyzzyvaquokka" in answer.text


def test_marks_escape_everything_else() -> None:
    assert str(marked(f"<b>{MARK_START}x{MARK_END}</b>")) == "&lt;b&gt;<mark>x</mark>&lt;/b&gt;"
    # A stray mark character opens a mark that is closed; a stray end does nothing.
    assert str(marked(f"{MARK_END}a{MARK_START}b")) == "a<mark>b</mark>"


def test_every_page_has_the_search_box(site: tuple[Config, Archive, str]) -> None:
    _config, archive, base = site
    for path in ("/", "/archive", f"/archive/{archive.days[0]}", "/topics/agents", "/feeds/"):
        page = httpx.get(base + path).text
        assert 'role="search"' in page and 'action="/search"' in page, path
        assert '<label for="site-q"' in page


def test_past_the_count_the_page_says_more_than(
    site: tuple[Config, Archive, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import digest.store.search as module

    monkeypatch.setattr(module, "COUNTED", 5)  # the real one is 10,000: too many to store
    _config, _archive, base = site
    page = httpx.get(f"{base}/search", params={"q": "model"}).text
    assert "More than 5 papers match" in page
    assert len(ARTICLE.findall(page)) > 5  # and the results are still there
