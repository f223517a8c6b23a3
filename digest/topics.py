"""Keyword topics: which papers each topic takes, and which of its terms hit.

Matching works on words, not on regexes per term: each field of a paper is split into
case-folded words once, and one index over every topic's terms is walked along those
words. The cost per paper grows with its words and the terms that hit, not with the
number of topics x terms. Word boundaries come free ("RL" never matches "URL"), hyphens
and spaces inside a term are the same thing ("tool use" = "tool-use"), and `agent*`
is the only way to ask for "agents" and "agentic".
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from digest.config import TopicConfig
from digest.models import Paper, TopicMatch

_WORD_RE = re.compile(r"\w+")
SEARCH_FIELDS = ("title", "abstract", "authors", "ai_keywords", "ai_summary")


def words(text: str) -> list[str]:
    """Case-folded, NFKC-normalised words of `text` (letters and digits of any script)."""
    return _WORD_RE.findall(unicodedata.normalize("NFKC", text).casefold())


@dataclass(frozen=True)
class _Term:
    id: int
    text: str  # as the user wrote it
    tokens: tuple[str, ...]
    prefix: bool  # last token matches as a prefix ("agent*")


@dataclass
class _TopicPlan:
    config: TopicConfig
    index: int
    fields: frozenset[str]
    include: dict[int, str]  # term id -> text, for keywords and phrases
    exclude: set[int]
    authors: dict[int, str]
    organizations: dict[int, str]


class Matcher:
    """All topics compiled once; `match(paper)` is one pass over the paper's words."""

    def __init__(self, topics: Sequence[TopicConfig]) -> None:
        self.topics = list(topics)
        self._terms: dict[tuple[tuple[str, ...], bool], _Term] = {}
        self._by_first: dict[str, list[_Term]] = defaultdict(list)
        self._prefix_single: dict[str, list[_Term]] = defaultdict(list)
        self._plans: list[_TopicPlan] = []
        self._fields_needed: set[str] = set()
        self._need_authors = False
        self._need_orgs = False
        for i, topic in enumerate(self.topics):
            plan = _TopicPlan(topic, i, frozenset(topic.fields), {}, set(), {}, {})
            for text in [*topic.keywords, *topic.phrases]:
                term = self._term(text, allow_prefix=text in topic.keywords)
                if term:
                    plan.include[term.id] = text
            for text in topic.exclude:
                term = self._term(text, allow_prefix=True)
                if term:
                    plan.exclude.add(term.id)
            for text in topic.authors:
                term = self._term(text, allow_prefix=False)
                if term:
                    plan.authors[term.id] = text
            for text in topic.organizations:
                term = self._term(text, allow_prefix=False)
                if term:
                    plan.organizations[term.id] = text
            if plan.include or plan.exclude:
                self._fields_needed |= plan.fields
            self._need_authors |= bool(plan.authors)
            self._need_orgs |= bool(plan.organizations)
            self._plans.append(plan)

    def _term(self, text: str, *, allow_prefix: bool) -> _Term | None:
        raw = text.strip()
        prefix = allow_prefix and raw.endswith("*")
        tokens = tuple(words(raw.rstrip("*")))
        if not tokens:
            return None
        key = (tokens, prefix)
        term = self._terms.get(key)
        if term is None:
            term = _Term(len(self._terms), raw, tokens, prefix)
            self._terms[key] = term
            if prefix and len(tokens) == 1:
                self._prefix_single[tokens[0]].append(term)
            else:
                self._by_first[tokens[0]].append(term)
        return term

    def _hits(self, segments: Iterable[str]) -> set[int]:
        """Ids of the terms found in any of `segments` (a phrase never spans two)."""
        found: set[int] = set()
        by_first = self._by_first
        prefixes = self._prefix_single
        for segment in segments:
            toks = words(segment)
            n = len(toks)
            for i, tok in enumerate(toks):
                for term in by_first.get(tok, ()):
                    k = len(term.tokens)
                    if i + k > n:
                        continue
                    if k > 1:
                        body_ok = all(toks[i + j] == term.tokens[j] for j in range(1, k - 1))
                        last = toks[i + k - 1]
                        end = term.tokens[-1]
                        if not body_ok or not (
                            last.startswith(end) if term.prefix else last == end
                        ):
                            continue
                    found.add(term.id)
                if prefixes:
                    for cut in range(1, len(tok) + 1):
                        for term in prefixes.get(tok[:cut], ()):
                            found.add(term.id)
        return found

    def match(self, paper: Paper) -> list[TopicMatch]:
        """Return the topics `paper` belongs to, in config order, with the terms that hit."""
        field_hits: dict[str, set[int]] = {}
        for name in self._fields_needed:
            field_hits[name] = self._hits(_segments(paper, name))
        author_hits = self._hits(paper.authors) if self._need_authors else set()
        org_hits = self._hits([paper.organization or ""]) if self._need_orgs else set()
        out: list[TopicMatch] = []
        for plan in self._plans:
            t = plan.config
            if t.has_code and not paper.github_repo:
                continue
            if paper.upvotes < t.min_upvotes or (paper.github_stars or 0) < t.min_stars:
                continue
            in_fields: set[int] = set()
            for f in plan.fields:
                in_fields |= field_hits.get(f, set())
            if plan.exclude & in_fields:
                continue
            terms = [text for tid, text in plan.include.items() if tid in in_fields]
            terms += [text for tid, text in plan.authors.items() if tid in author_hits]
            terms += [text for tid, text in plan.organizations.items() if tid in org_hits]
            if terms:
                out.append(TopicMatch(t.name, tuple(terms)))
        return out


def _segments(paper: Paper, field: str) -> list[str]:
    if field == "title":
        return [paper.title]
    if field == "abstract":
        return [paper.abstract]
    if field == "authors":
        return list(paper.authors)
    if field == "ai_keywords":
        return list(paper.ai_keywords)
    if field == "ai_summary":
        return [paper.ai_summary or ""]
    raise ValueError(f"unknown field {field!r}")


def match_topics(
    papers: Iterable[Paper], topics: Sequence[TopicConfig]
) -> dict[str, list[TopicMatch]]:
    """Return {paper id: its topic matches} for the papers in at least one topic."""
    matcher = Matcher(topics)
    out: dict[str, list[TopicMatch]] = {}
    for paper in papers:
        matches = matcher.match(paper)
        if matches:
            out[paper.id] = matches
    return out
