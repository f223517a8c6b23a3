"""Benchmark: `write_feeds` on 200 real papers, against an older version in the same process.

Run: .venv/bin/python bench/feeds.py [--repeats 15] [--baseline-commit 59a79cf]
                                     [--papers newest|most-authors]

The store is filled from every real API capture in ../shared/fixtures/real (about 625
distinct papers, up to 533 authors on one). `--papers newest` (the default) leaves it
whole, and the feeds keep the newest 200 (`max_items`); `most-authors` keeps only the 200
papers with the most authors (4,203 names, the 533-author paper among them), the
worst case for per-author work. Three topic feeds, as a real configuration would have.
Each timed call rewrites every file into a fresh folder, so the whole render is timed,
not the "unchanged" shortcut.

The baseline is `digest/render/feed.py` as it was at `--baseline-commit` (read with
`git show`, loaded as a separate module), run alternately with today's on the same store:
the ratio is measured in one process, on the same machine load. Each timed call starts
after a full garbage collection with the collector paused, as `timeit` does.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from digest import jobs
from digest.config import Config, FeedsConfig, TopicConfig
from digest.jobs import ingest_file
from digest.models import Listing
from digest.store import Store

ROOT = Path(__file__).resolve().parent.parent
REAL = ROOT.parent / "shared" / "fixtures" / "real"
TOPICS = [
    TopicConfig(name="agents", title="LLM agents", keywords=["agent*", "tool use"]),
    TopicConfig(name="vision", keywords=["image*", "video*", "vision"], exclude=["survey"]),
    TopicConfig(name="reasoning", keywords=["reason*", "math*"]),
]


def load_baseline(commit: str) -> ModuleType | None:
    """Today's feed module as it was at `commit`, or None (with a note) when it cannot load."""
    try:
        source = subprocess.run(
            ["git", "show", f"{commit}:digest/render/feed.py"],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"note: no baseline ({commit}: {e})")
        return None
    path = Path(tempfile.mkdtemp()) / "feed_baseline.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("feed_baseline", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # an old version may import names that have moved since
        print(f"note: the baseline at {commit} does not load today: {e}")
        return None
    return module


def time_once(write: Callable[[Config, Store], Any], config: Config, store: Store) -> float:
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        write(config, store)
        return time.perf_counter() - start
    finally:
        gc.enable()


def time_author_calls(names: list[list[str]]) -> tuple[float, float]:
    """Seconds for feedgen's entry.author(): one call per name, then one call per paper."""
    from feedgen.feed import FeedGenerator

    def per_name() -> None:
        fg = FeedGenerator()
        for paper in names:
            fe = fg.add_entry()
            for name in paper:
                fe.author(name=name)

    def per_paper() -> None:
        fg = FeedGenerator()
        for paper in names:
            fg.add_entry().author([{"name": name} for name in paper])

    return time_once(lambda *_: per_name(), *_NO_ARGS), time_once(lambda *_: per_paper(), *_NO_ARGS)


_NO_ARGS: tuple[Any, Any] = (None, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--baseline-commit", default="59a79cf")
    parser.add_argument("--papers", choices=["newest", "most-authors"], default="newest")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        store = Store.open(tmp / "bench.db")
        for capture in sorted(REAL.glob("api-daily_papers-*.json")):
            ingest_file(store, capture)
        if args.papers == "most-authors":
            papers = sorted(store.papers(), key=lambda sp: -len(sp.paper.authors))[:200]
            store.close()
            store = Store.open(tmp / "most-authors.db")
            listing = Listing(papers=tuple(sp.paper for sp in papers), url="bench", source="file")
            store.store_listing(listing)

        def config(run: str) -> Config:
            folder = tmp / run
            return Config(feeds=FeedsConfig(dir=str(folder), max_items=200), topics=TOPICS)

        report = jobs.write_feeds(config("check"), store)
        shown = store.papers_in_window(7)[:200]
        authors = sum(len(sp.paper.authors) for sp in shown)
        print(
            f"store: {store.count_papers()} papers; all.xml {report.items['all']} items, "
            f"{authors} authors (most on one paper: "
            f"{max(len(sp.paper.authors) for sp in shown)}); feeds {report.items}"
        )
        names = [list(sp.paper.authors) for sp in shown]
        baseline = load_baseline(args.baseline_commit)
        ours: list[float] = []
        old: list[float] = []
        calls: list[tuple[float, float]] = []
        for i in range(args.repeats):
            calls.append(time_author_calls(names))
            ours.append(time_once(jobs.write_feeds, config(f"ours{i}"), store))
            if baseline is not None:
                old.append(time_once(baseline.write_feeds, config(f"old{i}"), store))
        store.close()

    per_name = statistics.median(c[0] for c in calls) * 1000
    per_paper = statistics.median(c[1] for c in calls) * 1000
    print(
        f"feedgen author() for these {len(names)} papers: one call per name {per_name:.1f} ms, "
        f"one call per paper {per_paper:.1f} ms ({per_name / per_paper:.1f}x)"
    )
    ours_ms = statistics.median(ours) * 1000
    print(f"write_feeds today: median {ours_ms:.1f} ms over {args.repeats} calls")
    if old:
        old_ms = statistics.median(old) * 1000
        print(
            f"write_feeds at {args.baseline_commit}: median {old_ms:.1f} ms; "
            f"ratio {old_ms / ours_ms:.2f}x"
        )


if __name__ == "__main__":
    main()
