"""The daily email: the day's new papers, per subscriber's topics, as one MIME message.

Data flow: `DigestRenderer(config, papers, day)` matches every paper against the topics
once; `render(subscriber)` picks the papers of the subscriber's topics and returns a
multipart/alternative EmailMessage (a text part, then an HTML part).

Speed: most subscribers share a set of topics, so both bodies are rendered, and the
HTML's CSS inlined, once per distinct set of topics, with placeholders where the
subscriber's link token and address go. Per subscriber only those placeholders are
replaced and the headers set.
"""

from __future__ import annotations

import binascii
import dataclasses
import hashlib
import html
import re
import secrets
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any
from urllib.parse import quote

import css_inline
import jinja2

from digest.addresses import address_key
from digest.config import Config, TopicConfig
from digest.errors import DigestError
from digest.models import Paper, StoredPaper, Subscriber, TopicMatch
from digest.render.mailheaders import from_address, new_message, sender_address, set_list_headers
from digest.render.templates import EMAIL_HTML, EMAIL_TEXT, environment, template_origin
from digest.topics import Matcher, parse_keywords

ALL_PAPERS = "All new papers"
MAX_AUTHORS = 4  # more than this: the first three, "et al." and the count
SHOWN_AUTHORS = 3
TEXT_WIDTH = 72
# RFC 3676 4.3: "-- " (with the space) alone on a line starts the signature.
SIGNATURE_SEPARATOR = "-- "

_SPACE_RE = re.compile(r"\s+")
# A sentence ends at . ! or ? (maybe closed by a quote or bracket) before a space and
# a capital, digit or opening bracket; "e.g. the" and "et al. show" do not end one.
_SENTENCE_END_RE = re.compile(r"[.!?][\"')\]]?(?=\s+[\"'(\[]?[A-Z0-9])")
_ABBREVIATIONS = ("e.g.", "i.e.", "et al.", "etc.", "vs.", "Fig.", "Eq.", "Sec.", "cf.", "No.")

# Inline the stylesheet into style attributes; the dark-mode @media block cannot be
# inlined and is kept in a <style> of its own. Nothing remote is ever loaded.
_inliner = css_inline.CSSInliner(keep_at_rules=True, load_remote_stylesheets=False)


class RenderError(DigestError):
    """The email could not be rendered (a template is missing or broken)."""


# -- the pieces of one paper ----------------------------------------------------------


def one_line(text: str) -> str:
    """Return `text` with every run of whitespace (newlines too) made one space."""
    return _SPACE_RE.sub(" ", text).strip()


def shorten_authors(authors: Sequence[str]) -> str:
    """Return the authors for display: all of up to four, else the first three, et al.
    and the count."""
    names = [one_line(a) for a in authors if a.strip()]
    if len(names) <= MAX_AUTHORS:
        return ", ".join(names)
    return f"{', '.join(names[:SHOWN_AUTHORS])} et al. ({len(names)} authors)"


def trim_sentences(text: str, limit: int) -> tuple[str, bool]:
    """Return (text cut at the last sentence end within `limit` characters, was it cut).

    When no sentence ends in the first third of the limit (one very long sentence), the
    cut is at a word boundary instead and marked with an ellipsis.
    """
    text = one_line(text)
    if limit <= 0 or len(text) <= limit:
        return text, False
    cut = 0
    for m in _SENTENCE_END_RE.finditer(text, 0, limit + 1):
        head = text[: m.end()]
        if head.endswith(_ABBREVIATIONS):
            continue
        cut = m.end()
    if cut >= limit // 3:
        return text[:cut], True
    head = text[:limit]
    space = head.rfind(" ")
    if space > limit // 2:
        head = head[:space]
    return head.rstrip(" ,;:-") + "…", True


@dataclass
class PaperView:
    """One paper as both templates show it."""

    id: str
    title: str
    hf_url: str
    arxiv_url: str
    pdf_url: str
    github_url: str | None
    project_url: str | None
    authors: str
    organization: str | None
    upvotes: int
    blurb: str
    blurb_is_ai: bool
    trimmed: bool
    tags: list[str]  # display titles of the (subscriber's) topics it is in, best first
    terms: list[str]  # the terms that hit, across those topics


@dataclass
class Group:
    title: str
    papers: list[PaperView] = field(default_factory=list)


@dataclass
class _Bodies:
    """One topic set's message: parsed headers, and each body split in two at the first
    line with a placeholder (the head already quoted-printable, the tail not yet)."""

    headers: list[tuple[str, Any]]
    text_headers: list[tuple[str, Any]]
    html_headers: list[tuple[str, Any]]
    text_head: str
    text_tail: str
    html_head: str
    html_tail: str


# -- the renderer ---------------------------------------------------------------------


class DigestRenderer:
    """The day's digest, ready to render for any subscriber.

    Matching runs once here; bodies are cached per distinct set of topics.
    """

    def __init__(self, config: Config, papers: Sequence[StoredPaper], day: date) -> None:
        self.config = config
        self.day = day
        self.topics: dict[str, tuple[int, TopicConfig]] = {
            t.name: (i, t) for i, t in enumerate(config.topics)
        }
        matcher = Matcher(config.topics)
        # Most upvoted first: every group keeps this order.
        ordered = sorted(papers, key=lambda sp: (-sp.paper.upvotes, sp.paper.id))
        self.papers: list[tuple[Paper, list[TopicMatch]]] = [
            (sp.paper, matcher.match(sp.paper)) for sp in ordered
        ]
        sender = sender_address(config)
        self.sender_address = sender
        self.domain = config.email.domain or sender.rpartition("@")[2] or "localhost"
        self.list_id = (_header_text(config.email.subject_prefix), f"daily.{self.domain}")
        self.base_url = config.feeds.base_url.rstrip("/")
        # Placeholders for the per-subscriber parts: random, so no paper text can hold
        # one by accident (and checked, so none can hold one on purpose).
        mark = "pdx" + secrets.token_hex(12)
        blob = "\n".join(_paper_text(p) for p, _ in self.papers)
        while mark in blob:  # pragma: no cover - 96 random bits
            mark = "pdx" + secrets.token_hex(12)
        self._token_mark = mark + "t"
        self._address_mark = mark + "a"
        self._prefs_mark = mark + "p"  # the preferences link has a token of its own kind
        self._marks = (self._token_mark, self._address_mark, self._prefs_mark)
        self._cache: dict[tuple[str, ...], _Bodies | None] = {}
        # Personal topics (keywords typed on the subscribe form): topic name -> paper id
        # -> match, computed once per distinct keyword text, kept apart from the config
        # topics' matches so they never tag another subscriber's papers.
        self._personal: dict[str, dict[str, TopicMatch]] = {}

    # -- per subscriber ---------------------------------------------------------------

    def render(self, subscriber: Subscriber) -> EmailMessage | None:
        """Return the subscriber's email for the day, or None when they get none today
        (nothing matched and send_when_empty is off, or no topics and no_topics_gets is
        "nothing").

        Raises RenderError when a template is missing or broken.
        """
        chosen = {t for t in subscriber.topics if t in self.topics}
        if subscriber.topics and not chosen and not subscriber.keywords:
            # Every topic they chose is gone from the config: not the same as "no topics".
            return None
        personal = self._personal_topic(subscriber.keywords)
        key = tuple(sorted(chosen | ({personal} if personal else set())))
        if key not in self._cache:
            self._cache[key] = self._bodies(key)
        bodies = self._cache[key]
        if bodies is None:
            return None
        token = quote(subscriber.token, safe="")
        text = bodies.text_tail.replace(self._token_mark, token)
        prefs = quote(subscriber.preferences_token, safe="")
        text = text.replace(self._address_mark, subscriber.email).replace(self._prefs_mark, prefs)
        page = bodies.html_tail.replace(self._token_mark, html.escape(token))
        page = page.replace(self._prefs_mark, html.escape(prefs))
        page = page.replace(self._address_mark, html.escape(subscriber.email))
        msg = new_message()
        # The headers every subscriber of this topic set shares were parsed once, into
        # the template message; copying them as they are skips parsing them again.
        for name, value in bodies.headers:
            msg.set_raw(name, value)
        msg["To"] = subscriber.email
        msg["Date"] = formatdate(usegmt=True)
        msg["Message-ID"] = self.message_id(subscriber)
        set_list_headers(
            msg, unsubscribe=[self.unsubscribe_mailto(subscriber), self.unsubscribe_url(subscriber)]
        )
        for headers, head, tail in (
            (bodies.text_headers, bodies.text_head, text),
            (bodies.html_headers, bodies.html_head, page),
        ):
            part = new_message()
            for name, value in headers:
                part.set_raw(name, value)
            part.set_payload(head + _qp(tail))
            msg.attach(part)
        return msg

    def message_id(self, subscriber: Subscriber) -> str:
        """Return the Message-ID for (subscriber, day): the same on a resend after a crash."""
        seed = f"{address_key(subscriber.email)}\n{self.day.isoformat()}".encode()
        digest = hashlib.sha256(seed).hexdigest()[:32]
        return f"<digest.{self.day.strftime('%Y%m%d')}.{digest}@{self.domain}>"

    def unsubscribe_url(self, subscriber: Subscriber) -> str:
        """Return the https unsubscribe link (GET page, RFC 8058 one-click POST)."""
        return f"{self.base_url}/unsubscribe/{quote(subscriber.token, safe='')}"

    def preferences_url(self, subscriber: Subscriber) -> str:
        """Return the link to change the subscriber's topics."""
        return f"{self.base_url}/preferences/{quote(subscriber.preferences_token, safe='')}"

    def unsubscribe_mailto(self, subscriber: Subscriber) -> str:
        """Return the mailto: unsubscribe link for List-Unsubscribe: the reader's
        unsubscribe+<tag> address when a bounces mailbox reads it, else "" (none)."""
        return subscriber.unsubscribe_mailto

    def _personal_topic(self, keywords: str) -> str | None:
        """Return the name of the topic made of `keywords` (matched on first use), or
        None when there are none or they cannot be read (checked when they were typed)."""
        if not keywords.strip():
            return None
        name = "~" + keywords.strip()  # "~" never starts a config topic's name
        if name not in self._personal:
            try:
                topic = parse_keywords(keywords, name=name)
            except DigestError:
                return None
            topic = dataclasses.replace(topic, title=f"Your keywords: {keywords.strip()}")
            self.topics[name] = (len(self.topics), topic)
            matcher = Matcher([topic])
            self._personal[name] = {p.id: m[0] for p, _ in self.papers if (m := matcher.match(p))}
        return name

    # -- per set of topics ------------------------------------------------------------

    def groups(self, topics: tuple[str, ...]) -> list[Group]:
        """Return the papers for these topics, grouped: each paper once, under its best
        topic (most terms hit, then config order); no topics: one group of every paper."""
        if not topics:
            group = Group(ALL_PAPERS)
            for paper, matches in self.papers:
                group.papers.append(self._view(paper, matches))
            return [group] if group.papers else []
        wanted = set(topics)
        by_topic: dict[str, Group] = {}
        personal = [self._personal[n] for n in topics if n in self._personal]
        for paper, matches in self.papers:
            mine = [m for m in matches if m.topic in wanted]
            mine += [found[paper.id] for found in personal if paper.id in found]
            if not mine:
                continue
            # Best topic first: most terms hit, then config order.
            mine.sort(key=lambda m: (-len(m.terms), self.topics[m.topic][0]))
            best = mine[0].topic
            group = by_topic.setdefault(best, Group(self.topics[best][1].display_title))
            group.papers.append(self._view(paper, mine))
        return [by_topic[n] for n in sorted(by_topic, key=lambda n: self.topics[n][0])]

    def _view(self, paper: Paper, matches: list[TopicMatch]) -> PaperView:
        email = self.config.email
        ai = bool(email.use_ai_summary and paper.ai_summary and paper.ai_summary.strip())
        source = (paper.ai_summary or "") if ai else paper.abstract
        blurb, trimmed = trim_sentences(source, email.abstract_chars)
        terms: list[str] = []
        for m in matches:
            terms += [t for t in m.terms if t not in terms]
        return PaperView(
            id=paper.id,
            title=one_line(paper.title) or paper.id,
            hf_url=paper.hf_url,
            arxiv_url=paper.arxiv_url,
            pdf_url=paper.pdf_url,
            github_url=_web_link(paper.github_repo),
            project_url=_web_link(paper.project_page),
            authors=shorten_authors(paper.authors),
            organization=one_line(paper.organization) if paper.organization else None,
            upvotes=paper.upvotes,
            blurb=blurb,
            blurb_is_ai=ai,
            trimmed=trimmed,
            tags=[self.topics[m.topic][1].display_title for m in matches],
            terms=terms,
        )

    def archive_page(self) -> str:
        """Return the day's digest as a web page: every paper, as a subscriber with no
        topics got it, with a footer for the archive instead of the subscriber's links."""
        groups = self.groups(())
        context = self._context((), groups) | {"archive": True}
        return _inliner.inline(self._render(EMAIL_HTML, context))

    def _render(self, name: str, context: dict[str, Any]) -> str:
        env = environment(self.config.templates.dir)
        try:
            return env.get_template(name).render(context)
        except jinja2.TemplateError as e:
            raise RenderError(f"{template_origin(env, name)}: email template: {e}") from e

    def _context(self, topics: tuple[str, ...], groups: list[Group]) -> dict[str, Any]:
        in_order = sorted(topics, key=lambda n: self.topics[n][0])
        followed = [self.topics[n][1].display_title for n in in_order]
        count = sum(len(g.papers) for g in groups)
        return {
            "day": self.day,
            "day_long": f"{self.day.strftime('%A')}, {self.day.day} {self.day:%B %Y}",
            "count": count,
            "total": len(self.papers),
            "groups": groups,
            "followed": followed,
            "title": _header_text(self.config.email.subject_prefix),
            "unsubscribe_url": f"{self.base_url}/unsubscribe/{self._token_mark}",
            "preferences_url": f"{self.base_url}/preferences/{self._prefs_mark}",
            "address": self._address_mark,
            "feeds_url": f"{self.base_url}/feeds/",
            "archive_url": f"{self.base_url}/archive",
            "home_url": f"{self.base_url}/",
            "archive": False,
        }

    def _bodies(self, topics: tuple[str, ...]) -> _Bodies | None:
        email = self.config.email
        if not topics and email.no_topics_gets == "nothing":
            return None
        groups = self.groups(topics)
        count = sum(len(g.papers) for g in groups)
        if not count and not email.send_when_empty:
            return None
        context = self._context(topics, groups)
        text = self._render(EMAIL_TEXT, context)
        page = self._render(EMAIL_HTML, context)
        noun = "paper" if count == 1 else "papers"
        subject = (
            f"{_header_text(email.subject_prefix)}, {self.day.isoformat()}: {count} new {noun}"
        )
        return self._template(subject, _wrap_text(text, self._marks), _inliner.inline(page))

    def _template(self, subject: str, text: str, page: str) -> _Bodies:
        """The message every subscriber of a topic set gets, placeholders still in, split
        for cheap personalising: what comes before the first placeholder line is encoded
        once, the rest per subscriber."""
        template = new_message()
        template["Subject"] = subject
        template["From"] = from_address(self.config)
        set_list_headers(template, list_id=self.list_id)
        # Quoted-printable for both parts: readable source, no base64 text (spam
        # filters frown on it), and safe for any line length the inliner produces.
        template.set_content(text, cte="quoted-printable")
        template.add_alternative(page, subtype="html", cte="quoted-printable")
        # "=_" never occurs in quoted-printable text ("=" is always "=3D"), so this
        # boundary needs no search through the bodies.
        template.set_boundary("=_digest_" + secrets.token_hex(12))
        text_part, html_part = template.iter_parts()
        text_head, text_tail = self._split(text)
        html_head, html_tail = self._split(page)
        return _Bodies(
            headers=list(template.raw_items()),
            text_headers=list(text_part.raw_items()),
            html_headers=list(html_part.raw_items()),
            text_head=_qp(text_head),
            text_tail=text_tail,
            html_head=_qp(html_head),
            html_tail=html_tail,
        )

    def _split(self, body: str) -> tuple[str, str]:
        # At the start of the first line holding a placeholder. Quoted-printable encodes
        # line by line, so the two halves encoded apart join into the whole, encoded.
        first = min((i for i in (body.find(m) for m in self._marks) if i >= 0), default=len(body))
        start = body.rfind("\n", 0, first) + 1
        return body[:start], body[start:]


def _qp(body: str) -> str:
    """Return `body` as quoted-printable, lines kept (binascii: C speed, RFC 2045 soft
    breaks at 76)."""
    return binascii.b2a_qp(body.encode("utf-8"), istext=True).decode("ascii")


def _paper_text(p: Paper) -> str:
    fields = [p.title, p.abstract, p.ai_summary, p.organization, p.github_repo, p.project_page]
    return " ".join([*(f or "" for f in fields), *p.authors])


def _header_text(text: str) -> str:
    # A header value must be one line: config text cannot break the Subject or List-Id.
    return one_line(text).replace("<", "").replace(">", "") or "Daily Papers"


def _web_link(url: str | None) -> str | None:
    # Only http(s) links reach an href: a "javascript:" repo URL from the page is dropped.
    if url and re.match(r"^https?://\S+$", url.strip(), re.IGNORECASE):
        return url.strip()
    return None


def _wrap_text(text: str, keep: Sequence[str] = ()) -> str:
    """Wrap the text body's long lines at TEXT_WIDTH, keeping each line's indent.

    URLs are never broken (a word longer than the width stays whole on its line); lines
    holding a `keep` placeholder stay whole (their length is not known yet).
    """
    out: list[str] = []
    for line in text.splitlines():
        if line == SIGNATURE_SEPARATOR:  # its trailing space is what makes it one
            out.append(line)
            continue
        if len(line) <= TEXT_WIDTH or any(k in line for k in keep):
            out.append(line.rstrip())
            continue
        indent = line[: len(line) - len(line.lstrip())]
        out += textwrap.wrap(
            line.strip(),
            TEXT_WIDTH,
            initial_indent=indent,
            subsequent_indent=indent,
            break_long_words=False,
            break_on_hyphens=False,
        )
    return "\n".join(out) + "\n"
