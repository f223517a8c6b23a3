"""The jobs a user runs or the scheduler fires: each one a library call, used by the CLI too.

fetch_job: fetch + store + feeds. send_job: the day's emails, held back while the list
cannot be read. run_job: both, in that order (`digest run`). Each returns a report whose
`summary()` is the one line the command ends with.

The jobs that send (send_job, run_job, resend) take the run lock themselves (`digest.lock`,
an flock next to the database), so any caller, the CLI, the scheduler or a Python script,
gets a send exactly once; busy: LockBusy. The scheduler, which waits for the lock, passes
the one it holds as `lock=`. fetch_job needs none: each fetch is one transaction, and two
at once both succeed (tests/test_store_faults.py), as `digest fetch` always has. Below them: one
ingest run (fetch -> parse -> store), the backfill over past days, `digest topics test`
and `digest preview` (both read only, so no lock).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

from digest.addresses import address_key
from digest.clock import local_today, now_utc, today_utc
from digest.config import LIST_WORDS, Config, TopicConfig, is_http_url
from digest.deliver.bounces import PollReport, poll_mailbox
from digest.deliver.digest import Progress, SendReport, send_digests
from digest.deliver.editions import edition_render
from digest.deliver.likes import (
    like_index_for,
    like_matches_for,
    rebuild_vocabulary,
    refresh_vectors,
)
from digest.deliver.notices import send_notice
from digest.errors import DigestError, FetchError, PageFormatError
from digest.lock import RunLock, lock_path_for
from digest.models import (
    DeliveryState,
    Listing,
    RunResult,
    RunStatus,
    StoredPaper,
    Subscriber,
    SubscriberStatus,
    TopicMatch,
)
from digest.relevance import like_matches, merge_matches
from digest.render.feed import FeedReport, write_feed_files
from digest.source.fetch import Fetcher, make_client
from digest.source.listing import api_params_for, fetch_api, fetch_listing, page_url_for_day
from digest.source.parse import parse_any, parse_page
from digest.store import Store
from digest.store.browse import rising
from digest.store.meta import note_operator, operator_noted
from digest.store.readers import Ledger, active_subscribers, list_subscribers, unknown_topics
from digest.topics import Removed, explain_topic

log = logging.getLogger("digest.pipeline")
DAILY = "daily"  # the runs of fetch_job (scheduler, `digest fetch`, `digest run`)


@contextmanager
def run_lock(config: Config, held: RunLock | None = None) -> Iterator[RunLock]:
    """The run lock of config's database for the length of a job: `held` when the caller
    has it already (the scheduler, which waits for it), else taken here and released on
    the way out. A send by hand while the scheduled one is under way would mail the same
    readers twice, so a busy lock raises LockBusy (naming the file and the holder)."""
    if held is not None:
        if not held.held:
            raise DigestError(f"{held.path}: the run lock passed to the job is not held")
        yield held
        return
    with RunLock(lock_path_for(config.store.database)) as lock:
        yield lock


@dataclass(frozen=True)
class FetchReport:
    """One ingest run and the feeds rebuilt after it."""

    run: RunResult
    feeds: FeedReport | None
    feeds_error: str | None = None

    # The scheduler reads `status` / `reason` to tell a failed run (see schedule.job_failure).
    @property
    def status(self) -> RunStatus:
        return RunStatus.FAILED if self.feeds_error else self.run.status

    @property
    def reason(self) -> str | None:
        return self.run.reason or self.feeds_error

    def summary(self) -> str:
        feeds = (
            f"feeds NOT rebuilt: {self.feeds_error}"
            if self.feeds_error
            else f"feeds: all {self.feeds.items.get('all', 0)} items, "
            f"{len(self.feeds.written)} files rewritten"
            + (f", {len(self.feeds.removed)} of old topics removed" if self.feeds.removed else "")
            if self.feeds
            else "feeds: -"
        )
        return f"{self.run.summary()}; {feeds}"


@dataclass(frozen=True)
class SendOutcome:
    """The day's send, or why it was held back."""

    day: date
    report: SendReport | None  # None: held back, nothing attempted
    held: str | None = None  # why the send waits (the list could not be read)

    @property
    def ok(self) -> bool:
        return self.held is None and (self.report is None or self.report.ok)

    def summary(self) -> str:
        if self.held:
            return f"send {self.day.isoformat()} held back: {self.held}; it retries later"
        assert self.report is not None
        return self.report.summary()


@dataclass(frozen=True)
class RunReport:
    """`digest run`: fetch, feeds, send."""

    fetch: FetchReport
    send: SendOutcome

    @property
    def ok(self) -> bool:
        return self.fetch.status != RunStatus.FAILED and self.send.ok

    def summary(self) -> str:
        return f"{self.fetch.summary()}; {self.send.summary()}"


def fetch_job(
    config: Config,
    *,
    from_path: str | None = None,
    url: str | None = None,
    list_date: date | None = None,
) -> FetchReport:
    """Fetch (or read `from_path`), store, rebuild the feeds. Failures are recorded, not
    raised: the feeds are rebuilt from the database even when the fetch failed.

    `url` may be a list word ("daily", "trending") or a URL; `list_date` names the day
    of a saved list that does not say it.
    """
    url = LIST_WORDS.get(url, url) if url else None
    if url and not is_http_url(url):
        raise DigestError(f"--url {url!r}: not 'daily', 'trending' or an http(s) URL")
    store = Store.open(config.store.database)
    try:
        if from_path:
            run = ingest_file(store, from_path, list_date=list_date)
        else:
            fetcher = make_fetcher(config)
            with fetcher.client:
                run = ingest(config, store, fetcher, url=url)
        for paper_id, why in run.left_out:
            # Also in the run's record and its one line; the log is what a server keeps.
            log.warning("run %s left out paper %a: %s", run.run_id, paper_id, why)
        # What send_job judges the list by: this fetch, not a later backfill of an old day.
        store.mark_run(DAILY, run.run_id)
        try:
            feeds: FeedReport | None = write_feeds(config, store)
            error = None
        except DigestError as e:
            feeds, error = None, str(e)
        return FetchReport(run, feeds, error)
    finally:
        store.close()


def send_job(
    config: Config,
    day: date | None = None,
    *,
    progress: Progress | None = None,
    lock: RunLock | None = None,
    hold_back: bool = True,
) -> SendOutcome:
    """Send `day`'s digests (default today in schedule.timezone) under the run lock
    (`lock` when the caller holds it), unless the list cannot be read now (`hold_back`;
    False for `digest send`, the operator's send by hand, which goes regardless).

    A failed latest fetch (network down, page layout changed) holds the send back rather
    than mailing a thin or empty digest; the operator, if configured, hears of it once a
    day. The held send counts as failed, so the scheduler tries it again later.
    """
    day = day or local_today(config.schedule.timezone)
    with run_lock(config, lock), _opened(config) as store:
        last = store.last_run(kind=DAILY) if hold_back else None
        if last is not None and last["status"] == RunStatus.FAILED:
            why = f"the last fetch failed ({last['reason']})"
            notify_operator(
                config,
                store,
                f"send-held:{day.isoformat()}",
                f"papers-digest: the {day.isoformat()} digest is held back",
                f"The daily email of {day.isoformat()} was not sent because {why}.\n"
                "It is retried on the schedule; `digest run` or `digest send` sends it "
                "by hand once the list can be read.\n",
            )
            return SendOutcome(day, None, why)
        return SendOutcome(day, send_digests(config, store, day, progress=progress))


def run_job(
    config: Config,
    *,
    from_path: str | None = None,
    url: str | None = None,
    progress: Progress | None = None,
    lock: RunLock | None = None,
) -> RunReport:
    """The daily job: fetch + store + feeds, then the emails, under one hold of the run
    lock (`lock` when the caller holds it)."""
    with run_lock(config, lock) as held:
        fetched = fetch_job(config, from_path=from_path, url=url)
        return RunReport(fetched, send_job(config, progress=progress, lock=held))


def bounces_job(config: Config) -> PollReport:
    """Read the bounces mailbox once (no run lock: it writes only reader states, in
    transactions of their own); return its PollReport. Raises MailboxError."""
    with _opened(config) as store:
        return poll_mailbox(config, store)


@contextmanager
def _opened(config: Config) -> Iterator[Store]:
    store = Store.open(config.store.database)
    try:
        yield store
    finally:
        store.close()


@dataclass(frozen=True)
class ResendReport:
    """`digest resend`: who was meant, and the send (None: nothing was uncertain)."""

    day: date
    targets: tuple[str, ...]
    send: SendReport | None

    @property
    def ok(self) -> bool:
        return self.send is None or (self.send.ok and len(self.send.sent) >= len(self.targets))

    def summary(self) -> str:
        if self.send is None:
            return f"no uncertain deliveries on {self.day.isoformat()}: nothing to resend"
        return self.send.summary()


def resend(
    config: Config,
    addresses: Sequence[str] = (),
    day: date | None = None,
    *,
    progress: Progress | None = None,
    lock: RunLock | None = None,
) -> ResendReport:
    """Send `day`'s digest (default today in schedule.timezone) again, on purpose, to
    `addresses` (default: every reader whose delivery that day is uncertain), under the
    run lock. A delivery the server accepted is never sent again: DigestError names it,
    as it does an address with no delivery that day, and nothing is sent."""
    day = day or local_today(config.schedule.timezone)
    with run_lock(config, lock), _opened(config) as store:
        ledger = Ledger(store)
        ledger.settle_in_flight()  # under the run lock: a "sending" row is a dead run's
        for address in addresses:
            row = ledger.get(day, address)
            if row is None:
                raise DigestError(
                    f"{address}: no delivery of the {day.isoformat()} digest to resend"
                )
            if row.status == DeliveryState.SENT:
                raise DigestError(
                    f"{address}: the {day.isoformat()} digest was accepted by the server "
                    f"({row.reply}, {row.sent}); not sending a second copy"
                )
        targets = tuple(addresses) or tuple(
            d.email for d in ledger.rows([DeliveryState.UNCERTAIN], day)
        )
        if not targets:
            return ResendReport(day, targets, None)
        report = send_digests(config, store, day, progress=progress, resend=list(targets))
        return ResendReport(day, targets, report)


def notify_operator(config: Config, store: Store, key: str, subject: str, text: str) -> bool:
    """Mail `email.operator` once per `key`; return True if a mail went out.

    Quiet when no operator or no SMTP server is configured. A mail that cannot be sent is
    logged and tried again at the next call with the same key.
    """
    if not config.email.operator or not config.smtp.host:
        return False
    if operator_noted(store, key):
        return False
    try:
        send_notice(config, config.email.operator, subject, text)
    except DigestError as e:  # SMTP trouble: log, keep the key unset, try next time
        log.warning("could not mail the operator %s: %s", config.email.operator, e)
        return False
    note_operator(store, key)
    return True


def write_feeds(config: Config, store: Store) -> FeedReport:
    """Rebuild every feed file from the store's papers of the last feeds.days days and the
    rising ones (see render.feed.write_feed_files); return what was written and kept.
    Like-topics' papers are in their topics' feeds (from the stored vectors)."""
    climbing = [r.paper for r in rising(store, limit=config.feeds.max_items)]
    window = store.papers_in_window(config.feeds.days)
    likes = like_matches_for(config, store, [sp.paper for sp in window])
    return write_feed_files(config, window, climbing, likes=likes)


# -- ingest (fetch -> parse -> store) and backfill --------------------------------


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
    result = store.store_listing(
        listing,
        started=started,
        reason_if_empty=empty_reason(listing.list_date, today, listing.trending),
    )
    if result.new:
        refresh_vectors(store)  # the new papers' vectors, for like-topics and readers' models
    return result


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
    result = store.store_listing(
        listing,
        started=started,
        reason_if_empty=empty_reason(listing.list_date, today or today_utc(), listing.trending),
    )
    if result.new:
        refresh_vectors(store)
    return result


@dataclass
class BackfillResult:
    days: int
    skipped: int
    runs: list[RunResult]

    @property
    def failed(self) -> list[RunResult]:
        return [r for r in self.runs if r.status == RunStatus.FAILED]

    def summary(self) -> str:
        seen = sum(r.seen for r in self.runs)
        new = sum(r.new for r in self.runs)
        empty = sum(1 for r in self.runs if r.status == RunStatus.EMPTY)
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


def backfill_span(since: date, until: date | None = None, today: date | None = None) -> int:
    """How many days `backfill(since, until)` goes over (0 when since is after until):
    `until` defaults to, and never passes, today (UTC, as the list's days are)."""
    today = today or today_utc()
    return max((min(until or today, today) - since).days + 1, 0)


def backfill_job(
    config: Config,
    since: date,
    until: date | None = None,
    *,
    concurrency: int | None = None,
    source: str | None = None,
    progress: Callable[[date, RunResult], None] | None = None,
) -> BackfillResult:
    """`digest backfill`: `backfill` on the configured store with the configured fetcher.

    No run lock: a backfill only stores past days' papers as archive (never new in an
    email or a feed), one transaction per day, and can take hours.
    """
    fetcher = make_fetcher(config)
    with _opened(config) as store, fetcher.client:
        return backfill(
            config,
            store,
            fetcher,
            since,
            until,
            concurrency=concurrency,
            source=source,
            progress=progress,
        )


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
    if any(r.new for r in runs):
        # The archive grew by whole days: a vocabulary of all of it, every vector re-made.
        rebuild_vocabulary(store)
    return BackfillResult(days=len(days), skipped=len(days) - len(todo), runs=runs)


def _describe(error: DigestError) -> str:
    kind = {PageFormatError: "layout", FetchError: "network"}.get(type(error), "error")
    return f"{kind}: {error}"


# -- trying a topic out (`digest topics test`) ----------------------------------------


@dataclass(frozen=True)
class TopicTrial:
    """What a topic would have taken from the stored papers of the last `days` days, and
    what its filters removed."""

    topic: TopicConfig
    days: int
    since: date
    total: int  # papers in the window
    matches: list[tuple[StoredPaper, TopicMatch]]
    label: str = ""  # how the summary names the topic; default "topic 'name'"
    removed: list[tuple[StoredPaper, Removed]] = field(default_factory=list)
    # A like-topic's closest papers under its min_similarity: (paper, similarity to the
    # seeds' centroid, the why), best first, to tune the threshold.
    below: list[tuple[StoredPaper, float, str]] = field(default_factory=list)

    def removed_counts(self) -> dict[str, int]:
        """Return filter -> how many papers it removed (only filters that removed some)."""
        counts: dict[str, int] = {}
        for _, r in self.removed:
            counts[r.filter] = counts.get(r.filter, 0) + 1
        return counts

    def summary(self) -> str:
        """One line: how many of the window's papers the topic would match, and what each
        filter removed."""
        line = (
            f"{len(self.matches)} of {self.total} papers in the last {self.days} days "
            f"would match {self.label or f'topic {self.topic.name!r}'}"
        )
        counts = self.removed_counts()
        if counts:
            shown = ", ".join(f"{f} {n}" for f, n in counts.items())
            line += f"; the filters removed {len(self.removed)} more ({shown})"
        return line


def try_topic(
    store: Store,
    topic: TopicConfig,
    *,
    days: int = 30,
    today: date | None = None,
    label: str = "",
    config: Config | None = None,
    below: int = 5,
) -> TopicTrial:
    """Return the stored papers of the last `days` days that `topic` matches, with terms,
    and those its terms took but a filter (exclude, has_code, min_upvotes, min_stars)
    removed.

    The window takes a paper whose daily-list day OR first-seen time falls in it, so
    papers just stored from an old capture count as recent (they are new to us).
    Raises DigestError for days < 1 and ConfigError for a term with no letters or digits.
    """
    if days < 1:
        raise DigestError(f"--days must be at least 1, not {days}")
    today = today or now_utc().date()
    since = today - timedelta(days=days - 1)  # today counts as one of the days
    stored = store.papers(since=since)
    by_id = {sp.paper.id: sp for sp in stored}
    taken, removed = explain_topic(topic, [sp.paper for sp in stored])
    under: list[tuple[StoredPaper, float, str]] = []
    if config is not None and topic.like:
        # Like-matches from the stored vectors, beside the keyword ones (`config` gives
        # the fetched seeds' vocabulary); `below` closest papers under the threshold.
        found = like_index_for(
            dataclasses.replace(config, topics=[topic]), store, (sp.paper.id for sp in stored)
        )
        if found is not None:
            index, vectors = found
            liked = like_matches(index, [sp.paper for sp in stored], vectors, [topic])
            mine = {p.id: m for p, m in taken}
            for pid, ms in liked.items():
                mine[pid] = merge_matches([mine[pid]] if pid in mine else [], ms)[0]
            taken = [(sp.paper, mine[sp.paper.id]) for sp in stored if sp.paper.id in mine]
            for sp in stored:
                vector = vectors.get(sp.paper.id)
                lk = index.best(vector).get(topic.name) if vector else None
                if lk is not None and sp.paper.id not in liked and sp.paper.id not in topic.like:
                    under.append((sp, lk.similarity, lk.describe()))
            under.sort(key=lambda u: (-u[1], u[0].paper.id))
            under = under[:below]
    return TopicTrial(
        topic,
        days,
        since,
        len(stored),
        [(by_id[p.id], m) for p, m in taken],
        label,
        [(by_id[r.paper.id], r) for r in removed],
        under,
    )


# -- many readers at once (`digest subscribers import`) ---------------------------------

CSV_COLUMNS = ("email", "topics", "frequency")


def read_subscribers_csv(path: str | Path) -> list[tuple[int, dict[str, str]]]:
    """Return (line number, {column: value}) for each row of a subscribers CSV file.

    The first line names the columns (email, and optionally topics and frequency, in any
    order); a file without that header is read as email, topics, frequency. Raises
    DigestError naming the file when it cannot be read or names an unknown column.
    """
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DigestError(f"{path}: cannot read the file: {e}") from None
    lines = list(csv.reader(io.StringIO(text)))
    if not lines:
        return []
    header = [c.strip().lower() for c in lines[0]]
    start = 1
    if "email" not in header:
        header, start = list(CSV_COLUMNS), 0
    unknown = [c for c in header if c not in CSV_COLUMNS]
    if unknown:
        raise DigestError(
            f"{path}: line 1: unknown column {unknown[0]!r} (columns: {', '.join(CSV_COLUMNS)})"
        )
    out: list[tuple[int, dict[str, str]]] = []
    for n, cells in enumerate(lines[start:], start=start + 1):
        if not any(c.strip() for c in cells):
            continue
        out.append((n, dict(zip(header, cells, strict=False))))
    return out


# -- preview (`digest preview`) -------------------------------------------------------


@dataclass(frozen=True)
class Preview:
    """Where `preview` put the message and its HTML part, or why there is none."""

    day: date
    address: str
    eml: Path | None
    html: Path | None
    reason: str = ""  # why no email, when eml is None


def reader_as_sent(config: Config, store: Store, address: str) -> Subscriber | str:
    """Return `address` as `digest send` sees it (the same row, topics, keywords and
    token), or why a send mails them nothing: not a subscriber, unsubscribed or not
    confirmed, or every topic they chose gone from the config."""
    key = address_key(address)
    for sub in active_subscribers(config, store):
        if address_key(sub.email) == key:
            gone = {address_key(a): t for a, t in unknown_topics(config, store).items()}
            if key in gone:
                return f"their topics are no longer in the config ({', '.join(gone[key])})"
            return sub
    for row in list_subscribers(config, store):
        if address_key(row.email) == key:
            state = (
                "has not confirmed yet"
                if row.status == SubscriberStatus.PENDING
                else f"is {row.status}"
            )
            return f"{row.email} {state}, so `digest send` mails them nothing"
    return (
        f"{address} is not a subscriber (add it with `digest subscribers add` or under "
        "[[subscribers]] in the config)"
    )


def preview(config: Config, store: Store, address: str, day: date | None, out_dir: Path) -> Preview:
    """Return the Preview of the email `digest send` would send `address` for `day`
    (default: today in schedule.timezone, as for `digest send`), written as
    <out_dir>/digest-<day>-<address>.eml and .html; sends and claims nothing.

    The reader is taken as the send takes them (see `reader_as_sent`), and the day's papers are
    the edition a send of that day mails. Raises DigestError for a day that has not come
    yet or when out_dir cannot be written.
    """
    today = local_today(config.schedule.timezone)
    day = day or today
    if day > today:  # the send refuses it too
        raise DigestError(
            f"--date {day.isoformat()}: that day has not come yet "
            f"(today is {today.isoformat()} in schedule.timezone)"
        )
    subscriber = reader_as_sent(config, store, address)
    if isinstance(subscriber, str):
        return Preview(day, address, None, None, subscriber)
    papers = store.digest_papers(day, today=today)
    # The reader's edition as the send makes it: a weekly reader's week, from the ledger.
    message = edition_render(config, store, day, papers, [subscriber]).render(subscriber)
    if message is None:
        followed = subscriber.topics or subscriber.keywords
        why = (
            f"no new papers on {day.isoformat()}"
            if not papers
            else "they follow no topics and email.no_topics_gets is 'nothing'"
            if not followed and config.email.no_topics_gets == "nothing"
            else f"none of the {len(papers)} new papers of {day.isoformat()} matched their topics"
        )
        return Preview(day, address, None, None, why)
    safe = re.sub(r"[^A-Za-z0-9@._-]", "_", address)
    stem = f"digest-{day.isoformat()}-{safe}"
    eml, page = out_dir / f"{stem}.eml", out_dir / f"{stem}.html"
    html_part = message.get_body(("html",))
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        eml.write_bytes(message.as_bytes())
        page.write_text(html_part.get_content() if html_part else "", encoding="utf-8")
    except OSError as e:
        raise DigestError(f"{out_dir}: cannot write the preview: {e.strerror}") from None
    return Preview(day, address, eml, page)
