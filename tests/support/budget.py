"""The three heavy cases of the email budget, built from the real captures (not edited):
the heaviest real day, a first edition after a week (the seven fullest captured days, as
if on seven days in a row) and a 41-day backlog (every captured API day, one a day).

Each paper is re-dated onto the day it would have come out in that case, so freshness
ranks as it would; the text, votes and links are the capture's.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, timedelta

from digest.config import TopicConfig
from digest.models import Paper, StoredPaper
from tests.support.captures import parse_capture
from tests.support.paths import real_api_captures

EDITION_DAY = date(2026, 12, 1)
# A reader with three broad topics (what a reader tuning topics picks first).
THREE_TOPICS = [
    TopicConfig(name="llm", title="Language models", keywords=["LLM*", "language model*"]),
    TopicConfig(name="agents", title="Agents", keywords=["agent*"]),
    TopicConfig(name="vision", title="Vision", keywords=["image*", "video*", "visual"]),
]


def _days() -> list[list[Paper]]:
    out: list[list[Paper]] = []
    seen: set[str] = set()
    for path in real_api_captures():
        papers = [p for p in parse_capture(path).papers if p.id not in seen]
        seen.update(p.id for p in papers)
        out.append(papers)
    return out


def _dated(days: list[list[Paper]]) -> list[StoredPaper]:
    """The days' papers as stored on consecutive days ending on EDITION_DAY."""
    out: list[StoredPaper] = []
    for back, papers in enumerate(reversed(days)):
        day = EDITION_DAY - timedelta(days=back)
        seen = datetime(day.year, day.month, day.day, 7, tzinfo=UTC)
        out += [StoredPaper(dataclasses.replace(p, daily_date=day), seen) for p in papers]
    return out


def budget_cases() -> dict[str, list[StoredPaper]]:
    """{"heaviest day" | "7-day first edition" | "41-day backlog": the edition's papers}."""
    days = _days()
    heaviest = max(days, key=lambda ps: sum(len(p.abstract) + len(p.title) for p in ps))
    fullest = sorted(days, key=len, reverse=True)[:7]
    return {
        "heaviest day": _dated([heaviest]),
        "7-day first edition": _dated(fullest),
        "41-day backlog": _dated(days),
    }
