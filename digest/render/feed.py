"""Feed files from stored papers: RSS 2.0, Atom and JSON Feed 1.1, everything and per topic.

`write_feed_files` builds every file from the stored papers it is given (`jobs.write_feeds`
reads them from the store, never from a fetch result), so a run whose fetch failed still
leaves correct feeds. Each file goes to a temporary file in the
same folder and is moved into place (`os.replace`): a reader never sees half a file.

Files in `config.feeds.dir`: all.xml (RSS 2.0), all.atom, all.json (JSON Feed 1.1); the
same three per configured topic, named after it (agents.xml, agents.atom, agents.json),
and for the rising papers (rising.xml, .atom, .json: upvotes grown most in 24 hours);
feeds.opml, listing every feed (its RSS file) for a one-click import. The feeds of a
topic that is no longer configured are removed: the previous feeds.opml says which
feeds this writer made, so no other file in the folder is ever touched.

The same database gives the same bytes, and a file whose bytes did not change is not
rewritten (its mtime stays, so the web server can answer 304):

- The window "the last `feeds.days` days" ends at the newest `first_seen` in the store,
  not at the wall clock. With nothing new the feeds keep their last papers and do not
  change when a day passes (a quiet week does not empty them). At most
  `feeds.max_items` items per feed.
- A feed's lastBuildDate / updated is the newest item date among its items
  (2000-01-01T00:00:00Z for an empty feed: fixed, and plausible to validators), never
  "now".
- Items come newest first, in the store's order (first seen, list day, upvotes, id).
- What does change a file without a new paper: a later run refreshing a paper's
  upvotes, comments, GitHub repo or keywords, which the item shows.

Items: the guid / Atom id / JSON id is the arXiv abstract URL in all.*, and that URL
plus "#topic-<name>" in a topic's feeds (isPermaLink="false": the item's link is its
Hugging Face page, the guid is only an identity). Both never change for a paper. Each
feed has its own guids because some readers (newsboat, for one) key items by guid
across all their feeds: with one guid in all.xml and agents.xml, a reader that imported
feeds.opml filed each paper under one of them only, and the other feed looked empty.

The item date is when we first saw the paper, so readers sort it as new even when arXiv
published it weeks before. Papers seen in one run share that second, and validators
warn about two Atom entries with the same updated; so each gets its rank (by arXiv id)
among the papers first seen in the same second as microseconds: unique, the same in
every feed and format, stable across rebuilds, and still that second (RSS dates, which
have whole seconds, show first_seen itself).

Authors: every name, in a form readers show. Readers show one author of several: newsboat
the first dc:creator, feedparser (so rss2email) the last dc:creator or Atom author. So
RSS has one dc:creator and Atom one author holding all the names, "A, B, C"; JSON Feed
has the authors list; and the names are in the body.

The thumbnail is media:thumbnail, an enclosure (RSS `<enclosure length="0">`, the
"unknown size" value validators ask for; Atom `link rel="enclosure"`; JSON Feed
`attachments`) and an `<img>` in the body, which readers that skip image enclosures
show (newsboat before 2.33). Text that XML 1.0 cannot carry (control characters, lone
surrogates) is dropped, not fatal.
"""

from __future__ import annotations

import html
import json
import mimetypes
import os
import re
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from feedgen.ext.base import BaseEntryExtension, BaseExtension
from feedgen.feed import FeedGenerator
from feedgen.util import xml_elem

from digest import __version__
from digest.config import Config, TopicConfig
from digest.errors import ConfigError, DigestError
from digest.models import StoredPaper, TopicMatch
from digest.relevance import merge_matches
from digest.topics import match_topics, term_context

ALL = "all"
RISING = "rising"  # the feed of the papers whose upvotes grew most in a day
FORMATS = ("xml", "atom", "json")
OPML_NAME = "feeds.opml"
HOME_URL = "https://huggingface.co/papers"
# An empty feed's date: fixed, so the file stays the same; after 1990, so validators do not
# call it implausible.
EMPTY_UPDATED = datetime(2000, 1, 1, tzinfo=UTC)
JSONFEED_VERSION = "https://jsonfeed.org/version/1.1"
LANGUAGE = "en"  # the language of the papers' titles and abstracts on Hugging Face
MEDIA_NS = "http://search.yahoo.com/mrss/"
FEED_SUFFIXES = (".xml", ".atom", ".json")
_FEED_STEM = re.compile(r"[a-z0-9][a-z0-9_-]*")  # a feed file's stem (topic names are this)

# Everything outside XML 1.0's Char production.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@dataclass(frozen=True)
class FeedReport:
    """What `write_feeds` did: items per feed, and which files it rewrote."""

    dir: Path
    items: dict[str, int]  # "all" or a topic name -> items in that feed
    written: tuple[str, ...]  # file names whose bytes changed
    unchanged: tuple[str, ...]  # file names left as they were
    removed: tuple[str, ...] = ()  # feed files of topics no longer configured

    @property
    def files(self) -> tuple[str, ...]:
        return self.written + self.unchanged

    def summary(self) -> str:
        """One line for the end of `digest run`."""
        counts = ", ".join(f"{name} {n}" for name, n in self.items.items())
        removed = f", {len(self.removed)} removed" if self.removed else ""
        return (
            f"feeds: {len(self.files)} files in {self.dir} ({len(self.written)} rewritten, "
            f"{len(self.unchanged)} unchanged{removed}); items: {counts}"
        )


@dataclass(frozen=True)
class _Feed:
    name: str  # "all" or the topic's name: the file stem
    title: str
    description: str
    items: list[tuple[StoredPaper, TopicMatch | None]]
    dates: dict[str, datetime]  # arXiv id -> the item's date (see item_dates)
    # arXiv id -> item_html: made once, used by the RSS, Atom and JSON file alike.
    _bodies: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def body(self, sp: StoredPaper, match: TopicMatch | None) -> str:
        """The item's HTML body (see item_html), rendered once per feed."""
        if (found := self._bodies.get(sp.paper.id)) is None:
            found = self._bodies[sp.paper.id] = item_html(sp, match)
        return found

    @property
    def updated(self) -> datetime:
        return max((self.dates[sp.paper.id] for sp, _ in self.items), default=EMPTY_UPDATED)

    def guid(self, sp: StoredPaper) -> str:
        """The item's identity in this feed: the arXiv URL, plus the topic in a topic feed."""
        if self.name == ALL:
            return sp.paper.arxiv_url
        if self.name == RISING:
            return f"{sp.paper.arxiv_url}#rising"
        return f"{sp.paper.arxiv_url}#topic-{self.name}"


def write_feed_files(
    config: Config,
    window: Sequence[StoredPaper],
    rising: Sequence[StoredPaper] = (),
    *,
    likes: Mapping[str, list[TopicMatch]] | None = None,
) -> FeedReport:
    """Rebuild every feed file from `window` (the papers of the last feeds.days days, newest
    first: Store.papers_in_window) and `rising` (the papers whose upvotes grew most in a
    day, most first: store.browse.rising); return what was written and what was kept.

    Raises ConfigError for a topic named "all" or "rising" (it would overwrite that feed)
    or a topic term that cannot match; DigestError naming the file when one cannot be
    written. `likes`: paper id -> its like-topic matches (digest.deliver.likes), added to
    the keyword matches, so a like-topic's feed carries its papers with the why.
    """
    for topic in config.topics:
        if topic.name in (ALL, RISING):
            raise ConfigError(
                f"topic name {topic.name!r} is taken by a feed of its own; rename the topic",
                path=config.path,
                key=f"topics.{topic.name}.name",
            )
    feeds = _feeds(config, list(window), list(rising), likes or {})
    folder = Path(config.feeds.dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DigestError(f"{folder}: cannot create the feeds folder: {e.strerror}") from None
    before = feeds_listed(folder / OPML_NAME)  # read before the new list replaces it
    files: dict[str, bytes] = {}
    for feed in feeds:
        files[f"{feed.name}.xml"] = render_rss(config, feed)
        files[f"{feed.name}.atom"] = render_atom(config, feed)
        files[f"{feed.name}.json"] = render_json(config, feed)
    written: list[str] = []
    unchanged: list[str] = []
    for name, data in files.items():
        (written if write_if_changed(folder / name, data) else unchanged).append(name)
    removed = remove_feed_files(folder, sorted(set(before) - {f.name for f in feeds}))
    # The list goes last: while any step before fails, the old list still names the old
    # feeds, so the next run removes what this one could not.
    opml = render_opml(config, [(f.name, f.title) for f in feeds])
    (written if write_if_changed(folder / OPML_NAME, opml) else unchanged).append(OPML_NAME)
    return FeedReport(
        dir=folder,
        items={f.name: len(f.items) for f in feeds},
        written=tuple(written),
        unchanged=tuple(unchanged),
        removed=tuple(removed),
    )


def feeds_listed(opml: Path) -> list[str]:
    """Return the feed names (file stems) an OPML list written by `write_feed_files` names.

    A missing or unreadable list names none: then nothing is removed, never a guess.
    Only plain stems (what a topic name can be) count, so a list edited by hand cannot
    point outside the folder.
    """
    try:
        root = ET.parse(opml).getroot()
    except (OSError, ET.ParseError):
        return []
    names: list[str] = []
    for outline in root.iter("outline"):
        url = outline.get("xmlUrl") or ""
        stem, dot, suffix = url.rsplit("/", 1)[-1].rpartition(".")
        if dot and f".{suffix}" == FEED_SUFFIXES[0] and _FEED_STEM.fullmatch(stem):
            names.append(stem)
    return names


def remove_feed_files(folder: Path, names: Sequence[str]) -> list[str]:
    """Delete the RSS, Atom and JSON files of feeds `names` in `folder`; return those removed.

    Raises DigestError naming the file that cannot be removed.
    """
    removed: list[str] = []
    for name in names:
        if name == ALL:
            continue
        for suffix in FEED_SUFFIXES:
            path = folder / f"{name}{suffix}"
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            except OSError as e:
                message = f"{path}: cannot remove the old feed file: {e.strerror}"
                raise DigestError(message) from None
            removed.append(path.name)
    return removed


def item_dates(window: Sequence[StoredPaper]) -> dict[str, datetime]:
    """Return each paper's item date: first_seen plus its rank among that second's papers.

    The rank (by arXiv id) is in microseconds, so dates are unique (validators warn about
    equal Atom updated values), stay in the second and day the paper was first seen, and
    depend only on the papers first seen in that second: a rebuild gives the same dates.
    """
    by_second: dict[datetime, list[str]] = {}
    for sp in window:
        by_second.setdefault(sp.first_seen, []).append(sp.paper.id)
    dates: dict[str, datetime] = {}
    for second, ids in by_second.items():
        for rank, paper_id in enumerate(sorted(ids)):
            dates[paper_id] = second + timedelta(microseconds=rank)
    return dates


def _feeds(
    config: Config,
    window: list[StoredPaper],
    rising: list[StoredPaper] | None = None,
    likes: Mapping[str, list[TopicMatch]] | None = None,
) -> list[_Feed]:
    limit = config.feeds.max_items
    title = config.feeds.title
    rising = rising or []
    in_window = {sp.paper.id for sp in window}
    dates = item_dates(window + [sp for sp in rising if sp.paper.id not in in_window])
    feeds = [
        _Feed(
            ALL,
            title,
            f"{title}: every paper, newest first (last {config.feeds.days} days)",
            [(sp, None) for sp in window[:limit]],
            dates,
        )
    ]
    matches = match_topics((sp.paper for sp in window), config.topics) if config.topics else {}
    if likes:
        matches = {
            pid: merge_matches(matches.get(pid, []), likes.get(pid))
            for pid in matches.keys() | likes.keys()
        }
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
                dates,
            )
        )
    feeds.append(
        _Feed(
            RISING,
            f"{title}: rising",
            f"{title}: the papers whose upvotes grew most in the last 24 hours, most first",
            [(sp, None) for sp in rising[:limit]],
            dates,
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
    """Return the item body as escaped HTML: abstract, people, votes, matched terms, links,
    and the thumbnail as an image.

    The image is what shows the thumbnail in readers that skip image enclosures (newsboat
    before 2.33 keeps only audio and video ones) and in mail made from feeds (rss2email).
    """
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
        # Why: each term where it hit, so a reader sees "TTS" was test-time scaling.
        for term in match.terms:
            if context := term_context(p, term):
                parts.append(f"<p>{e(clean(term))}: {e(clean(context))}</p>")
    links = " | ".join(f'<a href="{e(url)}">{e(label)}</a>' for label, url in _links(sp))
    parts.append(f"<p>{links}</p>")
    if thumb := _thumbnail(sp):
        parts.append(f'<p><img src="{e(thumb[0])}" alt="Thumbnail of {e(clean(p.title))}"></p>')
    return "\n".join(parts)


def _thumbnail(sp: StoredPaper) -> tuple[str, str] | None:
    """(URL, MIME type) of the paper's thumbnail, or None when it has no web image."""
    url = _http(sp.paper.thumbnail)
    if url is None:
        return None
    kind, _ = mimetypes.guess_type(url.split("?", 1)[0])
    # An enclosure needs a type; HF's thumbnails are .png, anything else is not an image.
    return (url, kind) if kind and kind.startswith("image/") else None


def _generator(config: Config, feed: _Feed, file_name: str, *, rss: bool) -> FeedGenerator:
    fg = FeedGenerator()
    fg.register_extension("thumbnail", _MediaNamespace, _Thumbnail, atom=True, rss=True)
    fg.load_extension("dc", atom=False, rss=True)  # RSS <author> needs an email; dc:creator not
    self_url = feed_url(config, file_name)
    fg.id(self_url)
    fg.title(clean(feed.title))
    fg.description(clean(feed.description))
    fg.subtitle(clean(feed.description))
    fg.language(LANGUAGE)  # RSS <language>, Atom xml:lang
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
        guid = feed.guid(sp)
        date = feed.dates[p.id]
        thumb = _thumbnail(sp)
        fe = fg.add_entry(order="append")
        fe.id(guid)
        fe.guid(guid, permalink=False)
        fe.title(clean(p.title) or p.id)
        if rss:
            fe.link(href=p.hf_url)
            if thumb:
                # The size is unknown without fetching the image: 0 is RSS's "unknown".
                fe.enclosure(url=thumb[0], length=0, type=thumb[1])
        else:
            fe.register_extension("atom_links", _AtomLinks, atom=True, rss=False)
            fe.atom_links.links = [(p.hf_url, "alternate", "text/html", "Hugging Face")] + [
                (url, "related", "text/html", label) for label, url in _links(sp)[1:]
            ]
            if thumb:
                fe.atom_links.links.append((thumb[0], "enclosure", thumb[1], "Thumbnail"))
        # One copy of the body per format: RSS <description>, Atom <content type="html">.
        if rss:
            fe.description(feed.body(sp, match))
        else:
            fe.content(feed.body(sp, match), type="html")
        # One call, never one per name: feedgen re-checks its whole list on every call,
        # which made the rebuild quadratic in authors (533 on one real paper).
        if names := ", ".join(_authors(sp)):
            if rss:
                fe.dc.dc_creator(names)
            else:
                fe.author({"name": names})
        if keywords := [k for k in (clean(k).strip() for k in p.ai_keywords) if k]:
            fe.category([{"term": k} for k in keywords])
        if thumb:
            fe.thumbnail.url = thumb[0]
        fe.published(date)
        fe.updated(date)
        fe.pubDate(date)
    return fg


def _authors(sp: StoredPaper) -> list[str]:
    return [name for name in (clean(a).strip() for a in sp.paper.authors) if name]


class _MediaNamespace(BaseExtension):
    """Declares Media RSS's namespace once, on the root element."""

    def extend_ns(self) -> dict[str, str]:
        return {"media": MEDIA_NS}


class _Thumbnail(BaseEntryExtension):
    """One `media:thumbnail` directly in the item.

    feedgen's media extension wraps it in `media:group`, which Media RSS keeps for
    several renditions of one object: validators reject a group of one.
    """

    def __init__(self) -> None:
        self.url: str | None = None

    def extend_atom(self, entry: Any) -> Any:
        if self.url:
            xml_elem(f"{{{MEDIA_NS}}}thumbnail", entry, url=self.url)
        return entry

    def extend_rss(self, item: Any) -> Any:
        return self.extend_atom(item)


class _AtomLinks(BaseEntryExtension):
    """An entry's Atom links with their rel, type and title.

    feedgen 1.0.0 drops rel / type / title of entry links (it overwrites its loop
    variable), which turns every related link into an alternate one; this adds them.
    """

    def __init__(self) -> None:
        self.links: list[tuple[str, str, str, str]] = []  # (href, rel, type, title)

    def extend_atom(self, entry: Any) -> Any:
        for href, rel, kind, title in self.links:
            xml_elem("link", entry, href=href, rel=rel, type=kind, title=title)
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
            "id": feed.guid(sp),
            "url": p.hf_url,
            "external_url": p.arxiv_url,
            "title": clean(p.title) or p.id,
            "content_html": feed.body(sp, match),
            "summary": clean(p.abstract),
            "date_published": _iso(feed.dates[p.id]),
            "authors": [{"name": name} for name in _authors(sp)],
            "tags": [clean(k) for k in p.ai_keywords if clean(k).strip()],
        }
        if thumb := _thumbnail(sp):
            item["image"] = thumb[0]
            item["attachments"] = [{"url": thumb[0], "mime_type": thumb[1]}]
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
            extra["matched_context"] = {
                clean(t): clean(c) for t in match.terms if (c := term_context(p, t))
            }
        item["_papers_digest"] = extra
        items.append(item)
    doc = {
        "version": JSONFEED_VERSION,
        "title": clean(feed.title),
        "language": LANGUAGE,
        "home_page_url": HOME_URL,
        "feed_url": feed_url(config, f"{feed.name}.json"),
        "description": clean(feed.description),
        "authors": [{"name": "papers-digest"}],
        "_papers_digest": {"updated": _iso(feed.updated), "ttl_minutes": config.feeds.ttl},
        "items": items,
    }
    # No indent: with one, json.dumps runs its pure-Python encoder, 8x slower than C's.
    # One item a line keeps the file readable and diffable.
    head = json.dumps({**doc, "items": []}, ensure_ascii=False)[: -len("[]}")]
    lines = ",\n".join(json.dumps(item, ensure_ascii=False) for item in items)
    return f"{head}[\n{lines}\n]}}\n".encode() if items else f"{head}[]}}\n".encode()


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
    value = value.astimezone(UTC)
    if value.microsecond:
        return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


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
