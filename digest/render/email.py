"""The digest email: one reader's papers, ranked and within a budget, as one MIME message.

Data flow: `DigestRenderer(config, papers, day)` matches every paper against the topics
once; `render(subscriber)` picks the subscriber's papers (or those of their weekly
edition), ranks them (digest.ranking), shows the top `[email] max_full` in full, the next
`max_listed` as one line each and counts the rest ("N more on the web"), and returns a
multipart/alternative EmailMessage (a text part, then an HTML part).

Memory and speed: each paper's fragment (its full card or its one line, HTML with the
CSS inlined, and text) is rendered once per send and kept, quoted-printable already; a
reader's email is the small per-reader frame (header, overview, headings, footer) with
the fragments spliced in. Nothing per distinct set of topics is kept, so a send of
thousands of readers holds the day's fragments, not thousands of finished bodies.

Per reader, nothing is CSS-inlined and nothing big is encoded (issue 17: CPU a message):
the frame's HTML template is inlined once per send (`_inlined_template`), a card's "why"
chip is filled into a form inlined once per shape (`_chip_filled`), and a body is the
fragments' quoted-printable joined with the frame's, line by line (`_encode`). Each
shortcut is checked against the templates on first use and falls back to the plain way
for a restyled template it cannot follow; `reference = True` renders the plain way
throughout (tests/test_render_pieces.py holds the two to the same bytes).
"""

from __future__ import annotations

import binascii
import dataclasses
import functools
import hashlib
import io
import math
import re
import secrets
import textwrap
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from email.generator import BytesGenerator
from email.message import EmailMessage
from email.utils import format_datetime, formatdate
from typing import Any, Literal
from urllib.parse import quote

import css_inline
import jinja2
import markupsafe

from digest.addresses import address_key
from digest.config import Config, TopicConfig
from digest.errors import DigestError
from digest.models import Paper, StoredPaper, Subscriber, TopicMatch
from digest.ranking import (
    FRESH_WEIGHT,
    MATCH_WEIGHT,
    VOTES_WEIGHT,
    Candidate,
    base_scores,
    match_strength,
)
from digest.relevance import ReaderModel, Vector, merge_matches
from digest.render.mailheaders import (
    WIRE_POLICY,
    WireMessage,
    from_address,
    new_message,
    sender_address,
    set_list_headers,
    unsubscribe_headers,
    wire_header,
)
from digest.render.templates import (
    EMAIL_HTML,
    EMAIL_PAPER_HTML,
    EMAIL_PAPER_TEXT,
    EMAIL_STYLE,
    EMAIL_TEXT,
    environment,
    template_origin,
)
from digest.tokens import feedback_signer, make_feedback_token
from digest.topics import Matcher, parse_keywords, term_context

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
    why: str = ""  # each term in its context ("video*: … long video generation …"), one line


@dataclass
class Group:
    """One topic's part of an email: its fragments in rank order, and what did not fit."""

    name: str  # the topic's name ("" for a reader of every paper)
    title: str
    count: int = 0  # the reader's papers under this topic, shown or not
    cards: list[str] = field(default_factory=list)  # fragment marks, full cards
    lines: list[str] = field(default_factory=list)  # fragment marks, one-line entries
    more: int = 0  # papers not in this email (on the web page)
    more_url: str = ""
    top: list[tuple[str, str]] = field(default_factory=list)  # (paper id, title), overview


@dataclass(frozen=True)
class Edition:
    """What one reader's email covers: its papers (ids from the renderer's pool) and the
    first day it covers (None: the renderer's day only)."""

    paper_ids: frozenset[str]
    first_day: date | None = None
    weekly: bool = False  # a weekly reader's edition (the wording says "this week")


@dataclass
class _Frame:
    """One reader's email before the fragments go in: both bodies with marks, and what the
    marks stand for."""

    subject: str
    text: str
    page: str
    parts: dict[str, tuple[str, str]]  # mark -> (text fragment, HTML fragment)


@dataclass(frozen=True)
class _Fragment:
    """One paper's card or line, rendered and inlined once per send: its mark in a frame,
    both bodies (a card's holding the marks of the reader's "why" line and feedback
    links), and each body with the line end after its mark as (kind, text) pieces (see
    `_pieces`): runs of constant lines encoded once, lines with a reader's mark raw, to
    be filled in and encoded per reader."""

    mark: str
    text: str
    page: str
    encoded: tuple[tuple[tuple[int, str], ...], tuple[tuple[int, str], ...]]


@dataclass(frozen=True)
class _Chip:
    """One paper's "why" line for one set of a reader's topics: text (its lines, or ""),
    inlined HTML, and both quoted-printable as they stand in place of the chip mark's
    line (the HTML one with that line's end)."""

    text: str
    page: str
    encoded: tuple[str, str]


_NO_CHIP = _Chip("", "", ("", "\n"))


@dataclass
class _Skeleton:
    """A send's message bytes around what differs per reader (its headers and bodies),
    and the parts' headers (parsed once, shared by every reader's message)."""

    head: bytes  # the shared headers
    text_headers: list[tuple[str, Any]]
    html_headers: list[tuple[str, Any]]
    before_text: bytes  # the blank line, the boundary, the text part's headers
    before_html: bytes
    end: bytes
    date: tuple[datetime | None, tuple[Any, bytes]]  # the last Date header's second, it


# -- the renderer ---------------------------------------------------------------------


class DigestRenderer:
    """The day's digest, ready to render for any subscriber.

    Matching runs once here; each paper's fragments are rendered on first use and kept for
    the renderer's life (one send), so the cost per reader is their frame only.
    `extra`: paper id -> an added ranking score (issue 15's learned relevance).
    `likes`: paper id -> its like-topic matches (digest.deliver.likes, from the stored
    vectors), added to the keyword matches: the why (`like "Llama 3 Herd" 0.42`) is a
    term of the match, so the chip shows it as it shows keywords.
    `models` (address key -> the reader's learned model) and `vectors` (paper id -> its
    vector): a reader with a model has their papers ranked by it too (see
    `_learned_scores`); the others get today's ranking. `feedback_key`: each card gets
    "more / fewer like this" links signed for (reader, paper) (see `_feedback_links`).
    """

    def __init__(
        self,
        config: Config,
        papers: Sequence[StoredPaper],
        day: date,
        *,
        extra: Mapping[str, float] | None = None,
        likes: Mapping[str, list[TopicMatch]] | None = None,
        models: Mapping[str, ReaderModel] | None = None,
        vectors: Mapping[str, Vector] | None = None,
        feedback_key: bytes | None = None,
    ) -> None:
        self.config = config
        self.day = day
        self.extra = dict(extra or {})
        self.topics: dict[str, tuple[int, TopicConfig]] = {
            t.name: (i, t) for i, t in enumerate(config.topics)
        }
        matcher = Matcher(config.topics)
        self._matcher = matcher
        # Most upvoted first: the order of ties and of the archive page.
        ordered = sorted(papers, key=lambda sp: (-sp.paper.upvotes, sp.paper.id))
        liked = likes or {}
        self.papers: list[tuple[Paper, list[TopicMatch]]] = [
            (sp.paper, merge_matches(matcher.match(sp.paper), liked.get(sp.paper.id)))
            for sp in ordered
        ]
        # topic name -> (position in self.papers, of the match in the paper's, match)
        self._by_topic: dict[str, list[tuple[int, int, TopicMatch]]] = {}
        for i, (_, matches) in enumerate(self.papers):
            for j, m in enumerate(matches):
                self._by_topic.setdefault(m.topic, []).append((i, j, m))
        self._position = {p.id: i for i, (p, _) in enumerate(self.papers)}
        self._days: dict[str, date] = {
            sp.paper.id: sp.paper.daily_date or sp.first_seen.date() for sp in ordered
        }
        # The ranking's parts that are the same for every reader, once.
        pool = [Candidate(p, (), self._days[p.id]) for p, _ in self.papers]
        self._base_total = {
            pid: VOTES_WEIGHT * votes + FRESH_WEIGHT * fresh + more
            for pid, (votes, fresh, more) in base_scores(pool, day, self.extra).items()
        }
        sender = sender_address(config)
        self.sender_address = sender
        self.domain = config.email.domain or sender.rpartition("@")[2] or "localhost"
        self.list_id = (_header_text(config.email.subject_prefix), f"daily.{self.domain}")
        self.base_url = config.feeds.base_url.rstrip("/")
        # Marks for the fragments in a frame: random, so no paper text can hold one by
        # accident (and checked, so none can hold one on purpose).
        mark = "pdx" + secrets.token_hex(12)
        blob = "\n".join(_paper_text(p) for p, _ in self.papers)
        while mark in blob:  # pragma: no cover - 96 random bits
            mark = "pdx" + secrets.token_hex(12)
        self._mark = mark
        self._marks = re.compile(re.escape(mark) + r"f[0-9]+x")  # a fragment's mark in a frame
        self._split = re.compile(f"({self._marks.pattern})")
        # A frame's line -> its quoted-printable (with the line end), for `_encode`.
        self._qp_lines: dict[str, str] = {}
        self._qp_runs: dict[str, str] = {}  # whole runs of lines between marks, encoded
        # A card's feedback lines and a token length -> their form (`_token_lines`), or
        # None when a form cannot give them.
        self._token_forms: dict[tuple[str, int], _TokenForm | None] = {}
        # True: every body encoded whole, the way before the pieces (tests and benchmarks
        # compare the two; the bytes are the same).
        self.reference = False
        # (paper id, full?) -> (mark, text, inlined HTML); (paper id, the reader's topics
        # it is in) -> its "why" line (text, inlined HTML), the least recent dropped first.
        self._fragments: dict[tuple[str, bool], _Fragment] = {}
        self._chips: OrderedDict[tuple[str, tuple[str, ...], bool], _Chip] = OrderedDict()
        self._chip_mark = mark + "w"
        # A chip's form (see `_chip_filled`): its slots, and (tags, terms, has a context),
        # or (paper id, ...) when the form depends on the paper -> the form's (text,
        # HTML), or None when no form gives the templates' chip.
        self._slot = mark + "v"
        self._slots = re.compile(f"{re.escape(self._slot)}([0-9]+)x")
        self._chip_forms: dict[tuple[Any, ...], tuple[_Form, _Form] | None] = {}
        self._checked: set[tuple[_Form, _Form]] = set()  # forms that gave the templates' chip
        self._contexts: dict[tuple[str, str], str] = {}
        self._css = self._stylesheet()
        # Personal topics (keywords typed on the subscribe form): topic name -> paper id
        # -> match, computed once per distinct keyword text, kept apart from the config
        # topics' matches so they never tag another subscriber's papers.
        self._personal: dict[str, dict[str, TopicMatch]] = {}
        self._parts: list[tuple[str, Any]] | None = None
        self._models = dict(models or {})
        self._vectors = dict(vectors or {})
        self._feedback_key = feedback_key
        self._feedback_mark = mark + "k"
        self._wire: _Skeleton | None = None
        self._templates: dict[str, jinja2.Template] = {}
        # The frame's HTML template with the CSS inlined (None: not made yet; False: the
        # template cannot be inlined ahead), checked against the reference once a send.
        self._inlined: jinja2.Template | Literal[False] | None = None
        self._inlined_checked = False
        self._wrapped: dict[str, list[str]] = {}  # the frame's long lines, wrapped
        self._titles: dict[str, str] = {}
        self._signer: tuple[str, Callable[[str], str]] = ("", str)

    # -- per subscriber ---------------------------------------------------------------

    def render(self, subscriber: Subscriber, edition: Edition | None = None) -> EmailMessage | None:
        """Return the subscriber's email, or None when they get none (nothing matched and
        send_when_empty is off, or no topics and no_topics_gets is "nothing").

        `edition`: the papers of this reader's email when not all of the renderer's (a
        weekly reader's week, a daily reader's day out of a pool of several days).
        Raises RenderError when a template is missing or broken.
        """
        chosen = {t for t in subscriber.topics if t in self.topics}
        if subscriber.topics and not chosen and not subscriber.keywords:
            # Every topic they chose is gone from the config: not the same as "no topics".
            return None
        personal = self._personal_topic(subscriber.keywords)
        key = tuple(sorted(chosen | ({personal} if personal else set())))
        email = self.config.email
        if not key and email.no_topics_gets == "nothing":
            return None
        frame = self._frame(subscriber, key, edition, encoded=not self.reference)
        if frame is None:
            return None
        if self.reference:
            return self.assemble(subscriber, frame.subject, *self._whole(frame))
        # Each fragment is kept quoted-printable already (`_Fragment`); only the frame and
        # the reader's own lines are encoded here (see `_encode`).
        text = self._encode(frame.text, frame.parts, 0)
        page = self._encode(frame.page, frame.parts, 1)
        if text is None or page is None:  # a mark not on a line of its own
            frame = self._frame(subscriber, key, edition)
            assert frame is not None
            return self.assemble(subscriber, frame.subject, *self._whole(frame))
        return self.assemble(subscriber, frame.subject, text, page)

    def _whole(self, frame: _Frame) -> tuple[str, str]:
        """Return both bodies quoted-printable, the fragments put in and each body encoded
        whole: the reference way (`reference`), which the pieces of `_encode` must equal."""
        # One pass over each body for all its fragments (a replace per fragment copied the
        # whole body each time: about 50 of them, 50 KB each).
        parts = frame.parts
        text = self._marks.sub(lambda m: parts[m.group()][0], frame.text)
        page = self._marks.sub(lambda m: parts[m.group()][1], frame.page)
        return _qp(text), _qp(page)

    def _encode(self, body: str, parts: Mapping[str, tuple[str, str]], which: int) -> str | None:
        """Return `body` quoted-printable with its fragments put in, or None when a mark
        is not alone on its line (a custom template): then the caller encodes it whole.

        Quoted-printable works line by line: a soft break never crosses a line end and only
        the end of a line changes how a space or a dot is written. So the encoding of text
        cut after line ends is the encodings of the pieces, joined; the fragments come
        encoded (each ending with the line end after its mark) and the frame's lines go
        through a cache (most are the same for every reader)."""
        pieces = self._split.split(body)
        out: list[str] = []
        lines = self._qp_lines
        runs = self._qp_runs
        for n, piece in enumerate(pieces):
            if n % 2:  # a mark: the fragment, with the line end that follows the mark
                if not (pieces[n - 1].endswith("\n") or (n == 1 and not pieces[0])):
                    return None
                if not pieces[n + 1].startswith("\n"):
                    return None
                out.append(parts[piece][which])
                continue
            if n:
                piece = piece[1:]  # its line end went with the fragment
            if not piece:  # two marks on consecutive lines
                continue
            # The runs of lines between two marks (a topic's heading, the end of a
            # group) are the same in many readers' frames: looked up whole first. Not
            # the first and last (the reader's own head and foot: kept, they would fill
            # the cache with one of each reader's).
            inner = 0 < n < len(pieces) - 1
            found_run = runs.get(piece) if inner else None
            if found_run is not None:
                out.append(found_run)
                continue
            start = len(out)
            chunk = piece.split("\n")
            tail = chunk.pop()  # after the last line end: "" but at the end of some bodies
            found = [lines.get(line) for line in chunk]
            if None in found:
                if len(lines) >= QP_LINES:
                    lines.clear()  # bounded: per-reader lines (addresses, links) pass
                for i, line in enumerate(chunk):
                    if found[i] is None:
                        found[i] = lines[line] = _qp(line + "\n")
            out += found  # type: ignore[arg-type]
            if tail:  # only the body's last piece (a mark after it was refused above)
                out.append(_qp(tail))
            if inner:
                if len(runs) >= QP_RUNS:
                    runs.clear()  # bounded, as the lines
                runs[piece] = "".join(out[start:])
        return "".join(out)

    def assemble(self, subscriber: Subscriber, subject: str, text: str, page: str) -> EmailMessage:
        """Return the reader's message from its quoted-printable bodies: headers set raw
        (no parsing), and its SMTP bytes spliced from the send's skeleton (see
        WireMessage), so the sender writes them as they are."""
        message_id = self.message_id(subscriber)
        if not (subscriber.email.isascii() and self.config.smtp.sender.isascii()):
            # SMTPUTF8: headers in UTF-8, left to the email package when sending.
            return self.stock_message(subscriber, subject, text, page)
        if not message_id.isascii():  # an IDN domain: folded by the email package
            return self.stock_message(subscriber, subject, text, page)
        sk = self._skeleton()
        now = datetime.now(UTC).replace(microsecond=0)
        if now != sk.date[0]:  # once a second: the email package's Date header
            sk.date = (now, wire_header("Date", format_datetime(now)))
        headers = [
            wire_header("Subject", subject),
            wire_header("To", subscriber.email),
            sk.date[1],
            wire_header("Message-ID", message_id),
        ]
        names = ["Subject", "To", "Date", "Message-ID"]
        for name, value in unsubscribe_headers(
            [self.unsubscribe_mailto(subscriber), self.unsubscribe_url(subscriber)]
        ):
            # Plain ASCII, folded between URIs already: written as set, as set_raw does.
            line = f"{name}: {value}".replace("\n", "\r\n") + "\r\n"
            headers.append((value, line.encode("ascii")))
            names.append(name)
        msg = WireMessage(policy=WIRE_POLICY)
        for name, value in self._shared_headers():
            msg.set_raw(name, value)
        for name, (value, _) in zip(names, headers, strict=True):
            msg.set_raw(name, value)
        for part_headers, body in ((sk.text_headers, text), (sk.html_headers, page)):
            part = WireMessage(policy=WIRE_POLICY)  # a plain part: no bytes of its own
            for name, value in part_headers:
                part.set_raw(name, value)
            part.set_payload(body)
            msg.attach(part)
        if "\r" in text or "\r" in page:  # line ends to convert: the email package does
            return msg
        msg.keep_wire(
            b"".join(
                (
                    sk.head,
                    *(line for _, line in headers),
                    sk.before_text,
                    text.replace("\n", "\r\n").encode("ascii"),
                    sk.before_html,
                    page.replace("\n", "\r\n").encode("ascii"),
                    sk.end,
                )
            ),
            message_id,
        )
        return msg

    def stock_message(
        self, subscriber: Subscriber, subject: str, text: str, page: str
    ) -> EmailMessage:
        """Return the reader's message built by the email package, header by header (the
        way of a non-ASCII address, and the reference `_message`'s bytes are tested
        against)."""
        msg = new_message()
        for name, value in self._shared_headers():
            msg.set_raw(name, value)
        msg["Subject"] = subject
        msg["To"] = subscriber.email
        msg["Date"] = formatdate(usegmt=True)
        msg["Message-ID"] = self.message_id(subscriber)
        set_list_headers(
            msg, unsubscribe=[self.unsubscribe_mailto(subscriber), self.unsubscribe_url(subscriber)]
        )
        for subtype, body in (("plain", text), ("html", page)):
            part = new_message()
            part["Content-Type"] = f'text/{subtype}; charset="utf-8"'
            part["Content-Transfer-Encoding"] = "quoted-printable"
            part.set_payload(body)
            msg.attach(part)
        return msg

    def _skeleton(self) -> _Skeleton:
        """The bytes every reader's message shares, flattened once by the email package:
        a message of the shared headers whose two parts hold marks for the bodies, cut at
        the marks."""
        if self._wire is None:
            template = new_message()
            for name, value in self._shared_headers():
                template.set_raw(name, value)
            marks = (self._mark + "t", self._mark + "h")
            heads = []
            for subtype, mark in zip(("plain", "html"), marks, strict=True):
                part = new_message()
                part["Content-Type"] = f'text/{subtype}; charset="utf-8"'
                part["Content-Transfer-Encoding"] = "quoted-printable"
                part.set_payload(mark)
                template.attach(part)
                heads.append(list(part.raw_items()))
            buf = io.BytesIO()
            policy = WIRE_POLICY.clone(linesep="\r\n")
            BytesGenerator(buf, policy=policy).flatten(template, linesep="\r\n")
            data = buf.getvalue()
            cut = data.index(b"\r\n\r\n") + 2  # the shared headers, then ours
            head, body = data[:cut], data[cut:]
            before_text, rest = body.split(marks[0].encode("ascii"))
            before_html, end = rest.split(marks[1].encode("ascii"))
            self._wire = _Skeleton(
                head, heads[0], heads[1], before_text, before_html, end, (None, ("", b""))
            )
        return self._wire

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

    def _shared_headers(self) -> list[tuple[str, Any]]:
        """The headers every reader's message shares, parsed once into a template
        message (its boundary: "=_" never occurs in quoted-printable text)."""
        if self._parts is None:
            template = new_message()
            template["From"] = from_address(self.config)
            set_list_headers(template, list_id=self.list_id)
            template["MIME-Version"] = "1.0"
            boundary = "=_digest_" + secrets.token_hex(12)
            template["Content-Type"] = f'multipart/alternative; boundary="{boundary}"'
            self._parts = list(template.raw_items())
        return self._parts

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

    # -- one reader's papers ----------------------------------------------------------

    def selected(
        self,
        topics: tuple[str, ...],
        edition: Edition | None = None,
        model: ReaderModel | None = None,
    ) -> list[tuple[Paper, list[TopicMatch]]]:
        """Return the reader's papers with their matches among the reader's topics (best
        topic first: most terms hit, then config order), in rank order. No topics: every
        paper of the edition, with no matches. `model`: the reader's learned model, whose
        scores over these papers are added (`_add_learned`)."""
        personal = [self._personal[n] for n in topics if n in self._personal]
        order = self.topics
        # digest.ranking's score, inlined: this runs for every reader of a send, so it
        # looks only at the papers of the reader's topics (from the index by topic) and
        # makes no objects for the others.
        scored: list[tuple[float, int, str, Paper, list[TopicMatch]]] = []
        base = self._base_total
        hits: dict[int, list[tuple[int, TopicMatch]]] = {}
        if topics:
            index = self._by_topic
            for name in set(topics):
                for i, j, m in index.get(name, ()):
                    hits.setdefault(i, []).append((j, m))
            for found in personal:
                for pid in found:
                    hits.setdefault(self._position[pid], [])
        papers = self.papers
        for i in sorted(hits) if topics else range(len(papers)):
            paper = papers[i][0]
            if edition is not None and paper.id not in edition.paper_ids:
                continue
            if topics:
                pairs = hits[i]
                if len(pairs) > 1:
                    pairs.sort(key=_first)  # the paper's own order of its matches
                mine = [m for _, m in pairs]
                if personal:
                    mine += [found[paper.id] for found in personal if paper.id in found]
                if not mine:
                    continue
                if len(mine) > 1:
                    mine.sort(key=lambda m: (-len(m.terms), order[m.topic][0]))
                score = base[paper.id] + MATCH_WEIGHT * match_strength(mine)
            else:
                mine = []
                score = base[paper.id]
            scored.append((-score, -paper.upvotes, paper.id, paper, mine))
        if model is not None:
            scored = self._add_learned(scored, model)
        scored.sort(key=lambda r: r[:3])
        return [(r[3], r[4]) for r in scored]

    def groups(
        self,
        topics: tuple[str, ...],
        edition: Edition | None = None,
        *,
        budget: tuple[int, int] | None = None,
        reader: str = "",
        encoded: bool = False,
    ) -> tuple[list[Group], dict[str, tuple[str, str]], str]:
        """Return the reader's groups (each paper once, under its best topic; no topics:
        one group of every paper), the fragments their marks stand for, and the title of
        the reader's best paper ("" when none).

        `budget` (full, listed), default `[email] max_full, max_listed`: the best `full`
        papers get a card, the next `listed` a line, the rest are counted in `more`.
        `reader`: the address whose email this is (their learned ranking and feedback
        links; "" for none, as the archive page). `encoded`: the fragments are given
        quoted-printable, each with the line end after its mark (see `_encode`).
        """
        full, listed = budget or (self.config.email.max_full, self.config.email.max_listed)
        model = self._models.get(address_key(reader)) if reader and self._models else None
        chosen = self.selected(topics, edition, model)
        shown = _shown(chosen, full, listed)
        by_topic: dict[str, Group] = {}
        parts: dict[str, tuple[str, str]] = {}
        for n, (paper, mine) in enumerate(chosen):
            name = mine[0].topic if mine else ""
            group = by_topic.get(name)
            if group is None:
                title = self.topics[name][1].display_title if name else ALL_PAPERS
                group = by_topic[name] = Group(name, title, more_url=self._more_url(name, edition))
            group.count += 1
            if n not in shown:
                group.more += 1
                continue
            if len(group.top) < OVERVIEW_TITLES:  # only papers in the email: in-page links
                group.top.append((paper.id, self._title(paper)))
            frag = self._fragment(paper, full=n < full)
            if encoded:
                parts[frag.mark] = self._encoded_card(frag, paper, mine, reader, n < full)
            elif n < full:
                chip = self._chip(paper, mine)
                text = frag.text.replace(self._chip_mark + "\n", chip.text, 1)
                page = frag.page.replace(self._chip_mark, chip.page, 1)
                parts[frag.mark] = self._feedback_links(text, page, reader, paper.id)
            else:
                parts[frag.mark] = (frag.text, frag.page)
            (group.cards if n < full else group.lines).append(frag.mark)
        order = sorted(by_topic, key=lambda n: self.topics[n][0] if n else -1)
        best = self._title(chosen[0][0]) if chosen else ""
        return [by_topic[n] for n in order], parts, best

    def _title(self, paper: Paper) -> str:
        # The title as shown (one line), once per paper and send.
        found = self._titles.get(paper.id)
        if found is None:
            found = self._titles[paper.id] = one_line(paper.title) or paper.id
        return found

    def _add_learned(
        self, scored: list[tuple[float, int, str, Paper, list[TopicMatch]]], model: ReaderModel
    ) -> list[tuple[float, int, str, Paper, list[TopicMatch]]]:
        """Return the reader's scored papers with what their learned model adds.

        The model's scores are put on one scale over the reader's own papers (z-scores),
        times LEARNED_WEIGHT: a paper the model likes two deviations above the rest gains
        about what a full keyword match gives, so choices reorder the papers of the
        topics a reader follows without letting in others. Papers without a vector, or
        a model that cannot tell these papers apart, leave the ranking as it was.
        (Scores are negated in `scored`: lower sorts first.)
        """
        vectors = self._vectors
        raw = [model.score(v) if (v := vectors.get(r[2])) else None for r in scored]
        known = [x for x in raw if x is not None]
        if len(known) < 2:
            return scored
        mean = sum(known) / len(known)
        sd = math.sqrt(sum((x - mean) ** 2 for x in known) / len(known))
        if sd < 1e-12:
            return scored
        k = LEARNED_WEIGHT / sd
        return [
            r if x is None else (r[0] - k * (x - mean), *r[1:])
            for r, x in zip(scored, raw, strict=True)
        ]

    def _encoded_card(
        self, frag: _Fragment, paper: Paper, mine: list[TopicMatch], reader: str, card: bool
    ) -> tuple[str, str]:
        """Return the fragment's two bodies quoted-printable for this reader: its constant
        pieces as kept, the chip line and the feedback lines filled in and encoded."""
        if not card:  # a one-line entry: nothing of the reader's in it
            return frag.encoded[0][0][1], frag.encoded[1][0][1]
        chip = self._chip(paper, mine)
        token = None
        out: list[str] = []
        for which, pieces in enumerate(frag.encoded):
            body: list[str] = []
            for kind, piece in pieces:
                if kind == _CONSTANT:
                    body.append(piece)
                elif kind == _CHIP_LINE:
                    body.append(chip.encoded[which])
                else:
                    if kind == _OTHER_LINE:
                        if which == 0:
                            piece = piece.replace(self._chip_mark + "\n", chip.text, 1)
                        else:
                            piece = piece.replace(self._chip_mark, chip.page, 1)
                    if self._feedback_mark in piece:
                        if token is None:
                            token = self._feedback_token(reader, paper.id)
                        if not token:  # a page for nobody: the old way drops those lines
                            return self._whole_card(frag, paper, mine, reader)
                        if kind == _FEEDBACK_LINES:
                            body.append(self._token_lines(piece, token))
                            continue
                        piece = piece.replace(self._feedback_mark, token)
                    body.append(_qp(piece))
            out.append("".join(body))
        return out[0], out[1]

    def _token_lines(self, lines: str, token: str) -> str:
        """Return _qp(`lines` with the feedback mark replaced by `token`), from a form per
        token length: the lines encoded once with a stand-in of the token's length and
        the token's characters put where the stand-in's are. Every character of a link
        token (base64url, ".", "%"-escapes) is written as itself in quoted-printable, one
        character each, so the soft breaks fall where they fall for the stand-in. The
        form's first use is checked against the plain way."""
        if not _QP_LITERAL.fullmatch(token) or token.endswith("."):
            # (a "." alone on its line is escaped: only a token's last one could be)
            return _qp(lines.replace(self._feedback_mark, token))
        key = (lines, len(token))
        form = self._token_forms.get(key)
        if form is None and key not in self._token_forms:
            form = _token_form(lines, self._feedback_mark, len(token))
            plain = _qp(lines.replace(self._feedback_mark, token))
            if form is not None and _fill_token(form, token) != plain:
                form = None
            if len(self._token_forms) >= QP_LINES:
                self._token_forms.clear()  # bounded: one per (lines, length) seen
            self._token_forms[key] = form
        if form is None:
            return _qp(lines.replace(self._feedback_mark, token))
        return _fill_token(form, token)

    def _whole_card(
        self, frag: _Fragment, paper: Paper, mine: list[TopicMatch], reader: str
    ) -> tuple[str, str]:
        chip = self._chip(paper, mine)
        text = frag.text.replace(self._chip_mark + "\n", chip.text, 1)
        page = frag.page.replace(self._chip_mark, chip.page, 1)
        text, page = self._feedback_links(text, page, reader, paper.id)
        return _qp(text + "\n"), _qp(page + "\n")

    def _feedback_token(self, reader: str, paper_id: str) -> str:
        """The reader's signed token for this paper, as it goes in a link ("" for none)."""
        if not self._feedback_key or not reader:
            return ""
        if self._signer[0] != reader:  # the reader's part of their tokens, once
            self._signer = (reader, feedback_signer(self._feedback_key, reader))
        token = self._signer[1](paper_id)
        # quote() leaves these characters alone: most tokens (base64url, an arXiv id)
        # need no call at all.
        return token if _URL_SAFE.fullmatch(token) else quote(token, safe="")

    def _feedback_links(self, text: str, page: str, reader: str, paper_id: str) -> tuple[str, str]:
        """Put the reader's signed token for this paper into a card's feedback links."""
        if not self._feedback_key or self._feedback_mark not in page:
            return text, page
        if not reader:  # a page for nobody (the archive): no links to sign
            text = "\n".join(line for line in text.split("\n") if self._feedback_mark not in line)
            return text, _FEEDBACK_HTML.sub("", page)
        token = quote(make_feedback_token(self._feedback_key, reader, paper_id), safe="")
        return text.replace(self._feedback_mark, token), page.replace(self._feedback_mark, token)

    def _more_url(self, topic: str, edition: Edition | None) -> str:
        if edition is not None and edition.first_day is not None:
            # Several days: a topic's own page (its last 14 days, a week's editions in
            # it); for the whole email, the list of every day's page.
            if topic and not topic.startswith("~"):
                return f"{self.base_url}/topics/{quote(topic, safe='')}"
            return f"{self.base_url}/archive"
        url = f"{self.base_url}/archive/{self.day.isoformat()}"
        if topic and not topic.startswith("~"):
            url += f"?topic={quote(topic, safe='')}"
        return url

    def _fragment(self, paper: Paper, *, full: bool) -> _Fragment:
        """Return (mark, text, HTML with the CSS inlined) of the paper's card or line,
        rendered the first time the paper is shown and kept for the send. A card holds
        the chip mark where its reader's "why" line goes (see `_chip`)."""
        key = (paper.id, full)
        found = self._fragments.get(key)
        if found is not None:
            return found
        context = {"p": self._view(paper, []), "part": "card" if full else "line"}
        context["chip"] = self._chip_mark
        # The reader's feedback links go where this mark is (cards only, and only when
        # the send signs them): one fragment for every reader, one token each.
        context["feedback"] = (
            f"{self.base_url}/feedback/{self._feedback_mark}" if full and self._feedback_key else ""
        )
        text = self._render(EMAIL_PAPER_TEXT, context).rstrip("\n")
        text = _wrap_text(text, (self._chip_mark, self._feedback_mark)).rstrip("\n")
        page = self._inline(self._render(EMAIL_PAPER_HTML, context).strip())
        mark = f"{self._mark}f{len(self._fragments)}x"
        marks = (self._chip_mark, self._feedback_mark)
        encoded = (_pieces(text + "\n", *marks), _pieces(page + "\n", *marks))
        found = self._fragments[key] = _Fragment(mark, text, page, encoded)
        return found

    def _chip(self, paper: Paper, matches: list[TopicMatch]) -> _Chip:
        """Return (text, inlined HTML) of the paper's "why" line for a reader with these
        matches: their topics as tags, the terms that hit, each in its context on hover.
        Small, and one per (paper, reader's topics): kept in a bounded cache, so a send
        of many distinct topic sets holds a few thousand, not one per reader."""
        if not matches:
            return _NO_CHIP
        key = (paper.id, tuple([m.topic for m in matches]), self.reference)
        found = self._chips.get(key)
        if found is not None:
            self._chips.move_to_end(key)
            return found
        filled = None if self.reference else self._chip_filled(paper, matches)
        text, page = filled or self._chip_rendered(paper, matches)
        text += "\n"
        found = self._chips[key] = _Chip(text, page, (_qp(text), _qp(page + "\n")))
        if len(self._chips) > CHIP_CACHE:
            self._chips.popitem(last=False)
        return found

    def _chip_rendered(self, paper: Paper, matches: list[TopicMatch]) -> tuple[str, str]:
        """The chip's (wrapped text, inlined HTML), rendered by the templates and inlined:
        the reference way, and each form's check (`_chip_filled`)."""
        return self._chip_pair(self._view(paper, matches, why=True))

    def _chip_pair(self, view: PaperView) -> tuple[str, str]:
        context = {"p": view, "part": "why", "chip": "", "feedback": ""}
        text = _wrap_text(self._render(EMAIL_PAPER_TEXT, context).rstrip("\n"))
        page = self._inline(self._render(EMAIL_PAPER_HTML, context).strip())
        return text, page

    def _chip_filled(self, paper: Paper, matches: list[TopicMatch]) -> tuple[str, str] | None:
        """The chip as `_chip_rendered` makes it, from a form: the templates rendered and
        inlined once per (number of tags, of terms, a context or not) with slots for
        those values, which are filled in here, escaped as the inliner writes text and
        attributes. None when no form gives what the templates give (a restyled template
        that changes a value; checked on each form's first use)."""
        tags = [self.topics[m.topic][1].display_title for m in matches]
        terms = _terms(matches)
        why = self._why(paper, terms)
        values = [*tags, *terms, why]
        shape = (len(tags), len(terms), bool(why))
        form = self._chip_forms.get(shape)
        if form is None and shape not in self._chip_forms:
            # Made from two made-up papers: the same form from both shows the template
            # uses nothing of the paper's in the chip (else a form per paper).
            form = self._chip_form(_BLANK, shape)
            if form != self._chip_form(_OTHER, shape):
                form = None
            self._chip_forms[shape] = form
        paper_shape = (paper.id, *shape)
        if form is None:
            form = self._chip_forms.get(paper_shape)
            if form is None and paper_shape not in self._chip_forms:
                form = self._chip_forms[paper_shape] = self._chip_form(self._view(paper, []), shape)
        if form is None:
            return None
        text_form, page_form = form
        text = _wrap_text(_fill(text_form, values).rstrip("\n"), (), self._wrapped)
        made = text, _fill(page_form, values)
        if form not in self._checked:
            if made != self._chip_rendered(paper, matches):
                self._chip_forms[shape] = self._chip_forms[paper_shape] = None
                return None
            self._checked.add(form)
        return made

    def _chip_form(self, base: PaperView, shape: tuple[int, int, bool]) -> tuple[_Form, _Form]:
        """The chip's (text, HTML) forms for `shape` over the paper `base`."""
        tags, terms, why = shape
        slots = [f"{self._slot}{i}x" for i in range(tags + terms + 1)]
        view = dataclasses.replace(
            base, tags=slots[:tags], terms=slots[tags:-1], why=slots[-1] if why else ""
        )
        context = {"p": view, "part": "why", "chip": "", "feedback": ""}
        text = self._render(EMAIL_PAPER_TEXT, context).rstrip("\n")
        page = self._inline(self._render(EMAIL_PAPER_HTML, context).strip())
        return _form(text, self._slots, html=False), _form(page, self._slots, html=True)

    def _why(self, paper: Paper, terms: list[str]) -> str:
        # Each term in its context, for the chip's hover text.
        return "; ".join(f"{t}: {ctx}" if (ctx := self._context_of(paper, t)) else t for t in terms)

    def _context_of(self, paper: Paper, term: str) -> str:
        # One search per (paper, term) and send: many readers' chips share them.
        key = (paper.id, term)
        found = self._contexts.get(key)
        if found is None:
            found = self._contexts[key] = term_context(paper, term)
        return found

    def _inline(self, fragment: str) -> str:
        try:
            return css_inline.inline_fragment(fragment, self._css)
        except ValueError as e:  # pragma: no cover - our own stylesheet
            raise RenderError(f"{EMAIL_STYLE}: cannot inline the stylesheet: {e}") from e

    def _view(self, paper: Paper, matches: list[TopicMatch], *, why: bool = False) -> PaperView:
        email = self.config.email
        ai = bool(email.use_ai_summary and paper.ai_summary and paper.ai_summary.strip())
        source = (paper.ai_summary or "") if ai else paper.abstract
        blurb, trimmed = trim_sentences(source, email.abstract_chars)
        terms = _terms(matches)
        shown_why = self._why(paper, terms) if why and terms else ""
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
            why=shown_why,
        )

    def archive_page(self) -> str:
        """Return the day's digest as a web page: every paper in full, as a subscriber with
        no topics would see it with no budget, with a footer for the archive instead of the
        subscriber's links."""
        everything = (len(self.papers), 0)
        groups, parts, _ = self.groups((), budget=everything)
        context = self._context((), groups, None) | {"archive": True}
        page = _inliner.inline(self._render(EMAIL_HTML, context))
        for mark, (_, html_part) in parts.items():
            page = page.replace(mark, html_part, 1)
        return page

    def _render(self, name: str, context: dict[str, Any]) -> str:
        env = environment(self.config.templates.dir)
        try:
            # Looked up once per send: get_template checks the file's mtime on each call
            # (a stat for each of a reader's ~10 renders), and a send uses one version.
            template = self._templates.get(name)
            if template is None:
                template = self._templates[name] = env.get_template(name)
            return template.render(context)
        except jinja2.TemplateError as e:
            raise RenderError(f"{template_origin(env, name)}: email template: {e}") from e

    def _stylesheet(self) -> str:
        env = environment(self.config.templates.dir)
        try:
            source, _, _ = env.loader.get_source(env, EMAIL_STYLE)  # type: ignore[union-attr]
        except jinja2.TemplateError as e:
            raise RenderError(f"{template_origin(env, EMAIL_STYLE)}: stylesheet: {e}") from e
        return source

    def _context(
        self, topics: tuple[str, ...], groups: list[Group], edition: Edition | None
    ) -> dict[str, Any]:
        in_order = sorted(topics, key=lambda n: self.topics[n][0])
        followed = [self.topics[n][1].display_title for n in in_order]
        count = sum(g.count for g in groups)
        shown = sum(len(g.cards) + len(g.lines) for g in groups)
        weekly = edition is not None and edition.weekly
        total = len(edition.paper_ids) if edition is not None else len(self.papers)
        return {
            "day": self.day,
            "day_long": self._edition_label(edition, long=True),
            "weekly": weekly,
            "count": count,
            "shown": shown,
            "more": count - shown,
            "total": total,
            "groups": groups,
            "followed": followed,
            "title": _header_text(self.config.email.subject_prefix),
            "unsubscribe_url": "",
            "preferences_url": "",
            "address": "",
            "feeds_url": f"{self.base_url}/feeds/",
            "archive_url": f"{self.base_url}/archive",
            "day_url": f"{self.base_url}/archive/{self.day.isoformat()}",
            "more_url": self._more_url("", edition),
            "home_url": f"{self.base_url}/",
            "archive": False,
        }

    def _edition_label(self, edition: Edition | None, *, long: bool) -> str:
        day = self.day
        if edition is not None and edition.first_day is not None:
            first = edition.first_day
            if long:
                what = "The week of" if edition.weekly else "From"
                return f"{what} {first.day} {first:%B} to {day.day} {day:%B %Y}"
            return f"{'week' if edition.weekly else 'days'} to {day.day} {day:%b}"
        if long:
            return f"{day.strftime('%A')}, {day.day} {day:%B %Y}"
        return f"{day.day} {day:%b}"

    def _frame_page(self, context: dict[str, Any]) -> str:
        """Return the frame's HTML with the CSS inlined, as `_inliner.inline` makes it of
        the rendered template, from the template inlined once per send (`_inlined_html`).
        The first frame is also made the reference way and compared: a restyled template
        this cannot do (see `_inlined_html`) is inlined per reader, as before."""
        template = self._inlined
        if template is None:
            template = self._inlined = _inlined_template(
                environment(self.config.templates.dir), EMAIL_HTML, EMAIL_STYLE, self._css
            )
        if template is False:
            return _inliner.inline(self._render(EMAIL_HTML, context))
        try:
            page = template.render(context)
        except jinja2.TemplateError as e:
            env = environment(self.config.templates.dir)
            raise RenderError(f"{template_origin(env, EMAIL_HTML)}: email template: {e}") from e
        if not self._inlined_checked:
            self._inlined_checked = True
            slow = _inliner.inline(self._render(EMAIL_HTML, context))
            if slow != page:
                self._inlined = False
                return slow
        return page

    def _frame(
        self,
        subscriber: Subscriber,
        topics: tuple[str, ...],
        edition: Edition | None,
        *,
        encoded: bool = False,
    ) -> _Frame | None:
        groups, parts, best = self.groups(topics, edition, reader=subscriber.email, encoded=encoded)
        count = sum(g.count for g in groups)
        if not count and not self.config.email.send_when_empty:
            return None
        token = quote(subscriber.token, safe="")
        prefs = quote(subscriber.preferences_token, safe="")
        context = self._context(topics, groups, edition) | {
            "unsubscribe_url": f"{self.base_url}/unsubscribe/{token}",
            "preferences_url": f"{self.base_url}/preferences/{prefs}",
            "address": subscriber.email,
        }
        if self.reference:
            text = _wrap_text(self._render(EMAIL_TEXT, context), (self._mark,))
            page = _inliner.inline(self._render(EMAIL_HTML, context))
        else:
            text = _wrap_text(self._render(EMAIL_TEXT, context), (self._mark,), self._wrapped)
            page = self._frame_page(context)
        subject = subject_line(
            _header_text(self.config.email.subject_prefix),
            self._edition_label(edition, long=False),
            best,
            count,
            [g.title for g in sorted(groups, key=lambda g: -g.count)]
            if groups and topics
            else [self.topics[n][1].display_title for n in topics],
        )
        return _Frame(subject, text, page, parts)


OVERVIEW_TITLES = 3  # top titles per topic in the overview
_FEEDBACK_HTML = re.compile(r'<p [^>]*class="feedback"[^>]*>.*?</p>\s*', re.S)
LEARNED_WEIGHT = 1.5  # ranking points per deviation of a reader's model score
CHIP_CACHE = 32_768  # "why" lines kept per send (about 2 KB each with their encodings)
QP_LINES = 20_000  # a frame's lines kept quoted-printable (emptied when full)
QP_RUNS = 5_000  # a frame's runs of lines between two marks, kept encoded (the same)
WRAPPED_LINES = 5_000  # a frame's long text lines kept wrapped (emptied when full)


def _shown(chosen: Sequence[tuple[Paper, list[TopicMatch]]], full: int, listed: int) -> set[int]:
    """Return the rank positions that go in the email: the best `full` (as cards) and the
    next `listed` (as lines), except that a topic none of whose papers made it gets its
    best paper as a line, in place of the last line of a topic that keeps at least one:
    a reader of a small topic next to a big one still sees it in the email."""
    limit = full + listed
    shown = set(range(min(limit, len(chosen))))
    if len(chosen) <= limit or not listed:
        return shown

    def topic(n: int) -> str:
        mine = chosen[n][1]
        return mine[0].topic if mine else ""

    per_topic: dict[str, int] = {}
    firsts: dict[str, int] = {}
    for n in range(len(chosen)):
        firsts.setdefault(topic(n), n)
        if n in shown:
            per_topic[topic(n)] = per_topic.get(topic(n), 0) + 1
    for name, n in sorted(firsts.items(), key=lambda item: item[1]):
        if n in shown:
            continue
        for m in sorted((m for m in shown if m >= full), reverse=True):
            if per_topic[topic(m)] > 1:
                shown.remove(m)
                per_topic[topic(m)] -= 1
                shown.add(n)
                per_topic[name] = 1
                break
    return shown


SUBJECT_MAX = 120


def subject_line(prefix: str, when: str, best: str, count: int, topics: Sequence[str]) -> str:
    """Return the Subject: `Prefix, 1 Dec: "Best title" and 14 more on speech, agents`.

    One line, never over SUBJECT_MAX characters: topics are dropped from the end, then the
    title is shortened with an ellipsis.
    """
    head = f"{prefix}, {when}: "
    if not count:
        base = f"{head}nothing new"
        return (base + (f" on {', '.join(topics)}" if topics else ""))[:SUBJECT_MAX]
    rest = f" and {count - 1} more" if count > 1 else ""
    shown = list(topics)
    while True:
        tail = rest + (f" on {', '.join(shown)}" if shown else "")
        room = SUBJECT_MAX - len(head) - len(tail) - 2  # the quotes
        if room >= min(len(best), 30) or not shown:
            break
        shown.pop()
    title = one_line(best).replace('"', "'")
    room = max(room, 1)
    if len(title) > room:
        # Three dots, not "…": a non-ASCII word makes Python fold the header in a way
        # that shows a double space in mail clients.
        title = title[: max(room - 3, 0)].rstrip() + "..."
    return f'{head}"{title}"{tail}'[:SUBJECT_MAX]


# Characters quoted-printable writes as themselves (printable ASCII but "=" and the
# space), and ones a form can stand a token in with: never written by the encoder itself
# (it adds "=", hex digits and line ends), so in its output they are the stand-in's.
_QP_LITERAL = re.compile(r"[!-<>-~]*")
_STAND_INS = "~^|`{}"
_TokenForm = tuple[str | tuple[int, int], ...]  # text, and (start, end) of the token


def _token_form(lines: str, mark: str, size: int) -> _TokenForm | None:
    """Return `lines` quoted-printable with each `mark` a token of `size` characters to
    be filled in, as text and slices of the token; None when no stand-in is free."""
    stand_in = next((c for c in _STAND_INS if c not in lines), None)
    if stand_in is None or size < 1:
        return None
    encoded = _qp(lines.replace(mark, stand_in * size))
    form: list[str | tuple[int, int]] = []
    last = at = 0  # in `encoded`; in the token (each mark starts it again)
    for run in re.finditer(re.escape(stand_in) + "+", encoded):
        form.append(encoded[last : run.start()])
        left = run.end() - run.start()
        while left:  # a run may hold the end of one token and the start of the next
            take = min(left, size - at)
            form.append((at, at + take))
            at, left = (at + take) % size, left - take
        last = run.end()
    form.append(encoded[last:])
    return tuple(form)


def _fill_token(form: _TokenForm, token: str) -> str:
    return "".join([p if isinstance(p, str) else token[p[0] : p[1]] for p in form])


def _qp(body: str) -> str:
    """Return `body` as quoted-printable, lines kept (binascii: C speed, RFC 2045 soft
    breaks at 76)."""
    return binascii.b2a_qp(body.encode("utf-8"), istext=True).decode("ascii")


_URL_SAFE = re.compile(r"[A-Za-z0-9_.~-]*")  # what quote(..., safe="") never changes
_JINJA_TAG = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.S)
_JINJA_EXPR = re.compile(r"\{\{([-+]?)(.*?)([-+]?)\}\}", re.S)


# Markup of a str, without markupsafe's checks (a frame makes about 60).
_markup = functools.partial(str.__new__, markupsafe.Markup)


def _html_text(value: object) -> str:
    """`value` escaped as html5ever (the inliner's serializer) writes text."""
    if hasattr(value, "__html__"):
        return markupsafe.Markup(value)
    text = str(value)
    if "&" in text or "<" in text or ">" in text or "\xa0" in text:
        text = text.replace("&", "&amp;").replace("\xa0", "&nbsp;")
        text = text.replace("<", "&lt;").replace(">", "&gt;")
    return _markup(text)


def _html_attr(value: object) -> str:
    """`value` escaped as html5ever writes an attribute's value (in double quotes)."""
    if hasattr(value, "__html__"):
        return markupsafe.Markup(value)
    text = str(value)
    if "&" in text or '"' in text or "\xa0" in text:
        text = text.replace("&", "&amp;").replace("\xa0", "&nbsp;").replace('"', "&quot;")
    return _markup(text)


def _inlined_template(
    env: jinja2.Environment, name: str, style: str, css: str
) -> jinja2.Template | Literal[False]:
    """Return the template `name` with the stylesheet inlined into its source, once: its
    Jinja tags are set aside, the HTML around them inlined, the tags put back, each
    `{{ value }}` escaped as the inliner would write it in that place (text or an
    attribute); or False when that cannot be done (a tag lost or moved by the HTML
    parser, a template that does not compile). Rendering it gives what inlining the
    rendered template gives, as long as the stylesheet's selectors see only the
    template's own elements and classes (the caller checks the first frame)."""
    if _positional(css):
        return False
    try:
        source, _, _ = env.loader.get_source(env, name)  # type: ignore[union-attr]
    except jinja2.TemplateError:
        return False
    include = re.compile(r"\{%-?\s*include\s+[\"']" + re.escape(style) + r"[\"']\s*-?%\}")
    source = include.sub(lambda _: css, source)  # the stylesheet, as the include puts it
    tags: list[str] = []
    mark = "pdt" + secrets.token_hex(8)

    def aside(m: re.Match[str]) -> str:
        tags.append(m.group())
        return f"{mark}{len(tags) - 1}x"

    try:
        inlined = _inliner.inline(_JINJA_TAG.sub(aside, source))
    except ValueError:
        return False
    spots = list(re.finditer(re.escape(mark) + r"([0-9]+)x", inlined))
    if [int(m.group(1)) for m in spots] != list(range(len(tags))):
        return False
    out: list[str] = []
    at = 0
    for m in spots:
        out.append(inlined[at : m.start()])
        tag = tags[int(m.group(1))]
        expr = _JINJA_EXPR.fullmatch(tag)
        if expr:
            attr = inlined.rfind("<", 0, m.start()) > inlined.rfind(">", 0, m.start())
            escape = "_pd_html_attr" if attr else "_pd_html_text"
            tag = f"{{{{{expr.group(1)} ({expr.group(2)}) | {escape} {expr.group(3)}}}}}"
        out.append(tag)
        at = m.end()
    out.append(inlined[at:])
    # Filters, not globals: Jinja calls a filter directly, a global through Context.call.
    # On an overlay with filters of its own, so the shared environment is left as it is;
    # every value is escaped by them, so autoescaping would only escape their Markup
    # again, unless the template pulls in others (whose values it must still escape).
    pulls = re.search(r"\{%-?\s*(include|extends|import|from)\b", "".join(out))
    overlay = env.overlay(autoescape=bool(pulls))
    overlay.filters = {**env.filters, "_pd_html_text": _html_text, "_pd_html_attr": _html_attr}
    try:
        return overlay.from_string("".join(out))
    except jinja2.TemplateError:
        return False


# A selector that looks at siblings or at a position among them (a + b, a ~ b,
# :first-child, :nth-of-type(2), :empty...) matches a loop's body once in the template
# but each repeat in the rendered page: a stylesheet with one is inlined per reader.
_POSITIONAL = re.compile(r"[+~]|:(?:first|last|nth|only)-|:empty\b")
_DECLARATIONS = re.compile(r"\{[^{}]*\}")


def _positional(css: str) -> bool:
    """True when a selector of `css` depends on siblings or position (see _POSITIONAL)."""
    css = re.sub(r"/\*.*?\*/", "", css, flags=re.S)
    # The innermost blocks are the declarations (a calc(a + b) is in one): without them
    # what is left is selectors and at-rule preludes, @media bodies' included.
    return bool(_POSITIONAL.search(_DECLARATIONS.sub(";", css)))


def _first(pair: tuple[int, TopicMatch]) -> int:
    return pair[0]


def _terms(matches: Sequence[TopicMatch]) -> list[str]:
    """The terms that hit, across the matches, each once, in order."""
    terms: list[str] = []
    for m in matches:
        terms += [t for t in m.terms if t not in terms]
    return terms


_BLANK = PaperView("", "", "", "", "", None, None, "", None, 0, "", False, False, [], [], "")
_OTHER = PaperView("0", "t", "h", "a", "p", "g", "w", "n", "o", 1, "b", True, True, [], [], "")

# A form: literal text, and slots (value index, escaped as an attribute?) to fill in.
_Form = tuple[str | tuple[int, bool | None], ...]


def _form(rendered: str, slots: re.Pattern[str], *, html: bool) -> _Form:
    """Return `rendered` (holding slot marks, whose group 1 is the value's index) as a
    form. In HTML a slot inside a tag is an attribute value, else text; text (html=False)
    is filled in as it is."""
    out: list[str | tuple[int, bool | None]] = []
    at = 0
    for m in slots.finditer(rendered):
        if m.start() > at:
            out.append(rendered[at : m.start()])
        attr = rendered.rfind("<", 0, m.start()) > rendered.rfind(">", 0, m.start())
        out.append((int(m.group(1)), attr if html else None))
        at = m.end()
    if at < len(rendered):
        out.append(rendered[at:])
    return tuple(out)


def _fill(form: _Form, values: Sequence[str]) -> str:
    """Return the form with its slots filled in, escaped as html5ever (the inliner's
    serializer) writes text and attribute values."""
    out: list[str] = []
    for item in form:
        if isinstance(item, str):
            out.append(item)
            continue
        value = values[item[0]]
        if item[1] is None:
            out.append(value)
        elif item[1]:
            out.append(value.replace("&", "&amp;").replace("\xa0", "&nbsp;").replace('"', "&quot;"))
        else:
            out.append(
                value.replace("&", "&amp;")
                .replace("\xa0", "&nbsp;")
                .replace("<", "&lt;")
                .replace(">", "&gt;")
            )
    return "".join(out)


# The kinds of a fragment's pieces (see `_pieces`).
_CONSTANT, _CHIP_LINE, _FEEDBACK_LINES, _OTHER_LINE = range(4)


def _pieces(body: str, chip: str, feedback: str) -> tuple[tuple[int, str], ...]:
    """Return `body` (ending with a line end) as (kind, text) pieces cut at line ends:
    runs of lines with no mark, quoted-printable (_CONSTANT); the line that is the chip
    mark alone (_CHIP_LINE); runs of lines with the feedback mark only, raw
    (_FEEDBACK_LINES); any other line with a mark, raw (_OTHER_LINE). The raw ones are
    filled in and encoded per reader."""
    out: list[tuple[int, str]] = []
    run: list[str] = []
    kind = _CONSTANT
    for line in body.split("\n")[:-1]:
        if line == chip:
            now = _CHIP_LINE
        elif chip in line:
            now = _OTHER_LINE
        elif feedback in line:
            now = _FEEDBACK_LINES
        else:
            now = _CONSTANT
        if run and (now != kind or now in (_CHIP_LINE, _OTHER_LINE)):
            text = "".join(run)
            out.append((kind, _qp(text) if kind == _CONSTANT else text))
            run = []
        kind = now
        run.append(line + "\n")
    if run:
        text = "".join(run)
        out.append((kind, _qp(text) if kind == _CONSTANT else text))
    return tuple(out)


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


def _wrap_text(
    text: str, keep: Sequence[str] = (), cache: dict[str, list[str]] | None = None
) -> str:
    """Wrap the text body's long lines at TEXT_WIDTH, keeping each line's indent.

    URLs are never broken (a word longer than the width stays whole on its line); lines
    holding a `keep` placeholder stay whole (their length is not known yet). `cache`:
    long line -> its lines, kept across calls (a send's frames share most of them).
    """
    out: list[str] = []
    for line in text.splitlines():
        if line == SIGNATURE_SEPARATOR:  # its trailing space is what makes it one
            out.append(line)
            continue
        if len(line) <= TEXT_WIDTH or any(k in line for k in keep):
            out.append(line.rstrip())
            continue
        if cache is not None:
            found = cache.get(line)
            if found is None:
                if len(cache) >= WRAPPED_LINES:
                    cache.clear()  # bounded
                found = cache[line] = _wrap_line(line)
            out += found
            continue
        out += _wrap_line(line)
    return "\n".join(out) + "\n"


def _wrap_line(line: str) -> list[str]:
    """`line` wrapped as textwrap.wrap does it here (indent kept, no word broken)."""
    indent = line[: len(line) - len(line.lstrip())]
    text = line.strip()
    width = TEXT_WIDTH - len(indent)
    if width > 0 and text and text.isprintable() and "  " not in text:
        # Words apart by single spaces (nearly every line): textwrap's greedy fill without
        # its regular expressions, several times faster; the same lines (tested).
        lines: list[str] = []
        words: list[str] = []
        size = 0
        for word in text.split(" "):
            if words and size + 1 + len(word) > width:
                lines.append(indent + " ".join(words))
                words, size = [], 0
            size += len(word) + (1 if words else 0)
            words.append(word)
        if words:
            lines.append(indent + " ".join(words))
        return lines
    return _textwrap(line)


def _textwrap(line: str) -> list[str]:
    """textwrap's wrapping of `line` (its indent kept, no word broken): `_wrap_line`'s
    way for lines with other spaces, and what it must give for every line (tested)."""
    indent = line[: len(line) - len(line.lstrip())]
    return textwrap.wrap(
        line.strip(),
        TEXT_WIDTH,
        initial_indent=indent,
        subsequent_indent=indent,
        break_long_words=False,
        break_on_hyphens=False,
    )
