"""Keyword topics: which papers each topic takes, and which of its terms hit.

Matching works on words, not on regexes per term: each field of a paper is split into
normalised words once, and one index over every topic's terms is probed with those
words. The cost per paper grows with its words and the terms that hit, not with the
number of topics x terms.

What a term matches:

- Words, case-insensitively (Unicode case folding: "STRASSE" = "Straße"), so word
  boundaries come free: "RL" never matches "URL", "agent" never matches "agents".
- `agent*` (a trailing star) matches any word starting with "agent"; in a term of
  several words the star applies to the last one ("large language model*").
- A term of several words matches those words in a row, whatever separates them:
  "tool use" = "tool-use" = "Tool Use"; "GPT-4" = "gpt 4". A phrase never spans two
  authors or two AI keywords. Underscores separate words too.
- Accents on Latin, Greek and Cyrillic letters are ignored ("Gödel" = "godel"), as the
  store's full-text index does; other marks (Japanese dakuten, Indic vowel signs) are
  kept and count as part of the word.
- Chinese and Japanese are written without spaces, so a run like "大语言模型" would be
  one word; each Han / kana character is its own word instead, and a CJK term is then
  a phrase of characters: "模型" matches inside "大语言模型". Korean (spaced) stays words.

Per topic: a paper matches when any keyword or phrase hits in the topic's `fields`, or
it has a followed author / organisation; an `exclude` term hitting in those fields
vetoes the paper, and `has_code`, `min_upvotes` and `min_stars` filter every match.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from digest.config import TopicConfig
from digest.errors import ConfigError, KeywordsError
from digest.models import Paper, TopicMatch
from digest.terms import term_problem, term_words, words

SEARCH_FIELDS = ("title", "abstract", "authors", "ai_keywords", "ai_summary")


@dataclass(frozen=True)
class _Term:
    id: int
    tokens: tuple[str, ...]
    prefix: bool  # the last token matches as a prefix ("agent*")


_STEM = 4  # prefix terms of at least this many letters are bucketed by their first 4


class Matcher:
    """All topics compiled once; `match(paper)` is one pass over the paper's words.

    Raises ConfigError (naming the topic and key) for a term with no letters or digits.
    """

    def __init__(self, topics: Sequence[TopicConfig]) -> None:
        self.topics = list(topics)
        self._terms: dict[tuple[tuple[str, ...], bool], _Term] = {}
        # Probe tables: one-word exact terms by word; one-word prefixes by their first
        # letters (short ones by themselves); several-word terms by their first word.
        self._single: dict[str, int] = {}
        self._prefix_short: dict[str, int] = {}
        self._prefix_stem: dict[str, list[tuple[str, int]]] = {}
        self._multi: dict[str, list[_Term]] = {}
        # Term id -> the topics using it, with the term's rank in the topic and its text:
        # per field for keywords and exclusions.
        self._include: dict[str, dict[int, list[tuple[int, int, str]]]] = {}
        self._exclude: dict[str, dict[int, list[int]]] = {}
        self._authors: dict[int, list[tuple[int, int, str]]] = {}
        self._orgs: dict[int, list[tuple[int, int, str]]] = {}
        for i, topic in enumerate(self.topics):
            order: dict[str, int] = {}
            for key in ("keywords", "phrases", "authors", "organizations"):
                for text in getattr(topic, key):
                    order.setdefault(text.strip(), len(order))
            for f in topic.fields:
                if f not in SEARCH_FIELDS:
                    raise ConfigError(
                        f"topic {topic.name!r}: unknown field {f!r}", key=f"topics.{topic.name}"
                    )
                inc = self._include.setdefault(f, {})
                for text in [*topic.keywords, *topic.phrases]:
                    tid = self._term(topic, "keywords", text, allow_prefix=True)
                    inc.setdefault(tid, []).append((i, order[text.strip()], text.strip()))
                exc = self._exclude.setdefault(f, {})
                for text in topic.exclude:
                    tid = self._term(topic, "exclude", text, allow_prefix=True)
                    exc.setdefault(tid, []).append(i)
            for key, table in (("authors", self._authors), ("organizations", self._orgs)):
                for text in getattr(topic, key):
                    tid = self._term(topic, key, text, allow_prefix=False)
                    table.setdefault(tid, []).append((i, order[text.strip()], text.strip()))
        self._single_keys = frozenset(self._single)
        self._multi_keys = frozenset(self._multi)
        self._short_lens = sorted({len(h) for h in self._prefix_short})
        # A field nobody's keywords or exclusions look at is never tokenised.
        self._fields = [f for f in SEARCH_FIELDS if self._include.get(f) or self._exclude.get(f)]
        # The filters, as plain tuples: checked for every topic that hits.
        self._filters = [(t.name, t.has_code, t.min_upvotes, t.min_stars) for t in self.topics]

    def _term(self, topic: TopicConfig, key: str, text: str, *, allow_prefix: bool) -> int:
        tokens, prefix = term_words(text)
        prefix = prefix and allow_prefix
        if not tokens:
            raise ConfigError(
                f"topic {topic.name!r}: term {text!r} has no letters or digits to match",
                key=f"topics.{topic.name}.{key}",
            )
        k = (tokens, prefix)
        term = self._terms.get(k)
        if term is None:
            term = _Term(len(self._terms), tokens, prefix)
            self._terms[k] = term
            head = tokens[0]
            if len(tokens) > 1:
                self._multi.setdefault(head, []).append(term)
            elif not prefix:
                self._single[head] = term.id
            elif len(head) < _STEM:
                self._prefix_short[head] = term.id
            else:
                self._prefix_stem.setdefault(head[:_STEM], []).append((head, term.id))
        return term.id

    def hits(self, segments: Iterable[str]) -> set[int]:
        """Return the ids of the terms found in any of `segments` (a phrase never spans two)."""
        runs = [words(s) for s in segments if s]
        unique: set[str] = set()
        for toks in runs:
            unique.update(toks)
        # Set operations run in C: most of the work for one-word terms.
        single = self._single
        found = {single[t] for t in unique & self._single_keys}
        stems, short = self._prefix_stem, self._prefix_short
        if stems:
            for t in unique:
                for head, tid in stems.get(t[:_STEM], ()):
                    if t.startswith(head):
                        found.add(tid)
        if short:
            for n in self._short_lens:
                for t in unique:
                    hit = short.get(t[:n])
                    if hit is not None:
                        found.add(hit)
        if not unique & self._multi_keys:
            return found
        multi = self._multi
        for toks in runs:
            n_toks = len(toks)
            for i, tok in enumerate(toks):
                for term in multi.get(tok, ()):
                    k = len(term.tokens)
                    if i + k > n_toks or term.id in found:
                        continue
                    if k > 2 and tuple(toks[i + 1 : i + k - 1]) != term.tokens[1:-1]:
                        continue
                    last, end = toks[i + k - 1], term.tokens[-1]
                    if last.startswith(end) if term.prefix else last == end:
                        found.add(term.id)
        return found

    def match(self, paper: Paper) -> list[TopicMatch]:
        """Return the topics `paper` belongs to, in config order, with the terms that hit."""
        hit_terms: dict[int, dict[int, str]] = {}  # topic index -> {rank: term text}
        vetoed: set[int] = set()
        for f in self._fields:
            found = self.hits(_segments(paper, f))
            if not found:
                continue
            exc = self._exclude[f]
            inc = self._include[f]
            for tid in found:
                if tid in exc:
                    vetoed.update(exc[tid])
                for i, rank, text in inc.get(tid, ()):
                    d = hit_terms.get(i)
                    if d is None:
                        hit_terms[i] = {rank: text}
                    else:
                        d[rank] = text
        for table, segments in (
            (self._authors, paper.authors),
            (self._orgs, (paper.organization or "",)),
        ):
            if table:
                for tid in self.hits(segments):
                    for i, rank, text in table.get(tid, ()):
                        hit_terms.setdefault(i, {})[rank] = text
        out: list[TopicMatch] = []
        stars = paper.github_stars or 0
        for i in sorted(hit_terms.keys() - vetoed):
            name, has_code, min_upvotes, min_stars = self._filters[i]
            if (has_code and not paper.github_repo) or paper.upvotes < min_upvotes:
                continue
            if stars < min_stars:
                continue
            d = hit_terms[i]
            terms = tuple(d.values()) if len(d) == 1 else tuple(d[r] for r in sorted(d))
            out.append(TopicMatch(name, terms))
        return out


def _segments(paper: Paper, field: str) -> Sequence[str]:
    if field == "title":
        return (paper.title,)
    if field == "abstract":
        return (paper.abstract,)
    if field == "authors":
        return paper.authors
    if field == "ai_keywords":
        return paper.ai_keywords
    if field == "ai_summary":
        return (paper.ai_summary or "",)
    raise ValueError(f"unknown field {field!r}")


def match_topics(
    papers: Iterable[Paper], topics: Sequence[TopicConfig]
) -> dict[str, list[TopicMatch]]:
    """Return {paper id: its topic matches} for the papers in at least one topic.

    Raises ConfigError for a term with no letters or digits.
    """
    matcher = Matcher(topics)
    out: dict[str, list[TopicMatch]] = {}
    for paper in papers:
        matches = matcher.match(paper)
        if matches:
            out[paper.id] = matches
    return out


# -- trying a topic out (`digest topics test`) ---------------------------------------

_PART_RE = re.compile(r'\s*(?:"([^"]*)"|([^,"]*?))\s*(?:,|$)')


def parse_keywords(text: str, *, name: str = "keywords") -> TopicConfig:
    """Return an unsaved topic from free text: comma-separated keywords, "quoted phrases".

    `agent*, "tool use", RL` -> keywords agent*, RL and phrase "tool use".
    Raises KeywordsError on an unbalanced quote or when no term has letters or digits.
    """
    if text.count('"') % 2:
        raise KeywordsError(text, "a quote is not closed")
    keywords: list[str] = []
    phrases: list[str] = []
    pos = 0
    while pos < len(text):
        m = _PART_RE.match(text, pos)
        if not m or m.end() == pos:
            raise KeywordsError(text, f"cannot read from {text[pos:]!r}")
        pos = m.end()
        phrase, keyword = m.group(1), m.group(2)
        if phrase is not None and phrase.strip():
            phrases.append(phrase.strip())
        elif keyword:
            keywords.append(keyword)
    problems = [p for t in [*keywords, *phrases] if (p := term_problem(t))]
    if problems or not (keywords or phrases):
        raise KeywordsError(text, problems[0] if problems else "no terms")
    return TopicConfig(name=name, keywords=keywords, phrases=phrases)


# -- why a paper matched: the term in its context ------------------------------------

CONTEXT_CHARS = 40  # characters of text kept on each side of a matched term


def _term_pattern(term: str) -> re.Pattern[str] | None:
    """A regex finding `term` as the matcher does, on the raw text: its words in a row,
    case-insensitive, anything not a letter or digit between them, the last word a prefix
    when the term ends with "*". Accent folding is not reproduced: such a hit shows no
    context (the match itself stands)."""
    tokens, prefix = term_words(term)
    if not tokens:
        return None
    parts = [re.escape(t) for t in tokens]
    body = r"[\W_]+".join(parts)
    end = r"\w*" if prefix else r"(?!\w)"
    return re.compile(rf"(?<!\w){body}{end}", re.IGNORECASE)


def term_context(paper: Paper, term: str, width: int = CONTEXT_CHARS) -> str:
    """Return the first place `term` occurs in the paper's title, abstract, AI summary or
    AI keywords, with up to `width` characters each side, cut at word boundaries:
    "… test-time scaling (TTS) improves …". "" when it cannot be found in the raw text
    (an author or organisation match, or a hit only after accent folding)."""
    pattern = _term_pattern(term)
    if pattern is None:
        return ""
    for text in (paper.title, paper.abstract, paper.ai_summary or "", ", ".join(paper.ai_keywords)):
        text = " ".join(text.split())
        m = pattern.search(text)
        if m is None:
            continue
        start, end = max(m.start() - width, 0), min(m.end() + width, len(text))
        if start > 0:
            space = text.find(" ", start, m.start())
            start = space + 1 if space >= 0 else start
        if end < len(text):
            space = text.rfind(" ", m.end(), end)
            end = space if space >= 0 else end
        return ("… " if start > 0 else "") + text[start:end] + (" …" if end < len(text) else "")
    return ""


# -- what a topic's filters removed (`digest topics test`) ---------------------------


@dataclass(frozen=True)
class Removed:
    """A paper the topic's terms took but a filter removed, and which filter."""

    paper: Paper
    terms: tuple[str, ...]  # the terms that hit
    filter: str  # "exclude", "has_code", "min_upvotes" or "min_stars"
    detail: str  # e.g. "exclude 'attack success rate': … the attack success rate (ASR) …"


def explain_topic(
    topic: TopicConfig, papers: Iterable[Paper]
) -> tuple[list[tuple[Paper, TopicMatch]], list[Removed]]:
    """Return (the papers `topic` takes with their match, those its terms took but a
    filter removed, with the first filter that did, in the order exclude, has_code,
    min_upvotes, min_stars).

    Raises ConfigError for a term with no letters or digits.
    """
    loose = TopicConfig(
        name=topic.name,
        keywords=topic.keywords,
        phrases=topic.phrases,
        fields=topic.fields,
        authors=topic.authors,
        organizations=topic.organizations,
    )
    terms_only = Matcher([loose])
    exclusions = [
        (text, Matcher([TopicConfig(name=topic.name, keywords=[text], fields=topic.fields)]))
        for text in topic.exclude
    ]
    taken: list[tuple[Paper, TopicMatch]] = []
    removed: list[Removed] = []
    for paper in papers:
        hit = terms_only.match(paper)
        if not hit:
            continue
        terms = hit[0].terms
        why = _filtered_by(topic, paper, exclusions)
        if why is None:
            taken.append((paper, hit[0]))
        else:
            removed.append(Removed(paper, terms, *why))
    return taken, removed


def _filtered_by(
    topic: TopicConfig, paper: Paper, exclusions: Sequence[tuple[str, Matcher]]
) -> tuple[str, str] | None:
    for text, matcher in exclusions:
        if matcher.match(paper):
            context = term_context(paper, text)
            return "exclude", f"exclude {text!r}" + (f": {context}" if context else "")
    if topic.has_code and not paper.github_repo:
        return "has_code", "has_code: no GitHub repository"
    if paper.upvotes < topic.min_upvotes:
        return "min_upvotes", f"min_upvotes {topic.min_upvotes}: {paper.upvotes} upvotes"
    if (paper.github_stars or 0) < topic.min_stars:
        return "min_stars", f"min_stars {topic.min_stars}: {paper.github_stars or 0} stars"
    return None
