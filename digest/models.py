"""Plain data passed down the flow: source -> store -> topics -> render -> deliver."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum

# The status vocabularies, one name each. They are str (StrEnum), so they go into SQLite and
# compare with the stored text as they are.


class RunStatus(StrEnum):
    """A fetch run (table `runs`)."""

    OK = "ok"
    EMPTY = "empty"  # the list had no papers (a weekend, a holiday)
    FAILED = "failed"


class DeliveryState(StrEnum):
    """A row of the delivery ledger (table `deliveries`): one reader, one digest day.

    "sent" is final; "sending" is in flight (its final "." may be out); "uncertain" waits
    for the operator (`digest resend`); queued, failed and skipped are tried again by the
    next run of the day.
    """

    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"
    UNCERTAIN = "uncertain"


class SubscriberStatus(StrEnum):
    """A subscriber in the database (table `subscribers`)."""

    ACTIVE = "active"
    UNSUBSCRIBED = "unsubscribed"
    PENDING = "pending"  # signed up on the web, confirmation link not followed yet
    # Not stored: an active reader whose mail was refused for good too often (the
    # `bounces` table, smtp.max_bounces). Not mailed until reactivated.
    BOUNCING = "bouncing"


class JobStatus(StrEnum):
    """One fire of a scheduled job (table `job_runs`)."""

    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"  # the day's send had already gone
    BUSY = "busy"  # another run held the lock
    STOPPED = "stopped"  # the service was stopping
    STARTED = "started"  # the "serve" row: the scheduler came up (catch-up looks at it)


@dataclass(frozen=True)
class Paper:
    """One paper as the Daily Papers list shows it. Only `id` and `title` are certain."""

    id: str  # arXiv id without version, e.g. "2509.04664"
    title: str
    abstract: str = ""
    authors: tuple[str, ...] = ()
    published_at: datetime | None = None  # arXiv publication time (UTC)
    daily_date: date | None = None  # the day it was on the daily list: we bucket by this
    upvotes: int = 0
    comments: int = 0
    organization: str | None = None
    github_repo: str | None = None
    github_stars: int | None = None
    project_page: str | None = None
    thumbnail: str | None = None
    ai_summary: str | None = None
    ai_keywords: tuple[str, ...] = ()
    withdrawn: bool = False
    submitted_by: str | None = None

    @property
    def hf_url(self) -> str:
        return f"https://huggingface.co/papers/{self.id}"

    @property
    def arxiv_url(self) -> str:
        return f"https://arxiv.org/abs/{self.id}"

    @property
    def pdf_url(self) -> str:
        return f"https://arxiv.org/pdf/{self.id}"


@dataclass(frozen=True)
class Listing:
    """What one fetch returned: the papers and what we know about the list itself."""

    papers: tuple[Paper, ...]
    url: str  # where it came from (URL, or file path for --from)
    source: str  # "page", "api", "page-dom" (cards only) or "file"
    list_date: date | None = None  # the day the list is for, when the list says
    trending: bool = False

    @property
    def empty(self) -> bool:
        return not self.papers


@dataclass(frozen=True)
class StoredPaper:
    """A paper as the store hands it back: the paper plus when we first saw it."""

    paper: Paper
    first_seen: datetime  # UTC
    backfilled: bool = False  # stored by a backfill of a past day: archive, not news


LEFT_OUT_SHOWN = 5  # left-out papers named in a run's one line; the run's record has all


@dataclass(frozen=True)
class RunResult:
    """The outcome of one ingest run, as recorded in the `runs` table."""

    run_id: int
    status: RunStatus
    source: str
    url: str
    seen: int = 0
    new: int = 0
    updated: int = 0
    list_date: date | None = None
    reason: str | None = None  # why empty / why failed
    new_ids: tuple[str, ...] = field(default_factory=tuple)
    # (paper id, why) for each listed paper the store could not hold; the rest was stored.
    left_out: tuple[tuple[str, str], ...] = ()

    def summary(self) -> str:
        """One line saying what happened, for the end of every command."""
        day = f" for {self.list_date.isoformat()}" if self.list_date else ""
        if self.status == RunStatus.FAILED:
            return f"run {self.run_id} failed: {self.reason} (nothing stored){self._left_out()}"
        if self.status == RunStatus.EMPTY:
            return (
                f"run {self.run_id}: {self.source} {self.url}{day} listed no papers "
                f"({self.reason}); seen 0, new 0"
            )
        return (
            f"run {self.run_id}: {self.source} {self.url}{day}: seen {self.seen}, "
            f"new {self.new}, updated {self.updated}{self._left_out()}"
        )

    def _left_out(self) -> str:
        if not self.left_out:
            return ""
        shown = self.left_out[:LEFT_OUT_SHOWN]
        # backslashreplace: an id may hold a lone surrogate, which no terminal can print.
        named = "; ".join(
            f"{paper_id.encode('utf-8', 'backslashreplace').decode()}: {why}"
            for paper_id, why in shown
        )
        more = len(self.left_out) - len(shown)
        rest = f"; and {more} more (see the run's left_out)" if more else ""
        return f"; left out {len(self.left_out)}: {named}{rest}"


@dataclass(frozen=True)
class TopicMatch:
    """A paper is in a topic, and why: the terms (as the user wrote them) that hit."""

    topic: str  # the topic's name
    terms: tuple[str, ...]


@dataclass(frozen=True)
class Subscriber:
    """Someone who gets the daily email. No topics: every new paper (or none, per config)."""

    email: str
    topics: tuple[str, ...] = ()
    token: str = ""  # signed token for the unsubscribe / preferences links
    keywords: str = ""  # free keywords from the subscribe form: a personal topic
    preferences_token: str = ""  # signed token for the preferences link (its own kind)
    frequency: str = "daily"  # "daily" or "weekly"
    # The reader's unsubscribe mailto (unsubscribe+<tag>@domain) and envelope sender
    # (bounces+<tag>@domain); "" when no bounces mailbox is configured.
    unsubscribe_mailto: str = ""
    envelope_from: str = ""
