"""Arbitrary listings, read by the real parser, through store, feeds, email and archive.

Hypothesis builds Daily Papers JSON the way the page or the API could carry it: any
unicode in the text (lone surrogates and control characters included), dates from year 1
to 9999 with any offset, fields missing or of the wrong type, counts past 64 bits, odd
ids. Whatever the parser accepts must then be stored, put in the feeds, mailed and shown
on the archive page with no exception but the project's own (DigestError).
"""

from __future__ import annotations

import json
import tempfile
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from digest.clock import now_utc
from digest.deliver.smtp import flatten
from digest.errors import DigestError, PageFormatError
from digest.jobs import write_feeds
from digest.models import Subscriber
from digest.render.email import DigestRenderer
from digest.source.parse import parse_api, parse_page
from digest.store import Store
from digest.web.app import create_app
from tests.support.pages import with_props
from tests.support.paths import PAGE_2024_08_01
from tests.support.webserver import make_config

# Every code point, surrogates (category Cs) and controls (Cc) included.
_any_char = st.characters(blacklist_categories=())
_text = st.text(_any_char, max_size=40)
_wordy = st.text(st.sampled_from("agent image video diffusion robot  \t\n-"), max_size=40)


@st.composite
def _timestamps(draw: st.DrawFn) -> str:
    """An ISO time anywhere in years 1-9999, with any offset (or none, or Z)."""
    moment = draw(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)))
    offset = draw(st.none() | st.just("Z") | st.integers(-23 * 60 - 59, 23 * 60 + 59))
    text = moment.isoformat()
    if offset == "Z":
        return text + "Z"
    if isinstance(offset, int):
        return moment.replace(tzinfo=timezone(timedelta(minutes=offset))).isoformat()
    return text


_dates = st.one_of(
    _timestamps(),
    st.sampled_from(
        [
            "0001-01-01T00:00:00+05:00",
            "9999-12-31T23:59:59-12:00",
            "9999-12-31",
            "0001-01-01",
            "2024-02-30T00:00:00Z",
            "",
        ]
    ),
    _text,
)
_counts = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(st.sampled_from("0123456789,²"), max_size=25),
    st.none(),
    st.booleans(),
)
_arxiv_ids = st.from_regex(r"\A[0-9]{4}\.[0-9]{4,5}(v[0-9])?\Z")
_ids = st.one_of(
    _arxiv_ids,
    _text,
    st.integers(),
    st.none(),
)
_urls = st.one_of(st.none(), _text, _text.map(lambda t: "https://" + t), st.integers())
_names = st.one_of(_text, _wordy)
_authors = (
    st.lists(
        st.fixed_dictionaries(
            {"name": st.one_of(_names, st.integers())}, optional={"hidden": st.booleans()}
        ),
        max_size=4,
    )
    | _text
)
_orgs = st.one_of(
    st.none(),
    st.fixed_dictionaries({}, optional={"name": _names, "fullname": _names}),
    _text,
)
# Starting with a letter or digit, so that some text is left once controls are dropped.
_solid = st.tuples(st.characters(categories=["L", "N"]), _text).map("".join)
_paper_fields = dict(
    optional={
        "summary": st.one_of(_names, st.none()),
        "authors": _authors,
        "publishedAt": _dates,
        "submittedOnDailyAt": _dates,
        "upvotes": _counts,
        "githubRepo": _urls,
        "githubStars": _counts,
        "projectPage": _urls,
        "ai_summary": st.one_of(_names, st.none()),
        "ai_keywords": st.lists(st.one_of(_names, st.integers()), max_size=4) | _text,
        "organization": _orgs,
        "withdrawnAt": st.one_of(st.none(), _dates),
        "submittedOnDailyBy": st.one_of(
            st.none(), _text, st.fixed_dictionaries({}, optional={"user": _text, "name": _text})
        ),
    },
)
# Mostly papers the parser takes (an id and a title that survive cleaning); some with
# any id and title at all, which it may refuse.
_good_paper = st.fixed_dictionaries(
    {"id": _arxiv_ids | _solid, "title": _solid | _wordy.map("Agents and video: {}".format)},
    **_paper_fields,
)
_any_paper = st.fixed_dictionaries(
    {"id": _ids, "title": st.one_of(_names, st.none(), st.integers())}, **_paper_fields
)
_item_fields = dict(
    optional={
        "title": _names,
        "summary": _names,
        "publishedAt": _dates,
        "numComments": _counts,
        "thumbnail": _urls,
        "organization": _orgs,
        "submittedBy": st.one_of(st.none(), st.fixed_dictionaries({}, optional={"name": _text})),
    },
)
_good_item = st.fixed_dictionaries({"paper": _good_paper}, **_item_fields)
_any_item = st.fixed_dictionaries({"paper": _any_paper}, **_item_fields)
_listings = st.lists(_good_item, max_size=6) | st.lists(_any_item, max_size=3)
_SHELL = PAGE_2024_08_01.read_text(encoding="utf-8")
SUBSCRIBERS = (
    Subscriber("every@example.net", token="tok-every"),
    Subscriber("agents@example.net", topics=("agents",), token="tok-agents"),
    Subscriber("mine@example.net", token="tok-mine", keywords='robot*, "video diffusion"'),
)


def _as_page(items: list[Any], day: str) -> bytes:
    # RECONSTRUCTED: the real page's shell around generated props, non-ASCII escaped so a
    # lone surrogate travels as \ud83d, as it could in HF's own JSON.
    props = {"dailyPapers": items, "dateString": day}
    return with_props(_SHELL, props, ascii_only=True).encode("utf-8")


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(items=_listings, as_page=st.booleans())
def test_any_parsed_listing_goes_through_store_feeds_email_and_archive(
    items: list[Any], as_page: bool
) -> None:
    today = now_utc().date()
    try:
        if as_page:
            listing = parse_page(_as_page(items, today.isoformat()), "https://hf.test/papers")
        else:
            listing = parse_api(json.dumps(items), f"https://hf.test/api?date={today}")
    except PageFormatError:
        return  # the parser refused it, with a message naming the item: allowed
    with tempfile.TemporaryDirectory() as folder:
        config = make_config(Path(folder))
        store = Store.open(config.store.database)
        try:
            run = store.store_listing(listing)
            assert run.status in ("ok", "empty")  # everything the parser gives is storable
            assert run.left_out == ()
            assert run.new == len(listing.papers)
            run.summary().encode("utf-8")
            papers = store.claim_digest(today)
            assert len(papers) == len(listing.papers)
            try:
                write_feeds(config, store)
            except DigestError:
                pass
            else:
                for name in ("all.xml", "all.atom"):
                    ET.fromstring((Path(config.feeds.dir) / name).read_bytes())
                json.loads((Path(config.feeds.dir) / "all.json").read_bytes())
            renderer = DigestRenderer(config, papers, today)
            for subscriber in SUBSCRIBERS:
                try:
                    message = renderer.render(subscriber)
                except DigestError:
                    continue
                if message is not None:
                    flatten(message)
            renderer.archive_page()
        finally:
            store.close()
        with TestClient(create_app(config)) as client:
            for path in ("/archive", f"/archive/{today.isoformat()}", "/feeds/all.xml"):
                response = client.get(path)
                assert response.status_code < 500, (path, response.text[:500])
            if papers:
                assert client.get(f"/archive/{today.isoformat()}").status_code == 200


def test_the_strategies_reach_the_hard_cases() -> None:
    # The property above is only as good as what it generates: these must come up.
    # find() raises NoSuchExample when the strategy never makes one.
    find(_text, lambda t: any(0xD800 <= ord(c) <= 0xDFFF for c in t))
    find(_text, lambda t: any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in t))
    find(_dates, lambda d: d.startswith("0001-") and d.endswith("+05:00"))
    find(_counts, lambda n: isinstance(n, int) and not isinstance(n, bool) and n >= 2**63)
