"""Benchmark: storing a day into an archive of 50,000 papers vs into an empty store.

Run: .venv/bin/python bench/store.py [--archive 50000] [--repeats 25]

The differ's cost must grow with the day's papers, not with the archive: storing a day
into a store that holds 50,000 papers must cost within 1.5x of storing it into an empty
one. The archive is 50,000 clones of the real papers in ../shared/fixtures/real (the
page capture and every API capture; abstracts, authors, keywords as captured) under
synthetic ids "9{n:04d}.{m:05d}", loaded with Store.store_listing in 1,000-paper runs
(so papers, FTS index, upvote snapshots and runs all hold the archive) into a temp
SQLite file; WAL checkpointed before timing.

The day is a real one (api-daily_papers-2024-06-13, 21 papers). Each repeat stores it
under fresh synthetic ids, so every repeat is a real first sighting and both stores grow
by the same papers; repeats alternate between the two stores so background load hits
both alike. Two variants:
  all new      the 21 papers are unseen;
  half known   10 of them were stored by an earlier (untimed) run and come back with
               more upvotes, so the differ refreshes them; 11 are new.
Timed: Store.store_listing only (one transaction, committed). Median over the repeats.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

from digest.models import Listing, Paper
from digest.source.parse import parse_api, parse_page
from digest.store import Store

ROOT = Path(__file__).resolve().parent.parent
REAL = ROOT.parent / "shared" / "fixtures" / "real"
PAGE = REAL / "page-daily-2024-08-01.html"
DAY = REAL / "api-daily_papers-2024-06-13.reserialised.json"
TARGET_RATIO = 1.5
BATCH = 1000


def real_papers() -> list[Paper]:
    """Every distinct real paper in the captures (page first, then the API files)."""
    listings = [parse_page(PAGE.read_bytes(), "https://huggingface.co/papers/date/2024-08-01")]
    for path in sorted(REAL.glob("api-*.json")):
        listings.append(parse_api(path.read_bytes(), str(path)))
    seen: dict[str, Paper] = {}
    for listing in listings:
        for p in listing.papers:
            seen.setdefault(p.id, p)
    return list(seen.values())


def preload(store: Store, pool: list[Paper], count: int) -> float:
    """Fill `store` with `count` clones of `pool` in runs of BATCH; returns seconds taken."""
    t0 = time.perf_counter()
    start = date(2020, 1, 1)
    for b, first in enumerate(range(0, count, BATCH)):
        day = start + timedelta(days=b)
        papers = tuple(
            replace(pool[k % len(pool)], id=f"9{k // 1000:04d}.{k % 1000:05d}", daily_date=day)
            for k in range(first, min(first + BATCH, count))
        )
        store.store_listing(
            Listing(papers=papers, url=f"bench://archive/{day}", source="api", list_date=day)
        )
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return time.perf_counter() - t0


def day_listing(day: tuple[Paper, ...], prefix: str, rep: int, known: int) -> Listing:
    """The real day under fresh ids for repeat `rep`; the first `known` keep an old-run id."""
    papers = tuple(
        replace(p, id=f"{'7' if i < known else prefix}{rep:04d}.{i:05d}") for i, p in enumerate(day)
    )
    return Listing(papers=papers, url=f"bench://day/{prefix}{rep}", source="api")


def earlier_run(listing: Listing, known: int) -> Listing:
    """The known part of the day as an earlier run saw it: fewer upvotes."""
    papers = tuple(replace(p, upvotes=max(0, p.upvotes - 5)) for p in listing.papers[:known])
    return Listing(papers=papers, url=listing.url + "/earlier", source="api")


def time_day(
    stores: dict[str, Store], day: tuple[Paper, ...], repeats: int, known: int, prefix: str
) -> dict[str, float]:
    """Median ms of store_listing(day) into each store, repeats interleaved."""
    times: dict[str, list[float]] = {name: [] for name in stores}
    names = list(stores)
    for rep in range(repeats):
        order = names if rep % 2 == 0 else names[::-1]
        for name in order:
            store = stores[name]
            listing = day_listing(day, prefix, rep, known)
            if known:
                store.store_listing(earlier_run(listing, known))
            t0 = time.perf_counter()
            result = store.store_listing(listing)
            times[name].append(time.perf_counter() - t0)
            if result.new != len(day) - known or result.seen != len(day):
                raise SystemExit(f"{name}: unexpected run {result.summary()}")
    return {name: statistics.median(t) * 1000 for name, t in times.items()}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--archive", type=int, default=50_000)
    ap.add_argument("--repeats", type=int, default=50)
    args = ap.parse_args()

    pool = real_papers()
    day = parse_api(DAY.read_bytes(), str(DAY)).papers
    with tempfile.TemporaryDirectory() as tmp:
        empty = Store.open(Path(tmp) / "empty.db")
        archive = Store.open(Path(tmp) / "archive.db")
        load_s = preload(archive, pool, args.archive)
        size_mb = (Path(tmp) / "archive.db").stat().st_size / 1e6
        papers_in_archive = archive.count_papers()
        stores = {"empty": empty, "archive": archive}
        all_new = time_day(stores, day, args.repeats, known=0, prefix="8")
        half = time_day(stores, day, args.repeats, known=len(day) // 2, prefix="6")
        empty.close()
        archive.close()

    print("bench/store.py: Store.store_listing of a real day, empty store vs 50k archive")
    print(f"  day                      {DAY.name}: {len(day)} papers")
    print(
        f"  archive                  {papers_in_archive:,} papers (clones of {len(pool)} "
        f"real ones), {size_mb:.0f} MB, preload {load_s:.1f} s"
    )
    worst = 0.0
    for label, figures in (("all new", all_new), (f"half known ({len(day) // 2})", half)):
        ratio = figures["archive"] / figures["empty"]
        worst = max(worst, ratio)
        print(
            f"  {label:<22}   empty {figures['empty']:6.2f} ms   archive "
            f"{figures['archive']:6.2f} ms   ratio {ratio:4.2f}  (median of {args.repeats})"
        )
    verdict = "met" if worst <= TARGET_RATIO else "NOT MET"
    print(f"  target ratio <= {TARGET_RATIO}: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
