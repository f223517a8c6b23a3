"""What a reader types into a search box -> an FTS5 MATCH expression that cannot fail.

FTS5 has its own syntax (AND / OR / NOT / NEAR( ... ), column filters, `^`, `*`, quotes):
typed as is, `NEAR(` or a lone `"` is a syntax error, and `title:` a column filter. So
every word is quoted (each one a phrase FTS5 tokenizes itself), a trailing `*` stays a
prefix search, and "double quotes" keep a phrase; nothing else is syntax. Words are ANDed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_QUERY = 300  # characters: longer is refused (a search box, not a document)
MAX_TERMS = 12  # words and phrases: each one is a pass over the index
_PIECE = re.compile(r'"([^"]*)"?|(\S+)')


@dataclass(frozen=True)
class Query:
    """A checked search: the MATCH text, and the terms as the reader wrote them."""

    match: str
    terms: tuple[str, ...]


class BadQuery(ValueError):
    """A search that cannot be run, and why, in words for the reader."""


def parse_query(text: str) -> Query:
    """Return the FTS5 form of `text`; raise BadQuery saying what is wrong with it."""
    text = text.strip()
    if not text:
        raise BadQuery("Type a word to search for.")
    if len(text) > MAX_QUERY:
        raise BadQuery(
            f"The search is {len(text)} characters long; the most is {MAX_QUERY}. "
            "A few words find more."
        )
    parts: list[str] = []
    terms: list[str] = []
    for m in _PIECE.finditer(text):
        phrase, word = m.group(1), m.group(2)
        raw = phrase if phrase is not None else word
        prefix = word is not None and word.endswith("*")
        core = raw.rstrip("*") if prefix else raw
        if not any(ch.isalnum() for ch in core):
            continue  # punctuation alone: nothing the index holds
        parts.append('"' + core.replace('"', '""') + '"' + ("*" if prefix else ""))
        terms.append(raw)
    if not parts:
        raise BadQuery(f"{text[:60]!r} has no letters or digits to search for.")
    if len(parts) > MAX_TERMS:
        raise BadQuery(f"The search has {len(parts)} words; the most is {MAX_TERMS}.")
    return Query(" ".join(parts), tuple(terms))


def match_or_nothing(text: str) -> str:
    """The MATCH text of `text`, or one that matches nothing (the CLI's `--search`: a
    query with no words lists no papers rather than failing)."""
    try:
        return parse_query(text).match
    except BadQuery:
        return '""'
