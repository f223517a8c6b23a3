"""Every capture folder in tests/data/ through the real parser, one parametrised test.

A folder is `source.txt` (naming a real capture in ../shared/fixtures/real) or a page built
from real parts (`build.json`), and `expected.json` (written once by
`python -m tests.support.captures NAME`, checked by eye). A new capture is a new folder,
not new code.

Beside expected.json, each paper is checked against the capture's raw JSON (json.load, or
the page's data-props read with a regex and html.unescape, not with the parser's selectolax)
so the test and the code under test do not share a path. The only hard-coded figures are
the paper counts that ../shared/fixtures/real/SOURCES.md records.
"""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path

import pytest

from tests.support.captures import folders, input_of, parse_folder, summary
from tests.support.pages import raw_items
from tests.support.paths import DATA, PAGE_2024_08_01, REAL, real_api_captures

_SPACE = re.compile(r"\s+")


def collapse(text: str) -> str:
    return _SPACE.sub(" ", text).strip()


def sources_md_counts() -> dict[str, int]:
    """File name -> paper count, as SOURCES.md records it."""
    counts: dict[str, int] = {}
    for line in (REAL / "SOURCES.md").read_text(encoding="utf-8").splitlines():
        m = re.match(r"- `([^`]+)` — .*?(\d+) papers", line)
        if m:
            counts[m.group(1)] = int(m.group(2))
    return counts


# Folders of tests/data that are not captures: the relevance labelled set (judged papers
# for bench/relevance.py and tests/test_relevance.py) and the BibTeX libraries of
# tests/test_bibtex.py (each folder's README.md says how it was made).
NOT_CAPTURES = {"relevance", "bibtex"}


def test_every_real_capture_has_a_folder() -> None:
    # 40 API captures and one page, per SOURCES.md; a folder list that found none would
    # pass the parametrised test below vacuously.
    named = {
        (f / "source.txt").read_text(encoding="utf-8").strip()
        for f in folders()
        if (f / "source.txt").exists()
    }
    real = {p.name for p in [*real_api_captures(), PAGE_2024_08_01]}
    assert named == real
    assert real == {n for n in sources_md_counts() if not n.startswith("feed-")}
    assert len(named) >= 41
    # A folder without expected.json would be skipped silently: there is none, except the
    # data sets that are not parser captures, named here.
    others = {f.name for f in DATA.iterdir() if f.is_dir()} - {f.name for f in folders()}
    assert others == NOT_CAPTURES


@pytest.mark.parametrize("folder", folders(), ids=lambda f: f.name)
def test_capture(folder: Path) -> None:
    listing = parse_folder(folder)
    expected = json.loads((folder / "expected.json").read_text(encoding="utf-8"))
    assert summary(listing) == expected
    if not (folder / "source.txt").exists():
        return  # a built page: expected.json is all it is checked against

    path = input_of(folder)
    assert len(listing.papers) == sources_md_counts()[path.name]
    items = raw_items(path)
    assert [p.id for p in listing.papers] == [i["paper"]["id"] for i in items]
    assert listing.source == ("page" if path.suffix == ".html" else "api")
    day = date.fromisoformat(re.search(r"\d{4}-\d{2}-\d{2}", path.name).group(0))  # type: ignore[union-attr]
    assert listing.list_date == day
    assert listing.trending is False

    for paper, item in zip(listing.papers, items, strict=True):
        raw = item["paper"]
        # Whitespace normalised (arXiv titles wrap with "\n  "), nothing else touched.
        assert paper.title == collapse(raw["title"])
        assert "\n" not in paper.title and "  " not in paper.title
        # Never truncated: every character of the abstract but collapsed whitespace.
        assert len(paper.abstract) == len(collapse(raw.get("summary") or item.get("summary", "")))
        assert paper.abstract == collapse(raw.get("summary", ""))
        assert paper.authors == tuple(
            collapse(a["name"]) for a in raw.get("authors", []) if not a.get("hidden")
        )
        if raw.get("submittedOnDailyAt"):
            assert paper.daily_date == date.fromisoformat(raw["submittedOnDailyAt"][:10])
        else:
            assert paper.daily_date == day
        assert paper.upvotes == raw.get("upvotes", 0)
        assert paper.comments == item.get("numComments", 0)
        assert paper.github_repo == (raw.get("githubRepo") or None)
        assert paper.github_stars == raw.get("githubStars")
        assert paper.ai_keywords == tuple(raw.get("ai_keywords") or ())
        assert paper.withdrawn is bool(raw.get("withdrawnAt"))
        # Late-2025 captures name the organisation as the item's submitterOrganization.
        org = (
            item.get("organization") or raw.get("organization") or item.get("submitterOrganization")
        )
        assert paper.organization == (collapse(org["fullname"]) if org else None)
        assert paper.published_at is not None
        assert paper.published_at.date().isoformat() == raw["publishedAt"][:10]
