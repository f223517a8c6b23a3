"""The W3C feed validator's rules that our feeds once broke, one test per rule.

The validator (github.com/w3c/feedvalidator) was run by hand on these feeds; no test
depends on it. Each test here restates one of its rules, named after the message it
logs, and checks every RSS and Atom file `write_feeds` makes from real captures (plus an
empty topic feed):

- MediaGroupWithoutAlternatives (error): a media:group needs two or more media:content.
- DuplicateUpdated (warning): two Atom entries with the same atom:updated.
- MissingDCLanguage (best practice): the feed names its language.
- ImplausibleDate (warning): a date before 1990 or more than 10 minutes in the future.
- The enclosure rules: RSS <enclosure> has url (http), length (a non-negative integer; 0
  for unknown, UseZeroForUnknown) and type (a MIME type); one per item. Atom's
  link rel="enclosure" has a MIME type and, if any, a non-negative length.
"""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET
from collections import Counter
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest

from digest.jobs import write_feeds
from digest.models import Listing, Paper, StoredPaper
from digest.store import Store
from tests.support.feeds import feed_config, fill_store, guid

ATOM = "{http://www.w3.org/2005/Atom}"
MEDIA = "{http://search.yahoo.com/mrss/}"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
FEEDS = ("all", "agents", "vision", "nothing")  # "nothing" matches no paper: an empty feed
# The validator's MIME type pattern (validators.mime_re), without parameters.
MIME = re.compile(r'[^\s()<>,;:\\"/\[\]?=]+/[^\s()<>,;:\\"/\[\]?=]+')
LANGUAGE_TAG = re.compile(r"[a-z]{2,3}(-[A-Za-z0-9]{1,8})*")  # what its iso639 check accepts


@pytest.fixture(scope="module")
def feeds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, StoredPaper]]:
    """Feeds written once from real captures; yields (folder, guid -> stored paper)."""
    tmp = tmp_path_factory.mktemp("rules")
    store = Store.open(tmp / "test.db")
    try:
        fill_store(store)
        write_feeds(feed_config(tmp), store)
        papers = store.papers()
    finally:
        store.close()
    by_guid = {guid(name, sp): sp for sp in papers for name in FEEDS}
    return tmp / "feeds", by_guid


def files(ext: str) -> list[str]:
    return [f"{name}.{ext}" for name in FEEDS]


def rss_items(folder: Path, name: str) -> list[ET.Element]:
    channel = ET.parse(folder / name).getroot().find("channel")
    assert channel is not None
    return channel.findall("item")


def atom_entries(folder: Path, name: str) -> list[ET.Element]:
    return ET.parse(folder / name).getroot().findall(f"{ATOM}entry")


@pytest.mark.parametrize("name", files("xml") + files("atom"))
def test_media_group_never_wraps_a_single_thing(
    feeds: tuple[Path, dict[str, StoredPaper]], name: str
) -> None:
    """MediaGroupWithoutAlternatives: the thumbnail goes straight into the item."""
    folder, papers = feeds
    root = ET.parse(folder / name).getroot()
    for group in root.iter(f"{MEDIA}group"):
        assert len(group.findall(f"{MEDIA}content")) >= 2, ET.tostring(group)
    items = rss_items(folder, name) if name.endswith(".xml") else atom_entries(folder, name)
    for item in items:
        key = item.findtext("guid") or item.findtext(f"{ATOM}id")
        thumbs = [t.get("url") for t in item.findall(f"{MEDIA}thumbnail")]
        expected = papers[str(key)].paper.thumbnail
        assert thumbs == ([expected] if expected else [])


@pytest.mark.parametrize("name", files("atom"))
def test_atom_updated_is_unique_per_entry_and_in_the_first_seen_second(
    feeds: tuple[Path, dict[str, StoredPaper]], name: str
) -> None:
    """DuplicateUpdated: a run's papers share a second; each entry still gets its own."""
    folder, papers = feeds
    entries = atom_entries(folder, name)
    updated = [e.findtext(f"{ATOM}updated") for e in entries]
    assert [v for v, n in Counter(updated).items() if n > 1] == []
    for entry, value in zip(entries, updated, strict=True):
        sp = papers[str(entry.findtext(f"{ATOM}id"))]
        when = datetime.fromisoformat(str(value))
        # Still the moment we first saw the paper, to the second: readers sort it as new.
        assert sp.first_seen <= when < sp.first_seen + timedelta(seconds=1)
        assert entry.findtext(f"{ATOM}published") == value


def test_item_dates_are_the_same_in_every_feed_and_survive_new_papers(
    tmp_path: Path, store: Store
) -> None:
    """The dates depend on the papers only: not on the feed holding them, nor on papers
    that came later."""
    fill_store(store)
    write_feeds(feed_config(tmp_path), store)
    folder = tmp_path / "feeds"

    def dates(name: str) -> dict[str, str]:
        out = {}
        for e in atom_entries(folder, name):
            arxiv = str(e.findtext(f"{ATOM}id")).split("#")[0]
            out[arxiv] = str(e.findtext(f"{ATOM}updated"))
        return out

    everything = dates("all.atom")
    for topic in ("agents", "vision"):
        in_topic = dates(f"{topic}.atom")
        assert in_topic and all(everything[k] == v for k, v in in_topic.items())
    later = max(sp.first_seen for sp in store.papers()) + timedelta(seconds=1)
    store.store_listing(
        Listing(papers=(Paper(id="0001.00001", title="Later"),), url="x", source="file")
    )
    # A later run's second (this test's runs may share one; real runs are hours apart).
    store.db.execute(
        "UPDATE papers SET first_seen = ? WHERE id = ?",
        [later.strftime("%Y-%m-%dT%H:%M:%SZ"), "0001.00001"],
    )
    store.db.conn.commit()
    write_feeds(feed_config(tmp_path), store)
    again = dates("all.atom")
    assert again.pop("https://arxiv.org/abs/0001.00001") == later.isoformat()
    assert again == everything


@pytest.mark.parametrize("name", FEEDS)
def test_every_feed_names_its_language(
    feeds: tuple[Path, dict[str, StoredPaper]], name: str
) -> None:
    """MissingDCLanguage: RSS <language>, Atom xml:lang, JSON Feed "language"."""
    import json

    folder, _ = feeds
    channel = ET.parse(folder / f"{name}.xml").getroot().find("channel")
    assert channel is not None
    assert LANGUAGE_TAG.fullmatch(channel.findtext("language") or "")
    assert LANGUAGE_TAG.fullmatch(ET.parse(folder / f"{name}.atom").getroot().get(XML_LANG, ""))
    doc = json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))
    assert LANGUAGE_TAG.fullmatch(doc.get("language", ""))


@pytest.mark.parametrize("name", files("xml") + files("atom"))
def test_every_date_is_plausible(feeds: tuple[Path, dict[str, StoredPaper]], name: str) -> None:
    """ImplausibleDate: not before 1990 and not more than 10 minutes ahead, empty feeds too."""
    folder, _ = feeds
    root = ET.parse(folder / name).getroot()
    if name.endswith(".xml"):
        values = [parsedate_to_datetime(e.text or "") for e in root.iter("lastBuildDate")]
        values += [parsedate_to_datetime(e.text or "") for e in root.iter("pubDate")]
    else:
        tags = (f"{ATOM}updated", f"{ATOM}published")
        values = [datetime.fromisoformat(e.text or "") for t in tags for e in root.iter(t)]
    assert values
    latest = datetime.fromtimestamp(time.time() + 600, UTC)
    for value in values:
        assert datetime(1990, 1, 1, tzinfo=UTC) <= value <= latest, name


@pytest.mark.parametrize("name", files("xml"))
def test_rss_items_with_a_thumbnail_have_one_complete_enclosure(
    feeds: tuple[Path, dict[str, StoredPaper]], name: str
) -> None:
    """Enclosure: url (http), length (non-negative integer, 0 when unknown), MIME type."""
    folder, papers = feeds
    for item in rss_items(folder, name):
        paper = papers[str(item.findtext("guid"))].paper
        enclosures = item.findall("enclosure")
        if not paper.thumbnail:
            assert enclosures == []
            continue
        (enclosure,) = enclosures
        assert enclosure.get("url") == paper.thumbnail
        assert str(enclosure.get("url")).startswith(("http://", "https://"))
        length = enclosure.get("length")
        assert length is not None and length.isdigit() and int(length) >= 0
        assert MIME.fullmatch(enclosure.get("type") or "")
        assert enclosure.get("type") == "image/png"  # HF's thumbnails


@pytest.mark.parametrize("name", files("atom"))
def test_atom_entries_with_a_thumbnail_have_an_enclosure_link(
    feeds: tuple[Path, dict[str, StoredPaper]], name: str
) -> None:
    """Atom link rel="enclosure": href, a MIME type, a length only if non-negative."""
    folder, papers = feeds
    for entry in atom_entries(folder, name):
        paper = papers[str(entry.findtext(f"{ATOM}id"))].paper
        links = [link for link in entry.findall(f"{ATOM}link") if link.get("rel") == "enclosure"]
        if not paper.thumbnail:
            assert links == []
            continue
        (link,) = links
        assert link.get("href") == paper.thumbnail
        assert MIME.fullmatch(link.get("type") or "")
        length = link.get("length")
        assert length is None or (length.isdigit() and int(length) >= 0)
