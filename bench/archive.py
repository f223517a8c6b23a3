"""Synthetic archives for the web benchmarks: N papers, 50 a day, cloned from the real ones.

Run: .venv/bin/python bench/archive.py --papers 200000 --out /tmp/archive-200k.db

How it is made: every distinct real paper of ../shared/fixtures/real (page and API
captures, about 630) is cloned in turn under a synthetic id `9NNNN.MMMMM`, 50 to a day,
days going back from yesterday (the newest day's papers first, so the newest days hold
the same papers at every size) (200,000 papers: about 11 years). Each day is stored by
the real `Store.store_listing` with the clock set to 07:00 UTC that day (time-machine),
so first_seen, the runs, the upvote snapshots and the FTS index are what a service
fetching once a day would hold; each day's papers become that day's edition (digest_day),
as a daily send would make them. The newest day is fetched twice, 12 hours apart, with
more upvotes the second time, so the rising list has something to show.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import time_machine

from digest.models import Listing, Paper
from digest.source.parse import parse_api, parse_page
from digest.store import Store

ROOT = Path(__file__).resolve().parent.parent
REAL = ROOT.parent / "shared" / "fixtures" / "real"
PAGE = REAL / "page-daily-2024-08-01.html"
PER_DAY = 50


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


def build(path: Path, count: int, *, end: date | None = None) -> Path:
    """Write an archive of `count` papers to `path` (kept if it is already there)."""
    if path.exists():
        return path
    pool = real_papers()
    end = end or (datetime.now(UTC).date() - timedelta(days=1))
    days = -(-count // PER_DAY)
    tmp = path.with_suffix(".partial")
    for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
        leftover.unlink(missing_ok=True)
    store = Store.open(tmp)
    try:
        for d in range(days):
            day = end - timedelta(days=days - 1 - d)
            first = d * PER_DAY
            # Content counts back from the newest day, so the newest days hold the same
            # papers at every size (a 30-day window is the same work in each archive).
            back = (days - 1 - d) * PER_DAY
            papers = tuple(
                replace(
                    pool[(back + k - first) % len(pool)],
                    id=f"9{k // 1000:04d}.{k % 1000:05d}",
                    daily_date=day,
                )
                for k in range(first, min(first + PER_DAY, count))
            )
            listing = Listing(papers, url=f"bench://archive/{day}", source="api", list_date=day)
            at = datetime(day.year, day.month, day.day, 7, tzinfo=UTC)
            with time_machine.travel(at, tick=False):
                store.store_listing(listing)
            if d == days - 1:  # the newest day again, later, with more votes: rising
                later = tuple(replace(p, upvotes=p.upvotes + 3 * i) for i, p in enumerate(papers))
                with time_machine.travel(at + timedelta(hours=12), tick=False):
                    store.store_listing(replace(listing, papers=later))
        store.db.execute("UPDATE papers SET digest_day = substr(first_seen, 1, 10)")
        store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        store.close()
    tmp.rename(path)
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--papers", type=int, default=200_000)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    t0 = time.perf_counter()
    build(args.out, args.papers)
    print(f"{args.out}: {args.papers:,} papers in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
