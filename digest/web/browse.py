"""The papers on the web: `/` (the latest edition, ranked), `/topics/<name>`, `/archive`
by month, `/archive/<day>` with previous / next and `?topic=`, and `/search`.

Server-rendered HTML from the one Jinja environment, no JavaScript. Every read is bounded
in the store (store.browse, store.search), and each page's papers part is rendered once
per version of the store (store.browse.version: a new run or edition changes it), held
in a small in-process cache: a page that many readers open costs three index probes and
a dictionary lookup until the next fetch.

Ranking on `/` and a day page: upvotes plus TOPIC_WEIGHT per configured topic the paper
belongs to (a simple, explainable order; the reader's own ranking lives in the email).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, TypeVar

from markupsafe import Markup, escape
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from digest.clock import today_utc
from digest.config import Config, TopicConfig
from digest.deliver.likes import like_matches_for
from digest.errors import DigestError
from digest.models import StoredPaper, TopicMatch
from digest.relevance import merge_matches
from digest.render.templates import environment
from digest.store import Store, browse
from digest.store.fts import BadQuery
from digest.store.search import MARK_END, MARK_START, search
from digest.topics import Matcher

T = TypeVar("T")
TOPIC_WEIGHT = 5  # upvotes a topic match is worth in the page order
TOPIC_DAYS = 14  # a topic page shows this many days of papers
RISING_SHOWN = 5
PER_PAGE = 20
FORMATS = (("xml", "RSS"), ("atom", "Atom"), ("json", "JSON Feed"))
CACHE_PAGES = 256


def marked(text: str) -> Markup:
    """`text` with the search's marks as <mark>, everything else escaped (a title holding
    <script> stays text; a stray mark character opens or closes a mark, never a tag)."""
    out: list[str] = []
    open_ = False
    for ch_run in _split_marks(text):
        if ch_run == MARK_START:
            if not open_:
                out.append("<mark>")
                open_ = True
        elif ch_run == MARK_END:
            if open_:
                out.append("</mark>")
                open_ = False
        else:
            out.append(str(escape(ch_run)))
    if open_:
        out.append("</mark>")
    return Markup("".join(out))


def _split_marks(text: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    for ch in text:
        if ch in (MARK_START, MARK_END):
            if current:
                parts.append("".join(current))
                current = []
            parts.append(ch)
        else:
            current.append(ch)
    if current:
        parts.append("".join(current))
    return parts


def http_url(url: str | None) -> str | None:
    """`url` when it is an http(s) link, else None: a repo or project link from the list
    is never a javascript: or data: URL on our page."""
    if url and url.strip().lower().startswith(("https://", "http://")):
        return url.strip()
    return None


@dataclass(frozen=True)
class Card:
    """A paper as a page shows it: the paper and the topics it belongs to."""

    sp: StoredPaper
    topics: tuple[TopicMatch, ...]
    gain: int = 0  # upvotes gained (the rising list)

    @property
    def score(self) -> int:
        return self.sp.paper.upvotes + TOPIC_WEIGHT * len(self.topics)


class PageCache:
    """Rendered page parts by key, dropped whenever the store's version moves on."""

    def __init__(self, size: int = CACHE_PAGES) -> None:
        self.size = size
        self._parts: OrderedDict[str, str] = OrderedDict()
        self._version = ""
        self._lock = threading.Lock()

    def get(self, version: str, key: str) -> str | None:
        with self._lock:
            if version != self._version:
                self._parts.clear()
                self._version = version
                return None
            found = self._parts.get(key)
            if found is not None:
                self._parts.move_to_end(key)
            return found

    def put(self, version: str, key: str, part: str) -> None:
        with self._lock:
            if version != self._version:
                return
            self._parts[key] = part
            while len(self._parts) > self.size:
                self._parts.popitem(last=False)


class Browse:
    """The reading pages, over one config, one matcher and one page cache."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.title = config.feeds.title
        self.topics = {t.name: t for t in config.topics}
        self.topic_titles = {t.name: t.display_title for t in config.topics}
        self.matcher = Matcher(config.topics)
        self.templates = environment(config.templates.dir)
        self.cache = PageCache()
        self._readers = threading.local()

    # -- plumbing ----------------------------------------------------------------------

    def with_store(self, work: Callable[[Store], T]) -> T:
        store = Store.open(self.config.store.database)
        try:
            return work(store)
        finally:
            store.close()

    def version(self) -> str:
        """The store's version, read on this thread's own read-only connection (kept open:
        three index probes cost less than opening the file)."""
        reader: Store | None = getattr(self._readers, "store", None)
        if reader is None:
            try:
                reader = Store.open(self.config.store.database, read_only=True)
            except DigestError:  # no file yet: the normal open creates it
                return self.with_store(browse.version)
            self._readers.store = reader
        return browse.version(reader)

    def part(self, key: str, build: Callable[[Store], str]) -> str:
        """The rendered part `key`, from the cache or built now (in a worker thread)."""
        version = self.version()
        found = self.cache.get(version, key)
        if found is None:
            found = self.with_store(build)
            self.cache.put(version, key, found)
        return found

    def render(self, name: str, **context: Any) -> str:
        return self.templates.get_template(name).render(
            title=self.title,
            mark=marked,
            http=http_url,
            topic_titles=self.topic_titles,
            formats=FORMATS,
            **context,
        )

    def page(self, name: str, code: int = 200, **context: Any) -> HTMLResponse:
        return HTMLResponse(
            self.render(name, **context), status_code=code, headers={"Cache-Control": "no-cache"}
        )

    def not_found(self, heading: str, line: str, links: Sequence[tuple[str, str]]) -> Response:
        return self.page(
            "web/message.html", 404, heading=heading, lines=[line], links=links, button=None
        )

    def topic_matches(
        self, store: Store, papers: Sequence[StoredPaper]
    ) -> dict[str, tuple[TopicMatch, ...]]:
        """Paper id -> the topics it is in: the keyword topics' matches and the
        like-topics' (from the vectors kept in the store, with their why), as the feeds
        and the email have them."""
        if not self.topics:
            return {sp.paper.id: () for sp in papers}
        liked = like_matches_for(self.config, store, [sp.paper for sp in papers])
        return {
            sp.paper.id: tuple(merge_matches(self.matcher.match(sp.paper), liked.get(sp.paper.id)))
            for sp in papers
        }

    def cards(self, store: Store, papers: Sequence[StoredPaper], topic: str = "") -> list[Card]:
        """Cards of `papers` (only those in `topic` when given), best first."""
        out = []
        matches = self.topic_matches(store, papers)
        for sp in papers:
            mine = matches[sp.paper.id]
            if topic and topic not in {m.topic for m in mine}:
                continue
            out.append(Card(sp, mine))
        out.sort(key=lambda c: (-c.score, c.sp.paper.id))
        return out

    def topic_param(self, request: Request) -> tuple[str, Response | None]:
        topic = request.query_params.get("topic", "")
        if topic and topic not in self.topics:
            return topic, self.not_found(
                "No such topic",
                f"There is no topic named {topic!r} here.",
                [("/", "Today's papers"), ("/archive", "All past digests")],
            )
        return topic, None

    def topic_choices(self) -> list[tuple[str, str]]:
        return [(t.name, t.display_title) for t in self.config.topics]

    # -- `/`'s papers (the landing page renders them above the form) -------------------

    def home_part(self, topic: str) -> str:
        """The papers part of `/`: the latest edition ranked, the rising papers."""

        def build(store: Store) -> str:
            today = today_utc()
            day, papers = browse.latest_edition(store, today)
            climbing = browse.rising(store, limit=RISING_SHOWN)
            matches = self.topic_matches(store, [r.paper for r in climbing])
            rising = [Card(r.paper, matches[r.paper.paper.id], r.gain) for r in climbing]
            return self.render(
                "web/home_papers.html",
                day=day,
                cards=self.cards(store, papers, topic),
                total=len(papers),
                topic=topic,
                topic_title=self.topics[topic].display_title if topic else "",
                choices=self.topic_choices(),
                rising=rising,
            )

        return self.part(f"home?{topic}", build)

    # -- handlers ----------------------------------------------------------------------

    async def topic_page(self, request: Request) -> Response:
        name = request.path_params["name"]
        topic = self.topics.get(name)
        if topic is None:
            return self.not_found(
                "No such topic",
                f"There is no topic named {name!r} here.",
                [("/", "Today's papers"), ("/feeds/", "Every feed")],
            )

        def build(store: Store) -> str:
            since = today_utc() - timedelta(days=TOPIC_DAYS - 1)
            by_day: dict[date, list[Card]] = {}
            for card in self.cards(store, store.papers(since=since), name):
                p = card.sp.paper
                day = p.daily_date or card.sp.first_seen.date()
                by_day.setdefault(day, []).append(card)
            return self.render(
                "web/topic_papers.html",
                days=sorted(by_day.items(), reverse=True),
                shown_days=TOPIC_DAYS,
            )

        part = await run_in_threadpool(self.part, f"topic/{name}", build)
        return self.page("web/topic.html", topic=topic, terms=_terms(topic), papers=Markup(part))

    async def archive(self, request: Request) -> Response:
        def build(store: Store) -> str:
            return self.render("web/archive_months.html", months=browse.months(store))

        part = await run_in_threadpool(self.part, "archive", build)
        return self.page("web/archive.html", months=Markup(part))

    async def archive_day(self, request: Request) -> Response:
        try:
            day = date.fromisoformat(request.path_params["day"])
        except ValueError:
            return self.not_found(
                "Not found", "That is not a day (YYYY-MM-DD).", [("/archive", "All past digests")]
            )
        topic, bad = self.topic_param(request)
        if bad is not None:
            return bad

        def build(store: Store) -> str:
            if not browse.has_edition(store, day):
                return ""
            before, after = browse.neighbours(store, day)
            papers = store.digest_papers(day)
            return self.render(
                "web/day_papers.html",
                day=day,
                before=before,
                after=after,
                cards=self.cards(store, papers, topic),
                total=len(papers),
                topic=topic,
                topic_title=self.topics[topic].display_title if topic else "",
                choices=self.topic_choices(),
            )

        part = await run_in_threadpool(self.part, f"day/{day}?{topic}", build)
        if not part:
            return self.not_found(
                "No digest that day",
                "No email went out on that day.",
                [("/archive", "All past digests")],
            )
        return self.page("web/day.html", day=day, papers=Markup(part))

    async def search_page(self, request: Request) -> Response:
        q = request.query_params.get("q", "")
        try:
            page = max(1, min(int(request.query_params.get("page", "1")), 10_000))
        except ValueError:
            page = 1
        if not q.strip():
            return self.page("web/search.html", q="", error="", results=None)

        def build(store: Store) -> str:
            try:
                results = search(store, q, page=page, per_page=PER_PAGE)
            except BadQuery as e:
                return "\x00" + str(e)  # an error, not a page: kept apart below
            matches = self.topic_matches(store, [hit.paper for hit in results.hits])
            cards = [(hit, Card(hit.paper, matches[hit.paper.paper.id])) for hit in results.hits]
            return self.render("web/search_results.html", results=results, cards=cards, q=q)

        part = await run_in_threadpool(self.part, f"search?{q}&{page}", build)
        if part.startswith("\x00"):
            return self.page("web/search.html", 400, q=q[:300], error=part[1:], results=None)
        return self.page("web/search.html", q=q[:300], error="", results=Markup(part))

    def routes(self, middleware: Sequence[Middleware] = ()) -> list[Route]:
        get = ["GET", "HEAD"]
        return [
            Route("/topics/{name}", self.topic_page, methods=get, middleware=middleware),
            Route("/archive", self.archive, methods=get, middleware=middleware),
            Route("/archive/{day}", self.archive_day, methods=get, middleware=middleware),
            Route("/search", self.search_page, methods=get, middleware=middleware),
        ]


def _terms(topic: TopicConfig) -> list[tuple[str, str]]:
    """What a topic matches, as (what, terms) lines for its page."""
    out = []
    if topic.keywords:
        out.append(("Keywords", ", ".join(topic.keywords)))
    if topic.phrases:
        out.append(("Phrases", ", ".join(f'"{p}"' for p in topic.phrases)))
    if topic.authors:
        out.append(("Authors", ", ".join(topic.authors)))
    if topic.organizations:
        out.append(("Organisations", ", ".join(topic.organizations)))
    if topic.exclude:
        out.append(("Not", ", ".join(topic.exclude)))
    if topic.has_code:
        out.append(("Only", "papers with code"))
    if topic.min_upvotes:
        out.append(("At least", f"{topic.min_upvotes} upvotes"))
    if topic.min_stars:
        out.append(("At least", f"{topic.min_stars} GitHub stars"))
    out.append(("Looks in", ", ".join(topic.fields)))
    return out
