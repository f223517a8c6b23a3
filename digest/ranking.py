"""Rank one reader's papers for their email: how strongly their topics matched, upvotes,
freshness, and an optional extra score per paper (the hook the learned relevance of
issue 15 feeds). Pure: plain data in, an ordered list out.

The score is a sum of parts each in 0..1 (times its weight), so no one signal swamps the
others: a paper that hit three of the reader's terms in two topics outranks a slightly
more upvoted one that hit one term; a week-old paper in a weekly edition sinks a little
below a fresh one of the same votes. Upvotes count on a log scale against the most
upvoted paper of the candidates (a day of 300 upvotes and a day of 30 rank alike).

A send ranks thousands of readers over the same papers: `base_scores` computes the part
that is the same for every reader (votes, freshness, extra) once; per reader only the
match strength is added (`rank(..., base=...)`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date

from digest.models import Paper, TopicMatch

MATCH_WEIGHT = 1.0
VOTES_WEIGHT = 1.0
FRESH_WEIGHT = 0.5
TERMS_FULL = 3  # terms hit (across the reader's topics) for a full match score
HALF_LIFE_DAYS = 3.0  # freshness halves every this many days before the edition's day


@dataclass(frozen=True)
class Candidate:
    """One paper a reader may get: its reader-side matches and the day it came out."""

    paper: Paper
    matches: tuple[TopicMatch, ...]  # only the reader's topics; () for a reader of everything
    day: date | None = None  # the day it was new (first seen / on the list); None: today


@dataclass(frozen=True)
class Ranked:
    """A candidate with its score and the parts that made it (for tests and `why`)."""

    candidate: Candidate
    score: float
    match: float
    votes: float
    fresh: float
    extra: float


def match_strength(matches: Sequence[TopicMatch]) -> float:
    """Return 0..1: the distinct terms hit across the matches, TERMS_FULL or more is 1."""
    # One topic's terms are distinct already; across topics, count each term once.
    one = len(matches) == 1
    n = len(matches[0].terms) if one else len({t for m in matches for t in m.terms})
    return min(n, TERMS_FULL) / TERMS_FULL


def freshness(paper_day: date | None, edition_day: date) -> float:
    """Return 1 for a paper of the edition's day, halving every HALF_LIFE_DAYS before it."""
    if paper_day is None:
        return 1.0
    age = max((edition_day - paper_day).days, 0)
    return float(0.5 ** (age / HALF_LIFE_DAYS))


def base_scores(
    candidates: Sequence[Candidate],
    edition_day: date,
    extra: Mapping[str, float] | None = None,
) -> dict[str, tuple[float, float, float]]:
    """Return paper id -> (votes, freshness, extra): the reader-independent parts."""
    top_votes = max((c.paper.upvotes for c in candidates), default=0)
    scale = math.log1p(max(top_votes, 0)) or 1.0
    return {
        c.paper.id: (
            math.log1p(max(c.paper.upvotes, 0)) / scale,
            freshness(c.day, edition_day),
            float(extra.get(c.paper.id, 0.0)) if extra else 0.0,
        )
        for c in candidates
    }


def rank(
    candidates: Sequence[Candidate],
    edition_day: date,
    extra: Mapping[str, float] | None = None,
    *,
    base: Mapping[str, tuple[float, float, float]] | None = None,
) -> list[Ranked]:
    """Return the candidates best first (score, then upvotes, then id: a stable order).

    `extra`: paper id -> an added score (e.g. learned relevance, about 0..1); missing ids
    add 0. `base`: base_scores over a pool holding every candidate (made here if None).
    """
    if base is None:
        base = base_scores(candidates, edition_day, extra)
    out: list[Ranked] = []
    for c in candidates:
        votes, fresh, more = base[c.paper.id]
        match = match_strength(c.matches) if c.matches else 0.0
        score = MATCH_WEIGHT * match + VOTES_WEIGHT * votes + FRESH_WEIGHT * fresh + more
        out.append(Ranked(c, score, match, votes, fresh, more))
    out.sort(key=lambda r: (-r.score, -r.candidate.paper.upvotes, r.candidate.paper.id))
    return out
