"""Feed files from the database: RSS 2.0, Atom and JSON Feed 1.1, everything and per topic.

`write_feeds` rebuilds every file from the store, never from a fetch result, so a run
whose fetch failed still leaves correct feeds. Each file goes to a temporary file in the
same folder and is moved into place (`os.replace`): a reader never sees half a file.

Files in `config.feeds.dir`: all.xml (RSS 2.0), all.atom, all.json (JSON Feed 1.1); the
same three per configured topic, named after it (agents.xml, agents.atom, agents.json);
feeds.opml, listing every feed (its RSS file) for a one-click import.

The same database gives the same bytes, and a file whose bytes did not change is not
rewritten (its mtime stays, so the web server can answer 304):

- The window "the last `feeds.days` days" ends at the newest `first_seen` in the store,
  not at the wall clock. With nothing new the feeds keep their last papers and do not
  change when a day passes (a quiet week does not empty them). At most
  `feeds.max_items` items per feed.
- A feed's lastBuildDate / updated is the newest `first_seen` among its items
  (1970-01-01T00:00:00Z for an empty feed), never "now".
- Items come newest first, in the store's order (first seen, list day, upvotes, id).
- What does change a file without a new paper: a later run refreshing a paper's
  upvotes, comments, GitHub repo or keywords, which the item shows.

Items: the guid / Atom id / JSON id is the arXiv abstract URL, which never changes for a
paper (isPermaLink="false": the item's link is its Hugging Face page, the guid is only
an identity). The item date is when we first saw the paper, so readers sort it as new
even when arXiv published it weeks before. Text that XML 1.0 cannot carry (control
characters, lone surrogates) is dropped, not fatal.
"""

from __future__ import annotations

import html
import json
import os
import re
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from feedgen.ext.base import BaseEntryExtension
from feedgen.feed import FeedGenerator
from feedgen.util import xml_elem

from digest import __version__
from digest.config import Config, TopicConfig
from digest.errors import ConfigError, DigestError
from digest.models import StoredPaper, TopicMatch
from digest.store import Store
from digest.topics import match_topics

ALL = "all"
FORMATS = ("xml", "atom", "json")
OPML_NAME = "feeds.opml"
HOME_URL = "https://huggingface.co/papers"
EMPTY_UPDATED = datetime(1970, 1, 1, tzinfo=UTC)  # an empty feed's date: fixed, so stable
JSONFEED_VERSION = "https://jsonfeed.org/version/1.1"

# Everything outside XML 1.0's Char production.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@dataclass(frozen=True)
class FeedReport:
    """What `write_feeds` did: items per feed, and which files it rewrote."""

    dir: Path
    items: dict[str, int]  # "all" or a topic name -> items in that feed
    written: tuple[str, ...]  # file names whose bytes changed
    unchanged: tuple[str, ...]  # file names left as they were

    @property
    def files(self) -> tuple[str, ...]:
        return self.written + self.unchanged

    def summary(self) -> str:
        """One line for the end of `digest run`."""
        counts = ", ".join(f"{name} {n}" for name, n in self.items.items())
        return (
            f"feeds: {len(self.files)} files in {self.dir} ({len(self.written)} rewritten, "
            f"{len(self.unchanged)} unchanged); items: {counts}"
        )


@dataclass(frozen=True)
class _Feed:
    name: str  # "all" or the topic's name: the file stem
    title: str
    description: str
    items: list[tuple[StoredPaper, TopicMatch | None]]

    @property
    def updated(self) -> datetime:
        return max((sp.first_seen for sp, _ in self.items), default=EMPTY_UPDATED)


def write_feeds(config: Config, store: Store) -> FeedReport:
    """Rebuild every feed file from the store; return what was written and what was kept.

    Raises ConfigError for a topic named "all" (it would overwrite the main feed) or a
    topic term that cannot match; DigestError naming the file when one cannot be written.
    """
    for topic in config.topics:
        if topic.name == ALL:
            raise ConfigError(
                f"topic name {ALL!r} is taken by the feed of every paper; rename the topic",
                path=config.path,
                key=f"topics.{ALL}.name",
            )
    window = papers_in_window(store, config.feeds.days)
    feeds = _feeds(config, window)
    folder = Path(config.feeds.dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DigestError(f"{folder}: cannot create the feeds folder: {e.strerror}") from None
    files: dict[str, bytes] = {}
    for feed in feeds:
        files[f"{feed.name}.xml"] = render_rss(config, feed)
        files[f"{feed.name}.atom"] = render_atom(config, feed)
        files[f"{feed.name}.json"] = render_json(config, feed)
    files[OPML_NAME] = render_opml(config, [(f.name, f.title) for f in feeds])
    written: list[str] = []
    unchanged: list[str] = []
    for name, data in files.items():
        (written if write_if_changed(folder / name, data) else unchanged).append(name)
    return FeedReport(
        dir=folder,
        items={f.name: len(f.items) for f in feeds},
        written=tuple(written),
        unchanged=tuple(unchanged),
    )


def papers_in_window(store: Store, days: int) -> list[StoredPaper]:
    """Return the papers first seen within `days` days of the newest one, newest first.

    Backfilled papers are left out: a past day's list is archive, not news for a reader.
    """
    newest = store.papers(limit=1, new_only=True)
    if not newest:
        return []
    since = newest[0].first_seen - timedelta(days=days)
    return store.papers(first_seen_since=since, new_only=True)


def _feeds(config: Config, window: list[StoredPaper]) -> list[_Feed]:
    limit = config.feeds.max_items
    title = config.feeds.title
    feeds = [
        _Feed(
            ALL,
            title,
            f"{title}: every paper, newest first (last {config.feeds.days} days)",
            [(sp, None) for sp in window[:limit]],
        )
    ]
    matches = match_topics((sp.paper for sp in window), config.topics) if config.topics else {}
    for topic in config.topics:
        items: list[tuple[StoredPaper, TopicMatch | None]] = []
        for sp in window:
            hit = next((m for m in matches.get(sp.paper.id, ()) if m.topic == topic.name), None)
            if hit is not None:
                items.append((sp, hit))
                if len(items) >= limit:
                    break
        feeds.append(
            _Feed(
                topic.name,
                f"{title}: {topic.display_title}",
                _topic_description(title, topic, config.feeds.days),
                items,
            )
        )
    return feeds


def _topic_description(title: str, topic: TopicConfig, days: int) -> str:
    terms = [*topic.keywords, *topic.phrases, *topic.authors, *topic.organizations]
    about = f" ({', '.join(terms)})" if terms else ""
    return f"{title} in topic {topic.display_title!r}{about}, newest first (last {days} days)"


# -- one feed in each format ---------------------------------------------------------


def clean(text: str | None) -> str:
    """Return `text` without the characters XML 1.0 cannot carry (control chars)."""
    return _NOT_XML.sub("", text or "")


def _http(url: str | None) -> str | None:
    # Only web links go into a feed: a `javascript:` project page must not become a link.
    url = clean(url).strip()
    return url if url.startswith(("https://", "http://")) else None


def feed_url(config: Config, file_name: str) -> str:
    """Return the public URL of a feed file: base_url + /feeds/<file>."""
    return f"{config.feeds.base_url.rstrip('/')}/feeds/{file_name}"


def _links(sp: StoredPaper) -> list[tuple[str, str]]:
    """(label, URL) of the paper's pages, Hugging Face first."""
    p = sp.paper
    links = [("Hugging Face", p.hf_url), ("arXiv", p.arxiv_url), ("PDF", p.pdf_url)]
    for label, url in (("GitHub", p.github_repo), ("Project page", p.project_page)):
        if web := _http(url):
            links.append((label, web))
    return links


def item_html(sp: StoredPaper, match: TopicMatch | None) -> str:
    """Return the item body as escaped HTML: abstract, people, votes, matched terms, links."""
    p = sp.paper
    e = html.escape
    parts = []
    if p.withdrawn:
        parts.append("<p><strong>Withdrawn from arXiv.</strong></p>")
    if p.abstract:
        parts.append(f"<p>{e(clean(p.abstract))}</p>")
    if p.authors:
        parts.append(f"<p>Authors: {e(', '.join(clean(a) for a in p.authors))}</p>")
    if p.organization:
        parts.append(f"<p>Organisation: {e(clean(p.organization))}</p>")
    votes = f"{p.upvotes} upvote{'s' if p.upvotes != 1 else ''}"
    if p.github_stars:
        votes += f", {p.github_stars} GitHub stars"
    parts.append(f"<p>{votes}</p>")
    if match is not None and match.terms:
        parts.append(f"<p>Matched: {e(', '.join(clean(t) for t in match.terms))}</p>")
    links = " | ".join(f'<a href="{e(url)}">{e(label)}</a>' for label, url in _links(sp))
    parts.append(f"<p>{links}</p>")
    return "\n".join(parts)


def _generator(config: Config, feed: _Feed, file_name: str, *, rss: bool) -> FeedGenerator:
    fg = FeedGenerator()
    fg.load_extension("media")
    fg.load_extension("dc", atom=False, rss=True)  # RSS <author> needs an email; dc:creator not
    self_url = feed_url(config, file_name)
    fg.id(self_url)
    fg.title(clean(feed.title))
    fg.description(clean(feed.description))
    fg.subtitle(clean(feed.description))
    fg.author({"name": "papers-digest"})
    # RSS's <link> is feedgen's last link: the self link must come first.
    fg.link(href=self_url, rel="self")
    fg.link(href=HOME_URL, rel="alternate")
    fg.generator("papers-digest", version=__version__)
    fg.ttl(config.feeds.ttl)
    # feedgen stamps both with the wall clock; derive them from the data instead.
    fg.updated(feed.updated)
    fg.lastBuildDate(feed.updated)
    for sp, match in feed.items:
        p = sp.paper
        fe = fg.add_entry(order="append")
        fe.id(p.arxiv_url)
        fe.guid(p.arxiv_url, permalink=False)
        fe.title(clean(p.title) or p.id)
        if rss:
            fe.link(href=p.hf_url)
        else:
            fe.register_extension("atom_links", _AtomLinks, atom=True, rss=False)
            fe.atom_links.links = [(p.hf_url, "alternate", "Hugging Face")] + [
                (url, "related", label) for label, url in _links(sp)[1:]
            ]
        # One copy of the body per format: RSS <description>, Atom <content type="html">.
        if rss:
            fe.description(item_html(sp, match))
        else:
            fe.content(item_html(sp, match), type="html")
        for name in p.authors:
            if name := clean(name).strip():
                fe.author(name=name)
                fe.dc.dc_creator(name)
        for keyword in p.ai_keywords:
            if keyword := clean(keyword).strip():
                fe.category(term=keyword)
        if thumb := _http(p.thumbnail):
            fe.media.thumbnail(url=thumb)
        fe.published(sp.first_seen)
        fe.updated(sp.first_seen)
        fe.pubDate(sp.first_seen)
    return fg


class _AtomLinks(BaseEntryExtension):
    """An entry's Atom links with their rel and title.

    feedgen 1.0.0 drops rel / type / title of entry links (it overwrites its loop
    variable), which turns every related link into an alternate one; this adds them.
    """

    def __init__(self) -> None:
        self.links: list[tuple[str, str, str]] = []  # (href, rel, title)

    def extend_atom(self, entry: Any) -> Any:
        for href, rel, title in self.links:
            xml_elem("link", entry, href=href, rel=rel, type="text/html", title=title)
        return entry


def render_rss(config: Config, feed: _Feed) -> bytes:
    """Return the feed as RSS 2.0 bytes (UTF-8)."""
    return bytes(_generator(config, feed, f"{feed.name}.xml", rss=True).rss_str(pretty=True))


def render_atom(config: Config, feed: _Feed) -> bytes:
    """Return the feed as Atom bytes (UTF-8)."""
    return bytes(_generator(config, feed, f"{feed.name}.atom", rss=False).atom_str(pretty=True))


def render_json(config: Config, feed: _Feed) -> bytes:
    """Return the feed as JSON Feed 1.1 bytes (UTF-8)."""
    items: list[dict[str, Any]] = []
    for sp, match in feed.items:
        p = sp.paper
        item: dict[str, Any] = {
            "id": p.arxiv_url,
            "url": p.hf_url,
            "external_url": p.arxiv_url,
            "title": clean(p.title) or p.id,
            "content_html": item_html(sp, match),
            "summary": clean(p.abstract),
            "date_published": _iso(sp.first_seen),
            "authors": [{"name": clean(a)} for a in p.authors if clean(a).strip()],
            "tags": [clean(k) for k in p.ai_keywords if clean(k).strip()],
        }
        if thumb := _http(p.thumbnail):
            item["image"] = thumb
        # JSON Feed extensions start with "_": what the other formats say in prose.
        extra: dict[str, Any] = {
            "arxiv_id": p.id,
            "upvotes": p.upvotes,
            "comments": p.comments,
            "organization": clean(p.organization) or None,
            "pdf_url": p.pdf_url,
            "github_repo": _http(p.github_repo),
            "github_stars": p.github_stars,
            "project_page": _http(p.project_page),
            "withdrawn": p.withdrawn,
        }
        if match is not None:
            extra["matched_terms"] = [clean(t) for t in match.terms]
        item["_papers_digest"] = extra
        items.append(item)
    doc = {
        "version": JSONFEED_VERSION,
        "title": clean(feed.title),
        "home_page_url": HOME_URL,
        "feed_url": feed_url(config, f"{feed.name}.json"),
        "description": clean(feed.description),
        "authors": [{"name": "papers-digest"}],
        "_papers_digest": {"updated": _iso(feed.updated), "ttl_minutes": config.feeds.ttl},
        "items": items,
    }
    return (json.dumps(doc, ensure_ascii=False, indent=2) + "\n").encode("utf-8")


def render_opml(config: Config, feeds: Sequence[tuple[str, str]]) -> bytes:
    """Return an OPML 2.0 list of every feed (name, title), by its RSS URL.

    Only the RSS file of each: importing the list subscribes once per feed, not thrice.
    """
    root = ET.Element("opml", version="2.0")
    head = ET.SubElement(root, "head")
    ET.SubElement(head, "title").text = clean(config.feeds.title)
    body = ET.SubElement(root, "body")
    for name, title in feeds:
        ET.SubElement(
            body,
            "outline",
            type="rss",
            text=clean(title),
            title=clean(title),
            xmlUrl=feed_url(config, f"{name}.xml"),
            htmlUrl=HOME_URL,
        )
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- files -----------------------------------------------------------------------------


def write_if_changed(path: Path, data: bytes) -> bool:
    """Atomically replace `path` with `data` unless it already holds exactly that.

    Returns True when the file was written. Raises DigestError naming the file.
    """
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    except OSError as e:
        raise DigestError(f"{path}: cannot read the feed file: {e.strerror}") from None
    tmp: str | None = None
    try:
        # Same folder as the target, so os.replace is a rename on one file system.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a web server in front must read it
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise DigestError(f"{path}: cannot write the feed file: {e.strerror}") from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    return True
