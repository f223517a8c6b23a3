"""Feed files: every feed parsed by feedparser against the database, hostile text, stable
bytes, the window, OPML, and `digest run` writing them.

The store is filled from real captures in ../shared/fixtures/real; hostile papers are
built by hand. The helpers shared with the newsboat test are in tests/support/feeds.py.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import feedparser
import httpx
import pytest
from click.testing import CliRunner

from digest.cli import main
from digest.config import Config, FeedsConfig, TopicConfig
from digest.errors import ConfigError
from digest.jobs import ingest_file, write_feeds
from digest.models import Listing, Paper
from digest.render.feed import EMPTY_UPDATED, clean
from digest.store import Store
from digest.topics import match_topics
from tests.support.feeds import (
    CAPTURES,
    TOPICS,
    expected_items,
    feed_config,
    fill_store,
    guid,
)
from tests.support.paths import PAGE_2024_08_01

JSONFEED_TOP_KEYS = {"version", "title", "items"}


def parse_ok(path: Path) -> Any:
    parsed = feedparser.parse(path.read_bytes())
    assert parsed.bozo == 0, f"{path.name}: {parsed.get('bozo_exception')}"
    return parsed


def check_jsonfeed(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    assert doc.keys() >= JSONFEED_TOP_KEYS
    assert doc["version"] == "https://jsonfeed.org/version/1.1"
    for item in doc["items"]:
        assert isinstance(item["id"], str) and item["id"]
        assert "content_html" in item or "content_text" in item
    return doc


# -- every feed against the database -------------------------------------------------


def test_every_feed_parses_and_holds_the_database_papers(tmp_path: Path, store: Store) -> None:
    fill_store(store)
    config = feed_config(tmp_path)
    report = write_feeds(config, store)
    expected = expected_items(config, store)
    folder = tmp_path / "feeds"

    assert set(report.items) == {"all", "agents", "vision", "nothing", "rising"}
    assert report.items["all"] == store.count_papers()  # fresh store: all within 7 days
    assert 0 < report.items["agents"] < report.items["all"]
    assert report.items["nothing"] == 0
    assert sorted(report.files) == sorted(p.name for p in folder.iterdir())
    for name, papers in expected.items():
        ids = [guid(name, sp) for sp in papers]
        titles = [clean(sp.paper.title) for sp in papers]
        assert report.items[name] == len(papers)
        for ext in ("xml", "atom"):
            parsed = parse_ok(folder / f"{name}.{ext}")
            assert [e.id for e in parsed.entries] == ids, f"{name}.{ext}"
            assert [e.title for e in parsed.entries] == titles, f"{name}.{ext}"
            assert parsed.feed.links, f"{name}.{ext} has no links"
        doc = check_jsonfeed(folder / f"{name}.json")
        assert [i["id"] for i in doc["items"]] == ids
        assert [i["title"] for i in doc["items"]] == titles
        assert doc["feed_url"] == f"https://papers.example.org/feeds/{name}.json"


def test_item_carries_links_people_votes_keywords_and_first_seen(
    tmp_path: Path, store: Store
) -> None:
    fill_store(store)
    config = feed_config(tmp_path)
    write_feeds(config, store)
    folder = tmp_path / "feeds"
    # A real paper with a GitHub repo, a thumbnail and authors.
    sp = next(
        sp
        for sp in store.papers()
        if sp.paper.github_repo and sp.paper.thumbnail and sp.paper.authors
    )
    p = sp.paper

    rss = parse_ok(folder / "all.xml")
    entry = next(e for e in rss.entries if e.id == p.arxiv_url)
    assert entry.link == p.hf_url
    assert entry.published_parsed[:6] == sp.first_seen.timetuple()[:6]
    assert p.github_repo in entry.summary and p.pdf_url in entry.summary
    assert f"{p.upvotes} upvote" in entry.summary
    assert entry.author == ", ".join(p.authors)  # one dc:creator: newsboat shows the first
    assert [t.term for t in entry.get("tags", [])] == list(p.ai_keywords)
    assert entry.media_thumbnail[0]["url"] == p.thumbnail
    assert [(e.href, e.type) for e in entry.enclosures] == [(p.thumbnail, "image/png")]
    # The guid is an identity, not the link readers open.
    channel = ET.parse(folder / "all.xml").getroot().find("channel")
    assert channel is not None
    guids = {g.text: g.get("isPermaLink") for g in channel.iter("guid")}
    assert guids[p.arxiv_url] == "false"
    assert channel.findtext("ttl") == str(config.feeds.ttl)

    atom = parse_ok(folder / "all.atom")
    entry = next(e for e in atom.entries if e.id == p.arxiv_url)
    hrefs = {link.href for link in entry.links}
    assert {p.hf_url, p.arxiv_url, p.pdf_url, p.github_repo} <= hrefs
    assert entry.link == p.hf_url
    assert entry.author == ", ".join(p.authors)  # one author: feedparser shows the last
    assert [(e.href, e.type) for e in entry.enclosures] == [(p.thumbnail, "image/png")]
    assert atom.feed.updated_parsed[:6] == max(s.first_seen for s in store.papers()).timetuple()[:6]

    item = next(i for i in check_jsonfeed(folder / "all.json")["items"] if i["id"] == p.arxiv_url)
    assert item["url"] == p.hf_url and item["image"] == p.thumbnail
    assert [a["name"] for a in item["authors"]] == list(p.authors)
    assert item["attachments"] == [{"url": p.thumbnail, "mime_type": "image/png"}]
    assert item["_papers_digest"]["upvotes"] == p.upvotes


def test_topic_feed_items_say_which_terms_matched(tmp_path: Path, store: Store) -> None:
    fill_store(store)
    config = feed_config(tmp_path)
    write_feeds(config, store)
    matches = match_topics([sp.paper for sp in store.papers()], config.topics)
    doc = check_jsonfeed(tmp_path / "feeds" / "agents.json")
    assert doc["items"]
    for item in doc["items"]:
        (match,) = [m for m in matches[item["_papers_digest"]["arxiv_id"]] if m.topic == "agents"]
        assert item["_papers_digest"]["matched_terms"] == list(match.terms)
        assert "Matched: " + ", ".join(match.terms) in item["content_html"]


def test_an_empty_store_gives_valid_empty_feeds(tmp_path: Path, store: Store) -> None:
    write_feeds(feed_config(tmp_path), store)
    for name in ("all", "agents"):
        for ext in ("xml", "atom"):
            parsed = parse_ok(tmp_path / "feeds" / f"{name}.{ext}")
            assert parsed.entries == []
        assert check_jsonfeed(tmp_path / "feeds" / f"{name}.json")["items"] == []
    atom = parse_ok(tmp_path / "feeds" / "all.atom")
    assert atom.feed.updated_parsed[:6] == EMPTY_UPDATED.timetuple()[:6]


# -- hostile text ----------------------------------------------------------------------

HOSTILE = [
    '<script>alert("x")</script> & Friends',
    'Tom & Jerry\'s "quoted" <b>bold</b> ]]> end',
    "Emoji 🚀🧪 and CJK 大语言模型的推理 and RTL العربية עברית",
    r"LaTeX $\alpha < \beta$ & $O(n^2)$ \textbf{x}",
]


def _hostile_papers() -> list[Paper]:
    papers = [
        Paper(
            id=f"2501.0000{i}",
            title=t,
            abstract=f"Abstract: {t}",
            authors=('Zoë <b>O\'Brien</b> & "co"', "李 & 王"),
            ai_keywords=("a<b", "c&d"),
            organization="R&D <Lab>",
        )
        for i, t in enumerate(HOSTILE)
    ]
    # Characters XML 1.0 cannot carry: dropped, the rest kept.
    papers.append(Paper(id="2501.00009", title="Ctrl\x00\x07\x1b chars\x0b ok", abstract="x\x01y"))
    return papers


@pytest.mark.parametrize("ext", ["xml", "atom", "json"])
def test_hostile_titles_and_abstracts_come_out_intact(
    tmp_path: Path, store: Store, ext: str
) -> None:
    papers = _hostile_papers()
    store.store_listing(Listing(papers=tuple(papers), url="hand-made", source="file"))
    write_feeds(feed_config(tmp_path), store)
    path = tmp_path / "feeds" / f"all.{ext}"
    if ext == "json":
        items = {i["id"]: i for i in check_jsonfeed(path)["items"]}
        got = {
            k: (i["title"], i["summary"], [a["name"] for a in i["authors"]])
            for k, i in items.items()
        }
    else:
        parsed = parse_ok(path)
        got = {}
        for e in parsed.entries:
            # The abstract sits escaped in the HTML body: unescape the first paragraph.
            body = ET.fromstring(f"<div>{e.summary}</div>").findtext("p") or ""
            # RSS and Atom carry all names in one element: readers show one.
            names = [a["name"] for a in e.get("authors", [])]
            got[e.id] = (e.title, body, names)
    for p in papers[:-1]:
        title, abstract, authors = got[p.arxiv_url]
        assert title == p.title
        assert abstract == p.abstract
        assert authors == (list(p.authors) if ext == "json" else [", ".join(p.authors)])
    title, abstract, _ = got["https://arxiv.org/abs/2501.00009"]
    assert title == "Ctrl chars ok"
    assert abstract == "xy"


# -- stable output ---------------------------------------------------------------------


def test_nothing_new_leaves_every_file_byte_identical_and_untouched(
    tmp_path: Path, store: Store
) -> None:
    fill_store(store)
    config = feed_config(tmp_path)
    first = write_feeds(config, store)
    folder = tmp_path / "feeds"
    old = datetime(2020, 1, 1, tzinfo=UTC).timestamp()
    for path in folder.iterdir():
        os.utime(path, (old, old))  # a rewrite would move the mtime to now
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    assert ingest_file(store, CAPTURES[-1]).new == 0  # the same capture again: nothing new
    second = write_feeds(config, store)

    assert second.written == ()
    assert sorted(second.unchanged) == sorted(first.written)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert all(p.stat().st_mtime == old for p in folder.iterdir())
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temp files left

    # A new paper does change the main feed, and its date.
    store.store_listing(
        Listing(papers=(Paper(id="2999.00001", title="A new one"),), url="x", source="file")
    )
    third = write_feeds(config, store)
    assert {"all.xml", "all.atom", "all.json"} <= set(third.written)
    assert "nothing.xml" in third.unchanged
    assert "A new one" in [e.title for e in parse_ok(folder / "all.xml").entries]


def test_window_is_the_last_days_before_the_newest_paper_and_max_items(
    tmp_path: Path, store: Store
) -> None:
    fill_store(store)
    everything = store.papers()
    newest = everything[0].first_seen
    old_ids = [sp.paper.id for sp in everything[::2]]
    marks = ",".join("?" * len(old_ids))
    # Seen 8 days before the newest: out of a 7-day window.
    store.db.execute(
        f"UPDATE papers SET first_seen = ? WHERE id IN ({marks})",
        [(newest - timedelta(days=8)).strftime("%Y-%m-%dT%H:%M:%SZ"), *old_ids],
    )
    store.db.conn.commit()

    report = write_feeds(feed_config(tmp_path), store)
    parsed = parse_ok(tmp_path / "feeds" / "all.xml")
    got = {e.id for e in parsed.entries}
    assert report.items["all"] == len(everything) - len(old_ids) == len(got)
    assert not got & {f"https://arxiv.org/abs/{i}" for i in old_ids}

    write_feeds(feed_config(tmp_path, days=30, max_items=5), store)
    parsed = parse_ok(tmp_path / "feeds" / "all.xml")
    assert [e.id for e in parsed.entries] == [sp.paper.arxiv_url for sp in store.papers()[:5]]


# -- OPML and config ----------------------------------------------------------------


def test_opml_lists_every_feed_with_its_url(tmp_path: Path, store: Store) -> None:
    write_feeds(feed_config(tmp_path), store)
    root = ET.parse(tmp_path / "feeds" / "feeds.opml").getroot()
    assert root.tag == "opml"
    outlines = root.findall("./body/outline")
    urls = [o.get("xmlUrl") for o in outlines]
    names = ["all", *(t.name for t in TOPICS), "rising"]
    assert urls == [f"https://papers.example.org/feeds/{n}.xml" for n in names]
    assert all(o.get("type") == "rss" and o.get("text") for o in outlines)
    assert "LLM agents" in outlines[1].get("title", "")
    for url in urls:
        assert url is not None
        assert (tmp_path / "feeds" / url.rsplit("/", 1)[1]).is_file()


def test_a_topic_named_all_is_refused(tmp_path: Path, store: Store) -> None:
    config = Config(
        feeds=FeedsConfig(dir=str(tmp_path / "feeds")),
        topics=[TopicConfig(name="all", keywords=["x"])],
    )
    with pytest.raises(ConfigError, match=r"topics\.all\.name"):
        write_feeds(config, store)


# -- the CLI -----------------------------------------------------------------------------


def test_digest_run_writes_the_feeds_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for var in ("DIGEST_CONFIG", "DIGEST_DB", "DIGEST_FEEDS_DIR", "DIGEST_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    runner = CliRunner()
    result = runner.invoke(main, ["run", "--from", str(PAGE_2024_08_01)])
    assert result.exit_code == 0, result.output
    # One closing line says what happened: the fetch, the feeds, the (skipped) send.
    last = result.output.strip().splitlines()[-1]
    assert "seen" in last and "send" in last and "no SMTP server" in last
    store = Store.open(tmp_path / "papers-digest.db")
    try:
        count = store.count_papers()
    finally:
        store.close()
    assert count > 0
    assert f"feeds: all {count} items" in last
    assert len(parse_ok(tmp_path / "feeds" / "all.xml").entries) == count
    assert (tmp_path / "feeds" / "all.atom").is_file()
    assert (tmp_path / "feeds" / "feeds.opml").is_file()

    # A fetch that fails: exit 1, and the feeds are rebuilt from the database anyway.
    (tmp_path / "feeds" / "all.xml").unlink()
    broken = tmp_path / "broken.html"
    broken.write_text("<html><body><p>no papers here</p></body></html>")
    result = runner.invoke(main, ["run", "--from", str(broken)])
    assert result.exit_code == 1
    assert "failed" in result.output
    assert "feeds:" in result.output
    assert len(parse_ok(tmp_path / "feeds" / "all.xml").entries) == count


# -- feeds of topics no longer configured ------------------------------------------------


def test_feeds_of_a_removed_topic_go_and_nothing_else_does(tmp_path: Path, store: Store) -> None:
    from digest.web.app import create_app
    from tests.support.webserver import serving

    fill_store(store)
    folder = tmp_path / "feeds"
    first = write_feeds(feed_config(tmp_path), store)
    assert first.removed == ()
    # Files that are not ours, some named like feeds: they must stay.
    mine = {"notes.xml": b"<x/>", "notes.atom": b"a", "README.txt": b"r", ".keep": b""}
    for name, data in mine.items():
        (folder / name).write_bytes(data)

    kept = TOPICS[:1]  # "vision" and "nothing" are dropped from the config
    config = Config(
        feeds=FeedsConfig(dir=str(folder), base_url="https://papers.example.org/"), topics=kept
    )
    second = write_feeds(config, store)

    gone = sorted(f"{t}.{ext}" for t in ("vision", "nothing") for ext in ("xml", "atom", "json"))
    assert sorted(second.removed) == gone
    assert "6 removed" in second.summary()
    on_disk = {p.name for p in folder.iterdir()}
    assert not on_disk & set(gone)
    assert set(mine) <= on_disk
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.name in mine} == mine
    assert on_disk == set(mine) | set(second.files)
    root = ET.parse(folder / "feeds.opml").getroot()
    assert [o.get("xmlUrl", "").rsplit("/", 1)[1] for o in root.iter("outline")] == [
        "all.xml",
        "agents.xml",
        "rising.xml",
    ]
    # The web front serves what is on disk: the old topic's feed is no longer there.
    with serving(create_app(config)) as base:
        assert httpx.get(f"{base}/feeds/vision.xml").status_code == 404
        assert httpx.get(f"{base}/feeds/agents.xml").status_code == 200

    # A list that is not ours (or is broken) names nothing: nothing is removed.
    (folder / "feeds.opml").write_text("<opml><body><outline xmlUrl='x/../../etc.xml'/>")
    (folder / "agents.extra.xml").write_bytes(b"mine")
    assert write_feeds(config, store).removed == ()
    assert (folder / "agents.extra.xml").read_bytes() == b"mine"


def test_an_opml_list_edited_by_hand_removes_only_plain_feed_names(
    tmp_path: Path, store: Store
) -> None:
    folder = tmp_path / "feeds"
    folder.mkdir()
    outside = tmp_path / "precious.xml"
    outside.write_bytes(b"keep")
    (folder / "old.xml").write_bytes(b"ours")
    (folder / "old.json").write_bytes(b"ours")
    (folder / "feeds.opml").write_text(
        "<opml version='2.0'><body>"
        "<outline xmlUrl='https://x.example/feeds/old.xml'/>"
        "<outline xmlUrl='https://x.example/feeds/..%2Fprecious.xml'/>"
        "<outline xmlUrl='https://x.example/feeds/all.xml'/>"
        "<outline xmlUrl='https://x.example/feeds/feeds.opml'/>"
        "</body></opml>"
    )
    report = write_feeds(feed_config(tmp_path), store)
    assert sorted(report.removed) == ["old.json", "old.xml"]
    assert outside.read_bytes() == b"keep"
    assert (folder / "all.xml").is_file() and (folder / "feeds.opml").is_file()


def test_digest_run_says_how_many_old_feed_files_it_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for var in ("DIGEST_CONFIG", "DIGEST_DB", "DIGEST_FEEDS_DIR", "DIGEST_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    topics = '[[topics]]\nname = "agents"\nkeywords = ["agent*"]\n'
    (tmp_path / "config.toml").write_text(
        topics + '[[topics]]\nname = "vision"\nkeywords = ["image*"]\n'
    )
    runner = CliRunner()
    result = runner.invoke(main, ["run", "--from", str(PAGE_2024_08_01)])
    assert result.exit_code == 0, result.output
    assert "removed" not in result.output
    assert (tmp_path / "feeds" / "vision.atom").is_file()

    (tmp_path / "config.toml").write_text(topics)
    result = runner.invoke(main, ["run", "--from", str(PAGE_2024_08_01)])
    assert result.exit_code == 0, result.output
    assert "3 of old topics removed" in result.output.strip().splitlines()[-1]
    assert not list((tmp_path / "feeds").glob("vision.*"))
    assert (tmp_path / "feeds" / "agents.atom").is_file()


def test_an_old_feed_that_cannot_be_removed_is_named_and_tried_again(
    tmp_path: Path, store: Store
) -> None:
    from digest.errors import DigestError

    fill_store(store)
    folder = tmp_path / "feeds"
    write_feeds(feed_config(tmp_path), store)
    old_list = (folder / "feeds.opml").read_bytes()
    (folder / "vision.atom").unlink()
    (folder / "vision.atom").mkdir()  # unlink() cannot remove a folder, even as root
    (folder / "vision.atom" / "x").write_bytes(b"")
    config = Config(feeds=FeedsConfig(dir=str(folder)), topics=TOPICS[:1])
    with pytest.raises(DigestError, match=r"vision\.atom: cannot remove the old feed file"):
        write_feeds(config, store)
    assert (folder / "feeds.opml").read_bytes() == old_list  # still names "vision"

    (folder / "vision.atom" / "x").unlink()
    (folder / "vision.atom").rmdir()
    assert "vision.json" in write_feeds(config, store).removed
    assert not list(folder.glob("vision.*"))
