"""Capture folders: tests/data/<capture>/ holds the input and what the parser must make of it.

A folder has `source.txt` (the name of a real capture in ../shared/fixtures/real, which must
not be copied or edited) or an `input.html` / `input.json` built for the test (with a NOTE
saying what is RECONSTRUCTED), and `expected.json`: the papers the real parser gives.

To add a capture, make its folder and write its expected.json once, by hand, then check it
by eye against the capture:

    python -m tests.support.captures api-daily_papers-2026-08-21.reserialised.json
"""

from __future__ import annotations

import re
import sys
from dataclasses import asdict
from datetime import date, datetime
from pathlib import Path
from typing import Any

from digest.models import Listing, Paper
from digest.source.parse import parse_api, parse_page
from tests.support.paths import DATA, REAL

ABSTRACT_SHOWN = 80  # characters of each abstract kept in expected.json, with its length
AUTHORS_SHOWN = 3  # authors kept, with their count (a paper can have hundreds)


def folders() -> list[Path]:
    """Every capture folder, sorted by name."""
    return sorted(p for p in DATA.iterdir() if (p / "expected.json").exists())


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
    """Make tests/data/<name>/ (source.txt naming the real capture) and write expected.json."""
    import json

    for name in names:
        folder = DATA / Path(name).name.removesuffix(".json").removesuffix(".html")
        folder.mkdir(parents=True, exist_ok=True)
        if not any(folder.glob("input.*")):
            (folder / "source.txt").write_text(Path(name).name + "\n", encoding="utf-8")
        expected = summary(parse_capture(input_of(folder)))
        text = json.dumps(expected, ensure_ascii=False, indent=2) + "\n"
        (folder / "expected.json").write_text(text, encoding="utf-8")
        print(f"{folder.relative_to(DATA.parent.parent)}: {expected['count']} papers")


if __name__ == "__main__":
    main(sys.argv[1:])
