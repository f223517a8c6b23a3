"""Benchmark: parsing a real-sized Daily Papers page (80 papers) with parse_page.

Run: .venv/bin/python bench/parse.py [--papers 80] [--repeats 200] [--baseline-repeats 15]

The page is RECONSTRUCTED FROM REAL PARTS: the HTML shell of the only real page
capture (../shared/fixtures/real/page-daily-2024-08-01.html, 13 papers) with its
DailyPapers data-props replaced by N real list items (the page's own 13, then items
from the real API captures api-*.json, de-duplicated by paper id), serialised and
HTML-escaped the way the page does it (compact JSON, `&` and `"` as entities). The
<article> cards are replicated to match: card i is the real card i % 13 with its paper
id, title and upvote count swapped for item i's (avatars stay the template's).

Measured: digest.source.parse.parse_page, median over many repeats after warm-up.
Baseline, same process, same page: what most scrapers do, BeautifulSoup(html,
"html.parser") -> find the div by data-target -> data-props -> json.loads; the decoded
list then goes through the same digest.source.parse.parse_items, so only the HTML part
differs. Targets: ours >= 5x faster than the baseline and < 20 ms per page.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bs4 import BeautifulSoup
from selectolax.lexbor import LexborHTMLParser

from digest.models import Listing
from digest.source.parse import (
    HYDRATION_SELECTOR,
    _date_from_url,
    _parse_date,
    parse_items,
    parse_page,
    parse_page_cards,
)

ROOT = Path(__file__).resolve().parent.parent
REAL = ROOT.parent / "shared" / "fixtures" / "real"
PAGE = REAL / "page-daily-2024-08-01.html"
URL = "https://huggingface.co/papers/date/2024-08-01"
TARGET_RATIO = 5.0
TARGET_MS = 20.0

_PROPS_RE = re.compile(r'(data-target="DailyPapers" data-props=")([^"]*)(")')
_ID_RE = re.compile(r"\d{4}\.\d{4,5}")
_TITLE_RE = re.compile(r'(<h3[^>]*><a href="/papers/[^"]*"[^>]*>)(.*?)(</a></h3>)', re.S)
_VOTES_RE = re.compile(r'(<div class="leading-none">)([^<]*)(</div>)')


def escape_attr(text: str) -> str:
    """The page's attribute escaping (Svelte SSR): `&` then `"`; `'` and `<` stay literal."""
    return text.replace("&", "&amp;").replace('"', "&quot;")


def real_items(props: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """The page's own items, then API-capture items, no paper id twice, first n."""
    items: list[dict[str, Any]] = []
    seen: set[str] = set()
    sources = [props["dailyPapers"]] + [
        json.loads(p.read_text(encoding="utf-8")) for p in sorted(REAL.glob("api-*.json"))
    ]
    for source in sources:
        for item in source:
            pid = item["paper"]["id"]
            if pid not in seen:
                seen.add(pid)
                items.append(item)
            if len(items) == n:
                return items
    raise SystemExit(f"only {len(items)} distinct real papers in {REAL}, wanted {n}")


def build_page(n: int) -> str:
    """The real page's shell around n real items, with n matching <article> cards."""
    page = PAGE.read_text(encoding="utf-8")
    m = _PROPS_RE.search(page)
    if m is None:
        raise SystemExit(f"{PAGE}: no DailyPapers data-props")
    props = json.loads(html.unescape(m.group(2)))
    items = real_items(props, n)
    props["dailyPapers"] = items
    raw = json.dumps(props, separators=(",", ":"), ensure_ascii=False)
    page = page[: m.start(2)] + escape_attr(raw) + page[m.end(2) :]

    # Cards sit in the grid as <div><article>...</article></div>, separated by this.
    first = page.index("<article")
    last = page.rindex("</article>") + len("</article>")
    templates = re.findall(r"<article.*?</article>", page[first:last], re.S)
    sep = "\n\t\t\t\t</div>\n\t\t\t\t<div>"
    cards = []
    for i, item in enumerate(items):
        card = templates[i % len(templates)]
        old_id = _ID_RE.search(card)
        assert old_id is not None
        p = item["paper"]
        card = card.replace(old_id.group(0), p["id"])
        card = _swap(card, _TITLE_RE, html.escape(p["title"], quote=False))
        card = _swap(card, _VOTES_RE, str(p["upvotes"]))
        cards.append(card)
    return page[:first] + sep.join(cards) + page[last:]


def _swap(card: str, pattern: re.Pattern[str], value: str) -> str:
    """`card` with the middle group of pattern's first match replaced by `value`."""
    m = pattern.search(card)
    assert m is not None, pattern.pattern
    return card[: m.start(2)] + value + card[m.end(2) :]


def bs4_parse_page(body: bytes, url: str) -> Listing:
    """The usual scraper: BeautifulSoup html.parser, find the div, json.loads its props."""
    soup = BeautifulSoup(body.decode("utf-8"), "html.parser")
    div = soup.find("div", attrs={"data-target": "DailyPapers"})
    assert div is not None
    props = json.loads(div["data-props"])  # type: ignore[arg-type]
    list_date = _parse_date(props.get("dateString")) or _parse_date(props.get("date"))
    list_date = list_date or _date_from_url(url)
    return Listing(
        papers=parse_items(props["dailyPapers"], url, list_date),
        url=url,
        source="page",
        list_date=list_date,
        trending=bool(props.get("isTrending")),
    )


def median_ms(fn: Callable[[], object], repeats: int, warmup: int) -> float:
    """Median wall time of fn() in ms, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def breakdown(body: bytes, repeats: int) -> dict[str, float]:
    """Median ms of each step parse_page takes, to show where its time goes."""
    text = body.decode("utf-8")
    tree = LexborHTMLParser(text)
    node = tree.css_first(HYDRATION_SELECTOR)
    assert node is not None
    raw = node.attributes["data-props"]
    assert raw is not None
    props = json.loads(raw)
    items = props["dailyPapers"]
    return {
        "decode": median_ms(lambda: body.decode("utf-8"), repeats, 3),
        "html parse": median_ms(lambda: LexborHTMLParser(text), repeats, 3),
        "css_first": median_ms(lambda: tree.css_first(HYDRATION_SELECTOR), repeats, 3),
        "attribute": median_ms(lambda: node.attributes["data-props"], repeats, 3),
        "json.loads": median_ms(lambda: json.loads(raw), repeats, 3),
        "parse_items": median_ms(lambda: parse_items(items, URL, None), repeats, 3),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--papers", type=int, default=80)
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--baseline-repeats", type=int, default=15)
    args = ap.parse_args()

    body = build_page(args.papers).encode("utf-8")
    ours = parse_page(body, URL)
    base = bs4_parse_page(body, URL)
    cards = parse_page_cards(body, URL)
    # Same page, same papers: otherwise the comparison means nothing.
    if len(ours.papers) != args.papers or ours != base:
        raise SystemExit("parse_page and the BeautifulSoup baseline disagree on the page")
    if [p.id for p in cards.papers] != [p.id for p in ours.papers]:
        raise SystemExit("the <article> cards do not match the JSON")

    ours_ms = median_ms(lambda: parse_page(body, URL), args.repeats, 10)
    cards_ms = median_ms(lambda: parse_page_cards(body, URL), args.repeats // 4 or 1, 3)
    base_ms = median_ms(lambda: bs4_parse_page(body, URL), args.baseline_repeats, 2)
    steps = breakdown(body, args.repeats)
    ratio = base_ms / ours_ms

    print("bench/parse.py: parse_page on a page reconstructed from real parts")
    print(f"  (shell + cards of {PAGE.name}, items from the real API captures)")
    print(f"  papers                   {len(ours.papers)}")
    print(f"  page bytes               {len(body):,}")
    print(f"  parse_page (ours)        {ours_ms:8.2f} ms  median of {args.repeats}")
    print(f"  BeautifulSoup baseline   {base_ms:8.2f} ms  median of {args.baseline_repeats}")
    print(f"  ratio baseline/ours      {ratio:8.1f} x   target >= {TARGET_RATIO:.0f}x")
    print(f"  parse_page_cards (DOM)   {cards_ms:8.2f} ms  (fallback path, for reference)")
    print(
        "  where parse_page's time goes (ms): "
        + ", ".join(f"{k} {v:.2f}" for k, v in steps.items())
    )
    ok = ratio >= TARGET_RATIO and ours_ms < TARGET_MS
    print(f"  targets (>= {TARGET_RATIO:.0f}x, < {TARGET_MS:.0f} ms): {'met' if ok else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
