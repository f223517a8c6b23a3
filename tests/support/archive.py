"""A small archive of editions for the reading pages: three real captures, one a day, each
fetched at 06:00 UTC and sent as that day's email at 07:00 (time-machine), ending today
(the pages read the real clock). The newest day is fetched again at 06:30 with more
upvotes, so the rising list has something to show, and it carries one hostile paper
(HOSTILE) besides its real ones."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import time_machine

from digest.clock import today_utc
from digest.config import Config
from digest.models import Listing, Paper
from digest.source.parse import parse_api
from digest.store import Store
from tests.support.paths import REAL

DAYS = [
    REAL / "api-daily_papers-2025-12-11.reserialised.json",
    REAL / "api-daily_papers-2026-06-03.reserialised.json",
    REAL / "api-daily_papers-2026-08-21.reserialised.json",
]
SCRIPT = '<script>alert("owned")</script>'
HOSTILE = Paper(
    id="2612.99999",
    # Markup, a CR LF header break, a right-to-left override and Arabic, then 10 KB.
    title=f"{SCRIPT} agent\r\nX-Injected: 1 \u202eevil\u202c مرحبا " + "W" * 10_000,
    abstract=f"An agent abstract with {SCRIPT} and <img src=x onerror=alert(1)>.",
    authors=("<b>Eve</b>", "Mallory\r\nBcc: victim@example.org"),
    organization="<i>Org</i>",
    upvotes=1,
    github_repo="javascript:alert(1)",
    project_page="data:text/html,<script>alert(1)</script>",
    ai_keywords=("<svg onload=alert(1)>", "agent"),
)


@dataclass(frozen=True)
class Archive:
    days: list[date]  # the editions, oldest first
    ids: dict[date, list[str]]  # each edition's paper ids
    risen: dict[str, int]  # paper id -> upvotes gained between the two fetches of the last day


def listing(path: Path) -> Listing:
    return parse_api(path.read_bytes(), "https://huggingface.co/api/daily_papers")


def build_archive(config: Config, *, hostile: bool = True) -> Archive:
    """Fill config's database with the three editions; return what went in."""
    today = today_utc()
    days = [today - timedelta(days=len(DAYS) - 1 - i) for i in range(len(DAYS))]
    ids: dict[date, list[str]] = {}
    risen: dict[str, int] = {}
    store = Store.open(config.store.database)
    try:
        for day, path in zip(days, DAYS, strict=True):
            at = datetime(day.year, day.month, day.day, 6, tzinfo=UTC)
            day_listing = listing(path)
            if hostile and day == today:
                day_listing = replace(day_listing, papers=(*day_listing.papers, HOSTILE))
            with time_machine.travel(at, tick=False):
                store.store_listing(day_listing)
            if day == today:
                later = tuple(
                    replace(p, upvotes=p.upvotes + 7 * (i % 3))
                    for i, p in enumerate(day_listing.papers)
                )
                risen = {p.id: 7 * (i % 3) for i, p in enumerate(day_listing.papers)}
                with time_machine.travel(at + timedelta(minutes=30), tick=False):
                    store.store_listing(replace(day_listing, papers=later))
            claimed = store.claim_digest(day, today=day, now=at + timedelta(hours=1))
            ids[day] = [sp.paper.id for sp in claimed]
    finally:
        store.close()
    return Archive(days, ids, risen)
