"""Bytes of a papers page or API response -> `Listing` of `Paper`s.

Two outcomes are kept apart on purpose: a response we cannot read raises
`PageFormatError`; a well-formed list that is empty returns an empty `Listing`.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, date, datetime
from typing import Any

from selectolax.lexbor import LexborHTMLParser as HTMLParser

from digest.errors import PageFormatError
from digest.models import Listing, Paper

# Match on data-target, not on position: HF has moved this div before.
HYDRATION_SELECTOR = 'div[data-target="DailyPapers"]'
_VERSION_RE = re.compile(r"v\d+$")
_SPACE_RE = re.compile(r"\s+")
_DATE_IN_URL_RE = re.compile(r"(\d{4}-\d{2}-\d{2})")
_INT64 = 2**63  # SQLite's INTEGER range
# JSON may carry half of a surrogate pair alone ("\ud83d"); UTF-8, so SQLite, cannot.
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
# Control characters never belong in a title or a name, and XML 1.0 (the feeds) cannot
# carry most of them; tab, newline and carriage return are left to the whitespace rule.
_CONTROL_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufffe\uffff]")
# Dates outside these bounds are not a paper's (arXiv opened in 1991) and some cannot
# even be turned into UTC or given a day after: such a date is read as missing.
EARLIEST_DATE = date(1991, 1, 1)
LATEST_DATE = date(9998, 12, 31)


def parse_page(body: bytes | str, url: str) -> Listing:
    """Return the papers in a page's DailyPapers hydration JSON.

    Raises PageFormatError when the div or its JSON is missing or not what we expect.
    """
    text = _decode(body, url)
    tree = HTMLParser(text)
    node = tree.css_first(HYDRATION_SELECTOR)
    if node is None:
        raise PageFormatError(
            url, f"no {HYDRATION_SELECTOR} element (has the page layout changed?)"
        )
    raw = node.attributes.get("data-props")
    if not raw:
        raise PageFormatError(url, "the DailyPapers element has no data-props")
    try:
        props = json.loads(raw)  # selectolax has already unescaped the attribute
    except RecursionError:
        raise PageFormatError(url, "DailyPapers data-props is nested too deeply") from None
    except json.JSONDecodeError as e:
        raise PageFormatError(url, f"DailyPapers data-props is not JSON: {e}") from None
    if not isinstance(props, dict) or not isinstance(props.get("dailyPapers"), list):
        raise PageFormatError(url, "DailyPapers data-props has no dailyPapers list")
    list_date = _parse_date(props.get("dateString")) or _parse_date(props.get("date"))
    list_date = list_date or _date_from_url(url)
    papers = parse_items(props["dailyPapers"], url, list_date)
    return Listing(
        papers=papers,
        url=url,
        source="page",
        list_date=list_date,
        trending=bool(props.get("isTrending")),
    )


def parse_page_cards(body: bytes | str, url: str) -> Listing:
    """Return the papers shown as <article> cards: the fallback when the JSON is gone.

    Cards carry less (id, title, upvotes, thumbnail). Raises PageFormatError when no
    card has a paper link and title.
    """
    tree = HTMLParser(_decode(body, url))
    papers: list[Paper] = []
    seen: set[str] = set()
    for article in tree.css("article"):
        link = article.css_first('h3 a[href^="/papers/"]')
        if link is None:
            continue
        href = link.attributes.get("href") or ""
        paper_id = _VERSION_RE.sub("", href.rsplit("/", 1)[-1].split("?")[0])
        title = _clean(link.text())
        if not paper_id or not title or paper_id in seen:
            continue
        seen.add(paper_id)
        # The vote box is a div.leading-none holding only the count; the "Submitted by"
        # badge carries the same class, so take the first one that is a number.
        votes = next(
            (v.text().strip() for v in article.css("div.leading-none") if _is_count(v.text())),
            "0",
        )
        img = article.css_first("img")
        papers.append(
            Paper(
                id=paper_id,
                title=title,
                upvotes=_int(votes),
                thumbnail=_url(img.attributes.get("src")) if img is not None else None,
                daily_date=_date_from_url(url),
            )
        )
    if not papers:
        raise PageFormatError(url, "no DailyPapers JSON and no paper cards in the page")
    return Listing(
        papers=tuple(papers),
        url=url,
        source="page-dom",
        list_date=_date_from_url(url),
        trending="trending" in url,
    )


def parse_api(body: bytes | str, url: str, list_date: date | None = None) -> Listing:
    """Return the papers in an /api/daily_papers response (a JSON list of items).

    Raises PageFormatError when the body is not a JSON list of items with ids.
    """
    text = _decode(body, url)
    try:
        data = json.loads(text)
    except RecursionError:
        raise PageFormatError(url, "response JSON is nested too deeply") from None
    except json.JSONDecodeError as e:
        raise PageFormatError(url, f"response is not JSON ({e})") from None
    if isinstance(data, dict) and isinstance(data.get("dailyPapers"), list):
        data = data["dailyPapers"]  # tolerate a props-shaped object
    if not isinstance(data, list):
        raise PageFormatError(url, f"expected a JSON list of papers, got {type(data).__name__}")
    list_date = list_date or _date_from_url(url)
    return Listing(
        papers=parse_items(data, url, list_date),
        url=url,
        source="api",
        list_date=list_date,
        trending="sort=trending" in url,
    )


def parse_any(body: bytes | str, url: str) -> Listing:
    """Return the papers in a saved page or API response, whichever it is (for --from)."""
    head = _decode(body, url).lstrip()[:1]
    if head in ("[", "{"):
        return parse_api(body, url)
    return parse_page(body, url)


def parse_items(items: list[Any], url: str, list_date: date | None = None) -> tuple[Paper, ...]:
    """Return a Paper per list item, in list order, without repeats.

    Raises PageFormatError naming the item when one has no paper id or title.
    """
    papers: list[Paper] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        paper = _paper(item, url, i, list_date)
        if paper.id not in seen:
            seen.add(paper.id)
            papers.append(paper)
    return tuple(papers)


def _paper(item: Any, url: str, i: int, list_date: date | None) -> Paper:
    if not isinstance(item, dict):
        raise PageFormatError(url, f"item {i} is not an object")
    p = item.get("paper")
    if not isinstance(p, dict):
        # Some shapes put the paper's fields on the item itself.
        p = item
    raw_id = p.get("id")
    if not isinstance(raw_id, str) or not raw_id.strip():
        raise PageFormatError(url, f"item {i} has no paper id")
    paper_id = _VERSION_RE.sub("", _clean(raw_id))
    if not paper_id:
        raise PageFormatError(url, f"item {i} has no paper id")
    title = _clean(_str(p.get("title"))) or _clean(_str(item.get("title")))
    if not title:
        raise PageFormatError(url, f"item {i} (paper {paper_id}) has no title")
    names = (
        _clean(a["name"])
        for a in _list(p.get("authors"))
        if isinstance(a, dict) and isinstance(a.get("name"), str) and not a.get("hidden")
    )
    authors = tuple(name for name in names if name)
    org = (
        _org(item.get("organization"))
        or _org(p.get("organization"))
        or _org(item.get("submitterOrganization"))
    )
    daily = (
        _parse_date(p.get("submittedOnDailyAt"))
        or list_date
        or _parse_date(item.get("publishedAt"))
    )
    submitter = p.get("submittedOnDailyBy") or item.get("submittedBy")
    return Paper(
        id=paper_id,
        title=title,
        abstract=_clean(_str(p.get("summary"))) or _clean(_str(item.get("summary"))),
        authors=authors,
        published_at=_parse_datetime(p.get("publishedAt")),
        daily_date=daily,
        upvotes=_int(p.get("upvotes")),
        comments=_int(item.get("numComments")),
        organization=org,
        github_repo=_url(p.get("githubRepo")),
        github_stars=_int(p["githubStars"]) if p.get("githubStars") is not None else None,
        project_page=_url(p.get("projectPage")),
        thumbnail=_url(item.get("thumbnail")),
        ai_summary=_clean(_str(p.get("ai_summary"))) or None,
        ai_keywords=tuple(
            word for word in (_clean(_str(k)) for k in _list(p.get("ai_keywords"))) if word
        ),
        withdrawn=bool(p.get("withdrawnAt")),
        submitted_by=_clean(_str(submitter.get("user")) or _str(submitter.get("name"))) or None
        if isinstance(submitter, dict)
        else None,
    )


def _decode(body: bytes | str, url: str) -> str:
    if isinstance(body, str):
        return body
    try:
        return body.decode("utf-8-sig")  # a saved file may start with a BOM
    except UnicodeDecodeError as e:
        raise PageFormatError(url, f"body is not UTF-8 ({e.reason} at byte {e.start})") from None


def _text(text: str) -> str:
    """Text every later step can carry: a lone surrogate becomes U+FFFD, a control
    character a space."""
    return _CONTROL_RE.sub(" ", _SURROGATE_RE.sub("\ufffd", text))


def _clean(text: str) -> str:
    """Safe text (see _text) with whitespace collapsed; never truncated.

    No HTML unescaping: JSON strings are plain text (an abstract may say "&lt" or
    "&para" literally), and selectolax has already decoded attributes and card text.
    """
    return _SPACE_RE.sub(" ", _text(text)).strip()


def _is_count(text: str) -> bool:
    digits = text.strip().replace(",", "")
    return digits.isascii() and digits.isdigit()


def _str(value: Any) -> str:
    return _text(value) if isinstance(value, str) else ""


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _int(value: Any) -> int:
    """A count, or 0 for anything that is not one (a count SQLite cannot hold included)."""
    number = 0
    if isinstance(value, bool):
        number = 0
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float):
        # json.loads accepts NaN and Infinity; int() of those raises.
        number = int(value) if math.isfinite(value) else 0
    elif isinstance(value, str) and _is_count(value):
        # isascii: "²".isdigit() is true but int("²") raises.
        number = int(value.strip().replace(",", ""))
    return number if -_INT64 <= number < _INT64 else 0


def _url(value: Any) -> str | None:
    """An http(s) URL, or None; one with a space or control character inside is no URL."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text.startswith(("http://", "https://")) and text == _clean(text) and " " not in text:
        return text
    return None


def _org(value: Any) -> str | None:
    if isinstance(value, dict):
        name = _str(value.get("fullname")) or _str(value.get("name"))
        return _clean(name) or None
    return None


def _parse_datetime(value: Any) -> datetime | None:
    """The time in UTC (one without an offset is taken as UTC), or None when it is not
    one or lies outside EARLIEST_DATE..LATEST_DATE (e.g. 0001-01-01T00:00:00+05:00, which
    is before year 1 in UTC)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        parsed = parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        return None
    return parsed if EARLIEST_DATE <= parsed.date() <= LATEST_DATE else None


def _parse_date(value: Any) -> date | None:
    """The day a value starts with (YYYY-MM-DD), or None; see EARLIEST_DATE."""
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        day = date.fromisoformat(value[:10])
    except ValueError:
        return None
    return day if EARLIEST_DATE <= day <= LATEST_DATE else None


def _date_from_url(url: str) -> date | None:
    m = _DATE_IN_URL_RE.search(url)
    return _parse_date(m.group(1)) if m else None
