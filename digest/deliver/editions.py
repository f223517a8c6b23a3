"""Which papers each reader's email holds: the day's edition for a daily reader, the
editions of the week for a weekly one (on schedule.weekly_day), and never one twice.

Each paper belongs to exactly one edition (papers.digest_day, claimed by the day's send).
A reader's email on day D covers the editions from the day after their last delivery up
to D: a weekly reader's week, or, for a daily reader whose last email was a weekly one
(they switched), the days since it. Covered days never overlap and leave no gap, so a
reader switching between daily and weekly gets every paper once. The first day covered
is kept in the ledger (deliveries.covers_from), which is what the next send reads.
A week is the longest an email reaches back: a reader away for a month gets the last
week, as a first edition does.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from email.message import EmailMessage
from typing import Any

from digest.addresses import address_key
from digest.config import WEEKDAYS, Config
from digest.deliver.likes import learned_for, like_matches_for
from digest.models import StoredPaper, Subscriber
from digest.store import Store
from digest.store.meta import secret_key
from digest.store.readers import Delivery, Ledger

WEEK = 7  # days an email reaches back at most


def due(config: Config, subscriber: Subscriber, day: date) -> bool:
    """Return whether the reader gets an email on `day`: a daily reader every send day,
    a weekly one on schedule.weekly_day only."""
    if subscriber.frequency != "weekly":
        return True
    return WEEKDAYS[day.weekday()] == config.schedule.weekly_day.strip().lower()[:3]


def first_edition(subscriber: Subscriber, day: date, last: Delivery | None) -> date:
    """Return the first edition day the reader's email on `day` covers (`day` itself for
    a daily reader), given their latest delivery before `day` that may be in their inbox."""
    earliest = day - timedelta(days=WEEK - 1)
    if subscriber.frequency == "weekly":
        start = earliest if last is None else last.day + timedelta(days=1)
    elif last is not None and last.covers_from is not None:
        start = last.day + timedelta(days=1)  # back to daily: the days since the last week
    else:
        start = day
    return min(max(start, earliest), day)


@dataclass
class EditionRender:
    """The send's renderer over every edition some reader's email takes, and per reader
    where theirs starts."""

    renderer: Any  # digest.render.email.DigestRenderer (imported only when sending)
    day: date
    firsts: dict[str, date]  # address_key -> first edition day
    days: dict[str, date]  # paper id -> its edition day
    weekly: set[str]  # address_keys of the weekly readers
    emails: dict[str, str] = field(default_factory=dict)  # address_key -> address

    def edition(self, subscriber: Subscriber) -> Any:
        """Return the papers of the reader's email (a digest.render.email.Edition)."""
        edition = importlib.import_module("digest.render.email").Edition
        key = address_key(subscriber.email)
        first = self.firsts.get(key, self.day)
        ids = frozenset(pid for pid, d in self.days.items() if first <= d <= self.day)
        weekly = key in self.weekly
        return edition(ids, first if (weekly or first < self.day) else None, weekly=weekly)

    def render(self, subscriber: Subscriber) -> EmailMessage | None:
        """Return the reader's email (the `Render` shape the send loop calls)."""
        return self.renderer.render(subscriber, self.edition(subscriber))

    def covers(self) -> dict[str, date]:
        """Return address_key -> first day, for the ledger (readers covering more than
        the day, and every weekly reader)."""
        return {k: d for k, d in self.firsts.items() if d < self.day or k in self.weekly}


def edition_render(
    config: Config,
    store: Store,
    day: date,
    today_papers: Sequence[StoredPaper],
    readers: Sequence[Subscriber],
    *,
    renderer: Any = None,
) -> EditionRender:
    """Return the renderer for `readers` on `day`, whose own edition is `today_papers`
    (claimed already): earlier editions are read for the readers whose email starts
    before `day`."""
    if renderer is None:
        renderer = importlib.import_module("digest.render.email").DigestRenderer
    last = Ledger(store).last_delivered(before=day)
    firsts: dict[str, date] = {}
    weekly: set[str] = set()
    emails: dict[str, str] = {}
    for sub in readers:
        key = address_key(sub.email)
        emails[key] = sub.email
        firsts[key] = first_edition(sub, day, last.get(key))
        if sub.frequency == "weekly":
            weekly.add(key)
    earliest = min(firsts.values(), default=day)
    papers = list(today_papers)
    days = {sp.paper.id: day for sp in today_papers}
    if earliest < day:
        for edition_day, more in store.edition_papers(earliest, day - timedelta(days=1)).items():
            for sp in more:
                if sp.paper.id not in days:
                    days[sp.paper.id] = edition_day
                    papers.append(sp)
    extra = relevance_args(config, store, papers, list(emails))
    return EditionRender(renderer(config, papers, day, **extra), day, firsts, days, weekly, emails)


def relevance_args(
    config: Config, store: Store, papers: Sequence[StoredPaper], readers: Sequence[str]
) -> dict[str, Any]:
    """The renderer's keyword arguments of issue 15, from the database only (no network
    at send time): like-topics' matches, the learned models of `readers` (address keys)
    who chose, the papers' vectors, and the key of the feedback links. A send with none
    of the first two still signs feedback links (so readers can start choosing)."""
    out: dict[str, Any] = {"feedback_key": secret_key(store, config.secret_key)}
    likes = like_matches_for(config, store, [sp.paper for sp in papers])
    if likes:
        out["likes"] = likes
    learned = learned_for(store, readers, [sp.paper.id for sp in papers])
    if learned is not None:
        out["models"] = learned.models
        out["vectors"] = learned.vectors
    return out
