"""The jobs a user runs or the scheduler fires: each one a library call, used by the CLI too.

fetch_job: fetch + store + feeds. send_job: the day's emails, held back while the list
cannot be read. run_job: both, in that order (`digest run`). Each returns a report whose
`summary()` is the one line the command ends with.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date
from email.utils import formatdate

from digest.config import LIST_WORDS, Config, is_http_url
from digest.errors import DigestError
from digest.ingest import ingest, ingest_file, make_fetcher
from digest.localtime import local_today
from digest.models import RunResult
from digest.notices import send_notice
from digest.render.feed import FeedReport, write_feeds
from digest.send import Progress, SendReport, send_digests
from digest.store import Store

log = logging.getLogger("digest.pipeline")
DAILY = "daily"  # the runs of fetch_job (scheduler, `digest fetch`, `digest run`)


@dataclass(frozen=True)
class FetchReport:
    """One ingest run and the feeds rebuilt after it."""

    run: RunResult
    feeds: FeedReport | None
    feeds_error: str | None = None

    # The scheduler reads `status` / `reason` to tell a failed run (see schedule.job_failure).
    @property
    def status(self) -> str:
        return "failed" if self.feeds_error else self.run.status

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
        return self.fetch.status != "failed" and self.send.ok

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
    config: Config, day: date | None = None, *, progress: Progress | None = None
) -> SendOutcome:
    """Send `day`'s digests (default today in schedule.timezone), unless the list
    cannot be read now.

    A failed latest fetch (network down, page layout changed) holds the send back rather
    than mailing a thin or empty digest; the operator, if configured, hears of it once a
    day. The held send counts as failed, so the scheduler tries it again later.
    """
    day = day or local_today(config)
    store = Store.open(config.store.database)
    try:
        last = store.last_run(kind=DAILY)
        if last is not None and last["status"] == "failed":
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
    finally:
        store.close()


def run_job(
    config: Config,
    *,
    from_path: str | None = None,
    url: str | None = None,
    progress: Progress | None = None,
) -> RunReport:
    """The daily job: fetch + store + feeds, then the emails."""
    fetched = fetch_job(config, from_path=from_path, url=url)
    return RunReport(fetched, send_job(config, progress=progress))


def notify_operator(config: Config, store: Store, key: str, subject: str, text: str) -> bool:
    """Mail `email.operator` once per `key`; return True if a mail went out.

    Quiet when no operator or no SMTP server is configured. A mail that cannot be sent is
    logged and tried again at the next call with the same key.
    """
    if not config.email.operator or not config.smtp.host:
        return False
    with store.transaction() as conn:
        if conn.execute("SELECT 1 FROM meta WHERE key = ?", (f"operator:{key}",)).fetchone():
            return False
    try:
        send_notice(config, config.email.operator, subject, text)
    except DigestError as e:  # SMTP trouble: log, keep the key unset, try next time
        log.warning("could not mail the operator %s: %s", config.email.operator, e)
        return False
    with store.transaction() as conn:
        conn.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
            (f"operator:{key}", formatdate(localtime=False)),
        )
    return True
