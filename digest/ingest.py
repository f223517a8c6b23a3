"""One ingest run (fetch -> parse -> store) and the backfill over past days."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from digest.config import Config
from digest.errors import DigestError, FetchError, PageFormatError
from digest.models import Listing, RunResult
from digest.source.fetch import Fetcher, make_client
from digest.source.listing import (
    api_params_for,
    fetch_api,
    fetch_listing,
    page_url_for_day,
    today_utc,
)
from digest.source.parse import parse_any, parse_page
from digest.store import Store, now_utc


def make_fetcher(config: Config) -> Fetcher:
    src = config.source
    return Fetcher(
        make_client(src.timeout, src.connect_timeout), retries=src.retries, max_bytes=src.max_bytes
    )


def empty_reason(list_date: date | None, today: date, trending: bool = False) -> str:
    """Why a well-formed list is empty, in words a subscriber understands."""
    if trending:
        return "the trending list is empty"
    if list_date is None or list_date >= today:
        return "today's list is not filled yet; a later run will catch its papers"
    if list_date.weekday() >= 5:
        return f"{list_date:%A} {list_date}: no papers on weekends"
    return f"{list_date}: the list is empty (a holiday?)"


def ingest(
    config: Config,
    store: Store,
    fetcher: Fetcher,
    *,
    url: str | None = None,
    today: date | None = None,
) -> RunResult:
    """Fetch the configured list (or `url`), store what is new, record the run.

    Returns the RunResult; a failure is recorded (status "failed", nothing stored)
    rather than raised, so callers always get one line to print.
    """
    today = today or today_utc()
    page_url = url or config.source.url
    started = now_utc()
    try:
        listing = fetch_listing(
            fetcher, page_url, config.source.api_url, config.source.prefer, today
        )
    except DigestError as e:
        source = config.source.prefer
        return store.record_failure(page_url, source, _describe(e), started=started)
    return store.store_listing(
        listing,
        started=started,
        reason_if_empty=empty_reason(listing.list_date, today, listing.trending),
    )


def ingest_file(
    store: Store, path: str | Path, *, today: date | None = None, list_date: date | None = None
) -> RunResult:
    """Store the papers of a saved page or API response (`digest fetch --from`).

    A file we cannot read is recorded as a failed run, like a broken page.
    """
    path = Path(path)
    started = now_utc()
    try:
        body = path.read_bytes()
    except OSError as e:
        raise DigestError(f"{path}: cannot read: {e.strerror}") from None
    try:
        listing = parse_any(body, str(path))
    except PageFormatError as e:
        return store.record_failure(str(path), "file", _describe(e), started=started)
    listing = dataclasses.replace(
        listing, source=f"file:{listing.source}", list_date=listing.list_date or list_date
    )
    return store.store_listing(
        listing,
        started=started,
        reason_if_empty=empty_reason(listing.list_date, today or today_utc(), listing.trending),
    )


@dataclass
class BackfillResult:
    days: int
    skipped: int
    runs: list[RunResult]

    @property
    def failed(self) -> list[RunResult]:
        return [r for r in self.runs if r.status == "failed"]

    def summary(self) -> str:
        seen = sum(r.seen for r in self.runs)
        new = sum(r.new for r in self.runs)
        empty = sum(1 for r in self.runs if r.status == "empty")
        line = (
            f"backfill: {self.days} days, {self.skipped} already stored and skipped, "
            f"{len(self.runs)} fetched ({empty} empty, {len(self.failed)} failed): "
            f"seen {seen}, new {new}"
        )
        if self.failed:
            line += "; failed: " + ", ".join(str(r.list_date) for r in self.failed if r.list_date)
        left_out = sum(len(r.left_out) for r in self.runs)
        if left_out:
            line += f"; {left_out} papers left out (see each run's left_out)"
        return line


def backfill(
    config: Config,
    store: Store,
    fetcher: Fetcher,
    since: date,
    until: date | None = None,
    *,
    today: date | None = None,
    concurrency: int | None = None,
    source: str | None = None,
    progress: Callable[[date, RunResult], None] | None = None,
) -> BackfillResult:
    """Fetch each day from `since` to `until` (default today) not already stored.

    At most `concurrency` requests are in flight; the store is written from this thread
    only, one transaction per day, so an interrupted backfill resumes where it stopped.
    """
    today = today or today_utc()
    until = min(until or today, today)
    if since > until:
        raise DigestError(f"--since {since} is after --until {until}")
    source = source or config.backfill.source
    workers = concurrency or config.backfill.concurrency
    days = [since + timedelta(days=n) for n in range((until - since).days + 1)]
    done = store.days_done(today)
    todo = [d for d in days if d not in done]
    base = config.source.url
    base = base if not base.rstrip("/").endswith("/trending") else "https://huggingface.co/papers"
    base = base.split("/papers")[0] + "/papers"
    lock = threading.Lock()

    def fetch_day(day: date) -> Listing:
        if source == "api":
            params, paged = api_params_for(page_url_for_day(day, base), today)
            return fetch_api(fetcher, config.source.api_url, params, paged, day)
        body, final = fetcher.get(page_url_for_day(day, base))
        return parse_page(body, final)

    runs: list[RunResult] = []
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        futures = {pool.submit(fetch_day, d): d for d in todo}
        for future in as_completed(futures):
            day = futures[future]
            started = now_utc()
            with lock:
                try:
                    listing = future.result()
                except DigestError as e:
                    url = page_url_for_day(day, base)
                    result = store.record_failure(
                        url, source, _describe(e), started=started, list_date=day
                    )
                else:
                    listing = dataclasses.replace(listing, list_date=listing.list_date or day)
                    # A past day's papers are archive, not news: no email, no feed item.
                    result = store.store_listing(
                        listing,
                        started=started,
                        reason_if_empty=empty_reason(day, today),
                        backfilled=day < today,
                    )
                runs.append(result)
                if progress:
                    progress(day, result)
    except BaseException:
        # Ctrl-C or a failing callback: drop the days not started, or the pool would
        # fetch every one of them (storing none) before letting the error through.
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return BackfillResult(days=len(days), skipped=len(days) - len(todo), runs=runs)


def _describe(error: DigestError) -> str:
    kind = {PageFormatError: "layout", FetchError: "network"}.get(type(error), "error")
    return f"{kind}: {error}"
