"""The parser against every real capture, shapes built from them, and mangled input.

Expected values are computed here from the raw JSON (json.load, or the page's data-props
pulled out with a regex and html.unescape, not with the parser's selectolax) so the test
and the code under test do not share a path. The only hard-coded figures are the paper
counts that ../shared/fixtures/real/SOURCES.md records.
"""

from __future__ import annotations

import copy
import html
import json
import re
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from digest.errors import PageFormatError
from digest.source.parse import parse_any, parse_api, parse_page, parse_page_cards
from tests.support.captures import capture_url, parse_capture
from tests.support.pages import (
    PAGE_URL,
    a_real_item,
    hydration_cut,
    page_props,
    raw_items,
    wrap_in_page,
)
from tests.support.paths import PAGE_2024_08_01, REAL, real_api_captures

_PROPS_RE = re.compile(r'(data-target="DailyPapers" data-props=")([^"]*)(")')
_SPACE = re.compile(r"\s+")


def collapse(text: str) -> str:
    return _SPACE.sub(" ", text).strip()


ALL_CAPTURES = [*real_api_captures(), PAGE_2024_08_01]


# -- every real capture -----------------------------------------------------------------


def test_page_and_api_of_the_same_day() -> None:
    # SOURCES.md: the page has 13 papers, the API capture of that day (earlier) 11.
    page = parse_page(PAGE_2024_08_01.read_bytes(), PAGE_URL)
    api_path = REAL / "api-daily_papers-2024-08-01.reserialised.json"
    api = parse_api(api_path.read_bytes(), capture_url(api_path))
    assert (len(page.papers), len(api.papers)) == (13, 11)
    page_titles = {p.id: p.title for p in page.papers}
    assert {p.id for p in api.papers} <= set(page_titles)
    for p in api.papers:
        assert p.title == page_titles[p.id]
    # Captured later, the page has at least the API's upvotes.
    page_votes = {p.id: p.upvotes for p in page.papers}
    assert all(page_votes[p.id] >= p.upvotes for p in api.papers)


def _real_titles(pred: Any) -> list[tuple[Path, str, str]]:
    found = []
    for path in ALL_CAPTURES:
        for item in raw_items(path):
            title = item["paper"]["title"]
            if pred(title):
                found.append((path, item["paper"]["id"], title))
    return found


@pytest.mark.parametrize(
    "pred",
    [lambda t: "&" in t, lambda t: not t.isascii()],
    ids=["ampersand", "non-ascii"],
)
def test_real_titles_with_ampersand_and_unicode_intact(pred: Any) -> None:
    found = _real_titles(pred)
    assert found, "no such title in the captures"
    for path, paper_id, title in found:
        paper = next(p for p in parse_capture(path).papers if p.id == paper_id)
        assert paper.title == collapse(title)
        assert pred(paper.title)


def test_ampersand_title_survives_the_page_escaping() -> None:
    # RECONSTRUCTED page: the real 2024-03-15 items (with "MM1: Methods, Analysis &
    # Insights ...") wrapped in the real page shell, so the JSON goes through &amp;.
    items = raw_items(REAL / "api-daily_papers-2024-03-15.json")
    amp = [i for i in items if "&" in i["paper"]["title"]]
    assert amp
    props = {**page_props(), "dailyPapers": items}
    listing = parse_page(wrap_in_page(props), PAGE_URL)
    titles = {p.id: p.title for p in listing.papers}
    for i in amp:
        assert titles[i["paper"]["id"]] == collapse(i["paper"]["title"])
        assert "&amp;" not in titles[i["paper"]["id"]]


def test_entity_like_text_in_json_is_kept_literally() -> None:
    # RECONSTRUCTED item: JSON strings are plain text. A LaTeX-ish abstract saying "&lt"
    # or "&para" must not become "<" or "¶" (html.unescape would do that).
    item = a_real_item()
    item["paper"]["title"] = "Q&amp;A for R&D: &lt;tags&gt; and \u00a7 \u0394-nets"
    item["paper"]["summary"] = "We bound x &lt y; see &para;3 and   Ψ.\n  Done."
    (paper,) = parse_api(json.dumps([item]), "reconstructed").papers
    assert paper.title == "Q&amp;A for R&D: &lt;tags&gt; and § Δ-nets"
    assert paper.abstract == "We bound x &lt y; see &para;3 and Ψ. Done."


def test_hidden_authors_are_left_out() -> None:
    hidden = [
        (path, item)
        for path in ALL_CAPTURES
        for item in raw_items(path)
        if any(a.get("hidden") for a in item["paper"].get("authors", []))
    ]
    assert hidden, "no real item with a hidden author"
    for path, item in hidden:
        paper = next(p for p in parse_capture(path).papers if p.id == item["paper"]["id"])
        shown = [a["name"] for a in item["paper"]["authors"] if not a.get("hidden")]
        assert len(paper.authors) == len(shown) < len(item["paper"]["authors"])


@pytest.mark.parametrize("where", ["item", "paper"])
def test_organization_from_item_or_paper(where: str) -> None:
    # RECONSTRUCTED from a real item that has it on both: keep it on one side only.
    item = a_real_item()
    org = item["organization"]
    assert org == item["paper"]["organization"]
    del item["organization"]
    del item["paper"]["organization"]
    (item if where == "item" else item["paper"])["organization"] = org
    (paper,) = parse_api(json.dumps([item]), "reconstructed").papers
    assert paper.organization == org["fullname"]
    del (item if where == "item" else item["paper"])["organization"]
    (paper,) = parse_api(json.dumps([item]), "reconstructed").papers
    assert paper.organization is None


def test_withdrawn_and_version_suffix() -> None:
    # RECONSTRUCTED item: a real one given withdrawnAt and a versioned id.
    item = a_real_item()
    item["paper"]["withdrawnAt"] = "2024-01-05T00:00:00.000Z"
    item["paper"]["id"] = "2401.00001v2"
    (paper,) = parse_api(json.dumps([item]), "reconstructed").papers
    assert paper.withdrawn is True
    assert paper.id == "2401.00001"
    assert paper.arxiv_url == "https://arxiv.org/abs/2401.00001"


def test_daily_date_is_submitted_on_daily_at() -> None:
    # 2026-08-21's items went on the list that day but were published on arXiv earlier.
    path = REAL / "api-daily_papers-2026-08-21.reserialised.json"
    items = raw_items(path)
    listing = parse_api(path.read_bytes(), "no-date-in-this-url")
    assert listing.list_date is None
    for paper, item in zip(listing.papers, items, strict=True):
        assert paper.daily_date == date.fromisoformat(item["paper"]["submittedOnDailyAt"][:10])
    assert any(p.published_at and p.published_at.date() != p.daily_date for p in listing.papers)


def test_duplicate_ids_are_kept_once() -> None:
    item = a_real_item()
    twin = copy.deepcopy(item)
    twin["paper"]["id"] += "v3"
    listing = parse_api(json.dumps([item, twin]), "reconstructed")
    assert [p.id for p in listing.papers] == [item["paper"]["id"]]


# -- shapes DESIGN.md describes but nobody captured -------------------------------------


def test_trending_page_reconstructed() -> None:
    # RECONSTRUCTED: real 2026-08-21 API items in the real page shell, props shaped like
    # the trending page per DESIGN.md (isTrending: true, no date).
    items = raw_items(REAL / "api-daily_papers-2026-08-21.reserialised.json")
    props = {"dailyPapers": items, "isTrending": True, "canSubmit": False}
    url = "https://huggingface.co/papers/trending"
    listing = parse_page(wrap_in_page(props), url)
    assert listing.trending is True
    assert listing.list_date is None
    assert [p.id for p in listing.papers] == [i["paper"]["id"] for i in items]


def test_date_page_reconstructed() -> None:
    # RECONSTRUCTED: a date page carries dateString; it wins over a date in the URL.
    items = raw_items(REAL / "api-daily_papers-2024-03-12.json")
    props = {"dailyPapers": items, "dateString": "2024-03-12", "canSubmit": False}
    listing = parse_page(wrap_in_page(props), "https://huggingface.co/papers/date/2099-01-01")
    assert listing.list_date == date(2024, 3, 12)
    assert listing.trending is False
    assert [p.id for p in listing.papers] == [i["paper"]["id"] for i in items]
    # The 2024-03 items have no submittedOnDailyAt: they are bucketed on the list's day.
    assert {p.daily_date for p in listing.papers} == {date(2024, 3, 12)}


# -- DOM fallback -------------------------------------------------------------------------


def test_no_hydration_div_falls_back_to_cards() -> None:
    body = hydration_cut()
    with pytest.raises(PageFormatError) as err:
        parse_page(body, PAGE_URL)
    assert PAGE_URL in str(err.value)
    cards = parse_page_cards(body, PAGE_URL)
    items = raw_items(PAGE_2024_08_01)
    assert cards.source == "page-dom"
    assert len(cards.papers) == 13
    assert [p.id for p in cards.papers] == [i["paper"]["id"] for i in items]
    assert [p.title for p in cards.papers] == [collapse(i["paper"]["title"]) for i in items]
    assert [p.upvotes for p in cards.papers] == [i["paper"]["upvotes"] for i in items]
    assert any(p.upvotes > 0 for p in cards.papers)
    assert cards.list_date == date(2024, 8, 1)


# -- errors -------------------------------------------------------------------------------


def _props_page(raw_props: str) -> bytes:
    """The real page shell with data-props set to `raw_props` verbatim (escaped)."""
    text = PAGE_2024_08_01.read_text(encoding="utf-8")
    escaped = html.escape(raw_props, quote=True)
    return _PROPS_RE.sub(lambda m: m.group(1) + escaped + m.group(3), text, count=1).encode()


def _item_without(key: str) -> dict[str, Any]:
    item = a_real_item()
    del item["paper"][key]
    item.pop(key, None)
    return item


ERROR_CASES = {
    "no hydration div": lambda: hydration_cut(),
    "props not JSON": lambda: _props_page("{dailyPapers: [oops"),
    "props without dailyPapers": lambda: _props_page(json.dumps({"date": "2024-08-01"})),
    "props is a list": lambda: _props_page("[]"),
    "item without id": lambda: wrap_in_page({"dailyPapers": [_item_without("id")]}),
    "item without title": lambda: wrap_in_page({"dailyPapers": [_item_without("title")]}),
    "item not an object": lambda: wrap_in_page({"dailyPapers": ["2401.00001"]}),
    "not UTF-8": lambda: PAGE_2024_08_01.read_bytes().replace(b"Llama", b"Ll\xffma", 1),
    "truncated": lambda: PAGE_2024_08_01.read_bytes()[: len(PAGE_2024_08_01.read_bytes()) // 2],
    "empty body": lambda: b"",
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_page_errors_name_the_url(case: str) -> None:
    body = ERROR_CASES[case]()
    with pytest.raises(PageFormatError) as err:
        parse_page(body, PAGE_URL)
    assert PAGE_URL in str(err.value)
    assert err.value.url == PAGE_URL


API_ERROR_CASES = {
    "not JSON": b"<html>rate limited</html>",
    "truncated": (REAL / "api-daily_papers-2024-03-12.json").read_bytes()[:-40],
    "object": b'{"error": "Invalid date"}',
    "item without id": json.dumps([_item_without("id")]).encode(),
    "item without title": json.dumps([_item_without("title")]).encode(),
    "not UTF-8": b'[{"paper": {"id": "2401.00001", "title": "\xff"}}]',
    "deeply nested": b"[" * 100_000 + b"]" * 100_000,
}


@pytest.mark.parametrize("case", list(API_ERROR_CASES))
def test_api_errors_name_the_url(case: str) -> None:
    url = "https://huggingface.co/api/daily_papers?date=2024-03-12"
    with pytest.raises(PageFormatError) as err:
        parse_api(API_ERROR_CASES[case], url)
    assert url in str(err.value)


def test_well_formed_empty_lists_are_not_errors() -> None:
    page = parse_page(wrap_in_page({"dailyPapers": [], "dateString": "2024-08-03"}), PAGE_URL)
    assert page.empty and page.papers == () and page.list_date == date(2024, 8, 3)
    api = parse_api(b"[]", "https://huggingface.co/api/daily_papers?date=2024-08-03")
    assert api.empty and api.list_date == date(2024, 8, 3)
    assert parse_any(b"  []\n", "saved.json").empty


def test_parse_any_picks_the_shape() -> None:
    assert parse_any(PAGE_2024_08_01.read_bytes(), "saved.html").source == "page"
    path = REAL / "api-daily_papers-2024-03-12.json"
    assert parse_any(path.read_bytes(), "saved.json").source == "api"
    # A BOM in front of a saved JSON file does not hide that it is JSON.
    assert len(parse_any(b"\xef\xbb\xbf" + path.read_bytes(), "bom.json").papers) == 9


# -- mangled input: only PageFormatError may come out -------------------------------------

_PAGE_BYTES = PAGE_2024_08_01.read_bytes()
_API_BYTES = (REAL / "api-daily_papers-2026-03-12.reserialised.json").read_bytes()
_PARSERS = [parse_page, parse_api, parse_any]
_SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _only_page_format_errors(body: bytes | str) -> None:
    for parse in _PARSERS:
        try:
            parse(body, "mangled")
        except PageFormatError as e:
            assert "mangled" in str(e)


@_SETTINGS
@given(st.binary(max_size=2000))
def test_random_bytes(body: bytes) -> None:
    _only_page_format_errors(body)


@_SETTINGS
@given(st.sampled_from([_PAGE_BYTES, _API_BYTES]), st.data())
def test_truncated_and_flipped_captures(base: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(base)))
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(base) - 1), st.integers(0, 255))))
    body = bytearray(base[:cut] if data.draw(st.booleans()) else base)
    for pos, value in flips:
        if pos < len(body):
            body[pos] = value
    _only_page_format_errors(bytes(body))


_json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(["2024-08-01", "2024-08-01T00:00:00.000Z", "2024-13-45", "²", "1,000"])
)
_json = st.recursive(
    _json_leaf,
    lambda kids: (
        st.lists(kids, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "paper",
                    "id",
                    "title",
                    "summary",
                    "authors",
                    "name",
                    "hidden",
                    "upvotes",
                    "githubStars",
                    "githubRepo",
                    "organization",
                    "fullname",
                    "ai_keywords",
                    "submittedOnDailyAt",
                    "publishedAt",
                    "numComments",
                    "submittedBy",
                    "submittedOnDailyBy",
                    "user",
                    "withdrawnAt",
                    "dailyPapers",
                    "x",
                ]
            ),
            kids,
            max_size=6,
        )
    ),
    max_leaves=25,
)


@_SETTINGS
@given(st.lists(_json, max_size=4) | _json)
def test_random_json_structures(value: Any) -> None:
    text = json.dumps(value)
    _only_page_format_errors(text.encode())
    _only_page_format_errors(wrap_in_page({"dailyPapers": value}))


@_SETTINGS
@given(st.lists(st.fixed_dictionaries({"paper": _json, "title": _json, "numComments": _json})))
def test_random_item_fields(items: list[Any]) -> None:
    _only_page_format_errors(json.dumps(items).encode())


# -- text and dates no later step could carry (issue 6) --------------------------------


def _one_item(**paper: Any) -> bytes:
    """RECONSTRUCTED: the first real item of 2024-08-01 with `paper` fields replaced."""
    item = raw_items(REAL / "api-daily_papers-2024-08-01.reserialised.json")[0]
    item["paper"].update(paper)
    item.pop("title", None)
    item.pop("summary", None)
    return json.dumps([item]).encode()  # json.dumps writes a lone surrogate as \ud83d


def test_lone_surrogates_become_replacement_characters() -> None:
    body = _one_item(
        title="Emoji \ud83d cut in half",
        summary="ab\udc00stract",
        authors=[{"name": "Ann \ud800 Lee"}, {"name": "\ud83d"}],
        ai_keywords=["\udfff", "fine"],
    )
    assert b"\\ud83d" in body  # the bytes really carry the escape
    (paper,) = parse_api(body, "reconstructed").papers
    assert paper.title == "Emoji \ufffd cut in half"
    assert paper.abstract == "ab\ufffdstract"
    assert paper.authors == ("Ann \ufffd Lee", "\ufffd")
    assert paper.ai_keywords == ("\ufffd", "fine")
    for text in (paper.title, paper.abstract, *paper.authors):
        text.encode("utf-8")  # would raise on a surrogate


def test_control_characters_are_dropped_from_text() -> None:
    body = _one_item(
        title="A\x00B\x07 C\x1b\x7f\ufffe", summary="\x00\x01", authors=[{"name": "\x02"}]
    )
    (paper,) = parse_api(body, "reconstructed").papers
    assert paper.title == "A B C"
    assert (paper.abstract, paper.authors) == ("", ())


def test_a_title_of_control_characters_only_is_no_title() -> None:
    with pytest.raises(PageFormatError, match="has no title"):
        parse_api(_one_item(title="\x00\x01\x1f"), "reconstructed")


@pytest.mark.parametrize(
    "value",
    [
        "0001-01-01T00:00:00+05:00",  # before year 1 once in UTC
        "9999-12-31T23:00:00-05:00",  # after year 9999 once in UTC
        "0001-01-01T00:00:00Z",  # before arXiv
        "1900-05-05T00:00:00Z",
        "9999-12-31T00:00:00Z",  # no day after it
        "not a date",
    ],
)
def test_impossible_dates_are_read_as_missing(value: str) -> None:
    body = _one_item(publishedAt=value, submittedOnDailyAt=value)
    (paper,) = parse_api(body, "https://huggingface.co/api/daily_papers?date=2024-08-01").papers
    assert paper.published_at is None
    assert paper.daily_date == date(2024, 8, 1)  # from the list's own date


def test_times_are_utc_and_one_without_offset_is_utc() -> None:
    (paper,) = parse_api(_one_item(publishedAt="2024-07-31T23:30:00-02:00"), "r").papers
    assert paper.published_at is not None
    assert paper.published_at.isoformat() == "2024-08-01T01:30:00+00:00"
    (paper,) = parse_api(_one_item(publishedAt="2024-07-31T23:30:00"), "r").papers
    assert paper.published_at is not None
    assert paper.published_at.isoformat() == "2024-07-31T23:30:00+00:00"


def test_a_url_with_a_space_or_control_character_is_no_url() -> None:
    body = _one_item(githubRepo="https://github.com/a b", projectPage="https://x.org/\x00")
    (paper,) = parse_api(body, "r").papers
    assert (paper.github_repo, paper.project_page) == (None, None)
