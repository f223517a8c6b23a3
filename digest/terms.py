"""Terms as written in a topic or typed in a form: their normalised words, and why a term
cannot be matched as meant. Used by topics (matching) and config (checking the file)."""

from __future__ import annotations

import re
import unicodedata

# Han (with extensions and compatibility forms), hiragana, katakana: one token per char.
_CJK = "\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"


def _mark_class() -> str:
    """A regex class body of the BMP's combining marks, which `\\w` leaves out."""
    ranges: list[list[int]] = []
    for c in range(0x10000):
        if unicodedata.category(chr(c)) in ("Mn", "Mc", "Me"):
            if ranges and ranges[-1][1] == c - 1:
                ranges[-1][1] = c
            else:
                ranges.append([c, c])
    return "".join(
        re.escape(chr(a)) + ("-" + re.escape(chr(b)) if b > a else "") for a, b in ranges
    )


_TOKEN_RE = re.compile(rf"[{_CJK}]|[^\W_{_CJK}](?:[^\W_{_CJK}]|[{_mark_class()}])*")
_ASCII_TOKEN_RE = re.compile(r"[a-z0-9]+")
_ACCENT_RE = re.compile("[\u0300-\u036f]")  # combining diacriticals of Latin/Greek/Cyrillic


def words(text: str) -> list[str]:
    """Return the normalised words of `text`: case-folded, NFKC, Latin accents dropped."""
    if text.isascii():
        return _ASCII_TOKEN_RE.findall(text.lower())
    t = unicodedata.normalize("NFKD", text.casefold())
    t = unicodedata.normalize("NFC", _ACCENT_RE.sub("", t))
    return _TOKEN_RE.findall(t)


def term_problem(text: str) -> str | None:
    """Return why a term as written cannot be matched as meant, or None when it can.

    Matching is on words, so symbols drop out: "C++" or "C#" would match any lone
    letter "c" ("Appendix C"). Such a term is refused rather than quietly widened.
    """
    tokens, _ = term_words(text)
    if not tokens:
        return f"term {text!r} has no letters or digits"
    raw = text.strip().rstrip("*")
    # "+" and "#" (C++, C#, F#) and other symbol characters, not punctuation between words.
    dropped = {c for c in raw if c in "+#" or unicodedata.category(c).startswith("S")}
    if dropped and all(len(t) == 1 for t in tokens):
        return (
            f"term {text!r} would match only {' '.join(tokens)!r}: symbols such as "
            f"{''.join(sorted(dropped))!r} are not matched (write the name out, e.g. "
            '"c plus plus", or drop the term)'
        )
    return None


def term_words(text: str) -> tuple[tuple[str, ...], bool]:
    """Return (words, is_prefix) of a term as written: `agent*` -> (("agent",), True)."""
    raw = text.strip()
    prefix = raw.endswith("*")
    return tuple(words(raw.rstrip("*"))), prefix
