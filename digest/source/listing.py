"""Which list to read and how: the page first or the API first, the other as fallback."""

from __future__ import annotations

import contextlib
import re
from datetime import date
from urllib.parse import urlsplit

from digest.clock import today_utc
from digest.errors import DigestError, FetchError, PageFormatError
from digest.models import Listing
from digest.source.fetch import Fetcher
from digest.source.parse import parse_api, parse_page, parse_page_cards

API_PAGE_SIZE = 100  # the API's maximum `limit`
MAX_API_PAGES = 20  # no real day has 2,000 papers; stop a runaway pager
_DATE_PATH = re.compile(r"/papers/date/(\d{4}-\d{2}-\d{2})/?$")
_WEEK_PATH = re.compile(r"/papers/week/(\d{4}-W\d{2})/?$")
_MONTH_PATH = re.compile(r"/papers/month/(\d{4}-\d{2})/?$")


def api_params_for(page_url: str, today: date | None = None) -> tuple[dict[str, str], bool]:
    """Return the API query that asks for the same list as `page_url`, and whether to page.

    Raises DigestError for a date page later than today in UTC (HF answers 400).
    """
    path = urlsplit(page_url).path.rstrip("/")
    if path.endswith("/papers/trending"):
        return {"sort": "trending"}, False
    if m := _DATE_PATH.search(path + "/"):
        day = date.fromisoformat(m.group(1))
        if day > (today or today_utc()):
            raise DigestError(
                f"{page_url}: {day} is later than today in UTC; Hugging Face has no list for it yet"
            )
        return {"date": day.isoformat()}, True
    if m := _WEEK_PATH.search(path + "/"):
        return {"week": m.group(1)}, True
    if m := _MONTH_PATH.search(path + "/"):
        return {"month": m.group(1)}, True
    # The daily page: the API's default answer is its current list; one page of it, since
    # paging an undated query would walk the whole archive.
    return {}, False


def page_url_for_day(day: date, base: str = "https://huggingface.co/papers") -> str:
    """Return the date page of `day` under `base` (…/papers/date/YYYY-MM-DD)."""
    return f"{base.rstrip('/')}/date/{day.isoformat()}"


def fetch_api(
    fetcher: Fetcher,
    api_url: str,
    params: dict[str, str],
    paged: bool,
    list_date: date | None = None,
) -> Listing:
    """Return the list from /api/daily_papers, following `p` until a short page.

    Raises FetchError or PageFormatError.
    """
    papers: list = []
    seen: set[str] = set()
    first_url = None
    for page in range(MAX_API_PAGES if paged else 1):
        query: dict[str, str | int] = {**params, "limit": API_PAGE_SIZE, "p": page}
        body, url = fetcher.get(api_url, query)
        first_url = first_url or url
        listing = parse_api(body, url, list_date or _as_date(params.get("date")))
        fresh = [p for p in listing.papers if p.id not in seen]
        seen.update(p.id for p in fresh)
        papers.extend(fresh)
        if len(listing.papers) < API_PAGE_SIZE or not fresh:
            break
    return Listing(
        papers=tuple(papers),
        url=first_url or api_url,
        source="api",
        list_date=list_date or _as_date(params.get("date")),
        trending=params.get("sort") == "trending",
    )


def fetch_page(
    fetcher: Fetcher, page_url: str
) -> tuple[Listing | None, bytes, str, PageFormatError | None]:
    """Return (listing or None, body, final URL, the format error or None) for a page.

    A page we cannot read is returned with its error, so the caller can fall back.
    Raises FetchError.
    """
    body, url = fetcher.get(page_url)
    try:
        return parse_page(body, url), body, url, None
    except PageFormatError as e:
        return None, body, url, e


def fetch_listing(
    fetcher: Fetcher, page_url: str, api_url: str, prefer: str = "page", today: date | None = None
) -> Listing:
    """Return the list at `page_url`, from the preferred source, else from the other.

    A format error in the preferred source makes us try the other; the page's
    <article> cards are the last resort. A network error in the preferred source is not
    hidden by a fallback. Raises FetchError or PageFormatError (naming what each source
    said), and DigestError for a date later than today in UTC, before any request.
    """
    params, paged = api_params_for(page_url, today)

    if prefer == "api":
        try:
            return fetch_api(fetcher, api_url, params, paged)
        except PageFormatError as api_error:
            try:
                listing, body, url, page_error = fetch_page(fetcher, page_url)
            except FetchError as e:
                raise PageFormatError(
                    api_error.url, f"{api_error.what}; the fallback failed too: {e}"
                ) from None
            if listing is not None:
                return listing
            return _cards_or_raise(body, url, api_error, page_error)

    listing, body, url, page_error = fetch_page(fetcher, page_url)
    if listing is not None:
        return listing
    assert page_error is not None
    if not params and url != page_url:
        # /papers redirects to the day it shows: ask the API for that day, not for its
        # undated default, which need not be the same list.
        with contextlib.suppress(DigestError):
            params, paged = api_params_for(url, today)
    try:
        return fetch_api(fetcher, api_url, params, paged)
    except (PageFormatError, FetchError) as api_error:
        return _cards_or_raise(body, url, page_error, api_error)


def _cards_or_raise(
    body: bytes, url: str, first: DigestError, second: DigestError | None
) -> Listing:
    try:
        return parse_page_cards(body, url)
    except PageFormatError as cards:
        # Say what every source said: the user should not have to rerun to find out.
        also = f"; the fallback failed too: {second}" if second else ""
        if isinstance(first, PageFormatError):
            raise PageFormatError(
                first.url, f"{first.what}{also}; and {cards.url} has no paper cards"
            ) from None
        raise


def _as_date(value: str | None) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None
