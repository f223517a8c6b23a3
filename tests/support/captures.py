"""Capture folders: tests/data/<capture>/ holds the input and what the parser must make of it.

A folder has one input and `expected.json` (the papers the real parser gives). The input is
`source.txt`, the name of a real capture in ../shared/fixtures/real (which must not be
copied or edited), or `build.json`, a page RECONSTRUCTED from real parts without copying
them: {"note": why, "shell": a real page, "items": a real API capture, "props": more
data-props, "url": where such a page is}, or a small `input.html` / `input.json`.

To add a capture, make its folder and write its expected.json once, by hand, then check it
by eye against the capture:

    python -m tests.support.captures api-daily_papers-2026-08-21.reserialised.json
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import asdict
from datetime import date, datetime
from pathlib import Path
from typing import Any

from digest.models import Listing, Paper
from digest.source.parse import parse_api, parse_page
from tests.support.pages import with_props
from tests.support.paths import DATA, REAL

ABSTRACT_SHOWN = 80  # characters of each abstract kept in expected.json, with its length
AUTHORS_SHOWN = 3  # authors kept, with their count (a paper can have hundreds)


def folders() -> list[Path]:
    """Every capture folder, sorted by name."""
    return sorted(p for p in DATA.iterdir() if (p / "expected.json").exists())


def parse_folder(folder: Path) -> Listing:
    """A folder's input through the real parser."""
    recipe = folder / "build.json"
    if not recipe.exists():
        return parse_capture(input_of(folder))
    build = json.loads(recipe.read_text(encoding="utf-8"))
    items = json.loads((REAL / build["items"]).read_text(encoding="utf-8"))
    shell = (REAL / build["shell"]).read_text(encoding="utf-8")
    page = with_props(shell, {"dailyPapers": items, **build.get("props", {})})
    return parse_page(page.encode("utf-8"), build["url"])


def input_of(folder: Path) -> Path:
    """The file a folder's test parses: the real capture it names, or its own input."""
    source = folder / "source.txt"
    if source.exists():
        return REAL / source.read_text(encoding="utf-8").strip()
    (built,) = [p for p in folder.glob("input.*")]
    return built


def capture_url(path: Path) -> str:
    """The address a capture was fetched from, told by its name (the API's has the date)."""
    day = re.search(r"\d{4}-\d{2}-\d{2}", path.name)
    if path.suffix == ".html":
        return f"https://huggingface.co/papers?date={day.group(0)}" if day else "page"
    assert day, f"{path.name}: an API capture is named by its date"
    return f"https://huggingface.co/api/daily_papers?date={day.group(0)}"


def parse_capture(path: Path) -> Listing:
    """The capture through the real parser: a page (.html) or an API answer."""
    if path.suffix == ".html":
        return parse_page(path.read_bytes(), capture_url(path))
    return parse_api(path.read_bytes(), capture_url(path))


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def paper_summary(paper: Paper) -> dict[str, Any]:
    """Every field of a paper; the abstract and the authors shortened, with their lengths."""
    fields = {k: _plain(v) for k, v in asdict(paper).items()}
    abstract, authors = fields.pop("abstract"), fields.pop("authors")
    return fields | {
        "abstract_start": abstract[:ABSTRACT_SHOWN],
        "abstract_chars": len(abstract),
        "authors_first": authors[:AUTHORS_SHOWN],
        "authors_count": len(authors),
    }


def summary(listing: Listing) -> dict[str, Any]:
    """What expected.json records of a listing: the list, every id, first and last paper."""
    papers = listing.papers
    return {
        "source": listing.source,
        "url": listing.url,
        "list_date": _plain(listing.list_date),
        "trending": listing.trending,
        "count": len(papers),
        "ids": [p.id for p in papers],
        "first": paper_summary(papers[0]) if papers else None,
        "last": paper_summary(papers[-1]) if papers else None,
    }


def main(names: list[str]) -> None:
    """For each NAME: a real capture's file name (makes tests/data/<stem>/source.txt) or an
    existing folder of tests/data; write its expected.json."""
    for name in names:
        folder = DATA / Path(name).name.removesuffix(".json").removesuffix(".html")
        folder.mkdir(parents=True, exist_ok=True)
        if (REAL / name).exists() and not any(folder.glob("input.*")):
            (folder / "source.txt").write_text(Path(name).name + "\n", encoding="utf-8")
        expected = summary(parse_folder(folder))
        text = json.dumps(expected, ensure_ascii=False, indent=2) + "\n"
        (folder / "expected.json").write_text(text, encoding="utf-8")
        print(f"{folder.relative_to(DATA.parent.parent)}: {expected['count']} papers")


if __name__ == "__main__":
    main(sys.argv[1:])
