"""Pages and items built from the real captures (say RECONSTRUCTED where a page is built).

Values are read here from the raw JSON (json.load, or the page's data-props pulled out with
a regex and html.unescape, not with the parser's selectolax) so tests and the code under
test do not share a path.
"""

from __future__ import annotations

import copy
import html
import json
import re
from pathlib import Path
from typing import Any

from tests.support.paths import PAGE_2024_08_01, REAL

PAGE_URL = "https://huggingface.co/papers?date=2024-08-01"
_PROPS_RE = re.compile(r'(data-target="DailyPapers" data-props=")([^"]*)(")')
_ARTICLE_RE = re.compile(r"<article\b.*?</article>", re.S)


def page_props(path: Path = PAGE_2024_08_01) -> dict[str, Any]:
    """The real page's data-props, read with a regex and html.unescape (not selectolax)."""
    m = _PROPS_RE.search(path.read_text(encoding="utf-8"))
    assert m, f"{path} has no DailyPapers data-props"
    props: dict[str, Any] = json.loads(html.unescape(m.group(2)))
    return props


def raw_items(path: Path) -> list[dict[str, Any]]:
    """The list items of a capture, straight from its JSON."""
    if path.suffix == ".html":
        return list(page_props(path)["dailyPapers"])
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data, list)
    return data


def a_real_item() -> dict[str, Any]:
    """A deep copy of a recent real API item (it has org, repo, keywords, daily date)."""
    items = raw_items(REAL / "api-daily_papers-2026-08-21.reserialised.json")
    return copy.deepcopy(items[0])


def with_props(page: str, props: dict[str, Any], *, ascii_only: bool = False) -> str:
    """RECONSTRUCTED: the page's HTML shell around other data-props.

    No trending or date page was captured (SOURCES.md, Notes); this is how we build one.
    With `ascii_only` json.dumps escapes non-ASCII, so a lone surrogate travels as \\ud83d,
    as it could in HF's own JSON.
    """
    attr = html.escape(json.dumps(props, ensure_ascii=ascii_only), quote=True)
    out, n = _PROPS_RE.subn(lambda m: m.group(1) + attr + m.group(3), page, count=1)
    assert n == 1, "the page has no DailyPapers data-props"
    return out


def wrap_in_page(props: dict[str, Any], shell: Path = PAGE_2024_08_01) -> bytes:
    """RECONSTRUCTED: the real page's shell (a file) around `props`, as bytes."""
    return with_props(shell.read_text(encoding="utf-8"), props).encode("utf-8")


def without_hydration(page: str) -> str:
    """The real page with its DailyPapers hydration div renamed away (a layout change)."""
    out, n = re.subn(
        r'data-target="DailyPapers" data-props="[^"]*"', 'data-target="SomethingElse"', page
    )
    assert n == 1, "the real page no longer has exactly one DailyPapers div"
    return out


def hydration_cut(shell: Path = PAGE_2024_08_01) -> bytes:
    """The real page with the DailyPapers hydration div cut out (its cards stay)."""
    text = shell.read_text(encoding="utf-8")
    start = text.index('<div class="SVELTE_HYDRATER contents" data-target="DailyPapers"')
    end = text.index(">", _PROPS_RE.search(text).end()) + 1  # type: ignore[union-attr]
    return (text[:start] + text[end:]).encode("utf-8")


def without_cards(page: str) -> str:
    """The page with its <article> paper cards cut out."""
    out, n = _ARTICLE_RE.subn("", page)
    assert n > 0, "the page has no <article> cards to remove"
    return out
