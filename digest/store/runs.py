"""What ran: the scheduler's job log (table `job_runs`) and what /healthz reads.

The job log is kept out of the versioned schema on purpose: it is the scheduler's own
bookkeeping, created on first use, and safe to drop. Every call opens the file for itself
(Store.open), so the scheduler's thread and the web's never share a connection.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from digest.addresses import address_key
from digest.errors import DigestError
from digest.models import DeliveryState, JobStatus, RunStatus
from digest.store import Store
from digest.store.readers import BOUNCING_SQL

_JOB_RUNS = (
    "CREATE TABLE IF NOT EXISTS job_runs (id INTEGER PRIMARY KEY, job TEXT NOT NULL, "
    "day TEXT NOT NULL, started TEXT NOT NULL, finished TEXT NOT NULL, "
    "status TEXT NOT NULL, summary TEXT)"
)


class JobLog:
    """Each scheduled job's outcome, in the database beside the runs it made."""

    def __init__(self, database: str) -> None:
        self.database = database

    @contextmanager
    def _store(self) -> Iterator[Store]:
        store = Store.open(self.database)  # DigestError naming the file
        try:
            store.db.execute(_JOB_RUNS)
            yield store
        finally:
            store.close()

    def record(
        self, job: str, day: date, started: datetime, status: JobStatus, summary: str
    ) -> None:
        with self._store() as store:
            store.db.execute(
                "INSERT INTO job_runs (job, day, started, finished, status, summary) "
                "VALUES (?,?,?,?,?,?)",
                (
                    job,
                    day.isoformat(),
                    _iso(started),
                    _iso(datetime.now(started.tzinfo)),
                    status,
                    summary,
                ),
            )

    def succeeded(self, job: str, day: date) -> bool:
        """Return True if `job` has a successful run for local day `day`."""
        return self._count(job, day, JobStatus.OK) > 0

    def failures(self, job: str, day: date) -> int:
        return self._count(job, day, JobStatus.FAILED)

    def _count(self, job: str, day: date, status: JobStatus) -> int:
        with self._store() as store:
            row = store.db.execute(
                "SELECT count(*) FROM job_runs WHERE job = ? AND day = ? AND status = ?",
                (job, day.isoformat(), status),
            ).fetchone()
        return int(row[0])

    def first_seen(self) -> datetime | None:
        """Return when this database first saw the scheduler (its first start or job),
        or None for a new install."""
        with self._store() as store:
            row = store.db.execute("SELECT started FROM job_runs ORDER BY id LIMIT 1").fetchone()
        return datetime.fromisoformat(row[0]) if row else None

    def last(self, job: str) -> dict[str, Any] | None:
        """Return the latest ok or failed row of `job` (skips and busy ones aside), or None."""
        with self._store() as store:
            rows = list(
                store.db.query(
                    "SELECT * FROM job_runs WHERE job = ? AND status IN ('ok', 'failed') "
                    "ORDER BY id DESC LIMIT 1",
                    [job],
                )
            )
        return rows[0] if rows else None


def _iso(value: datetime) -> str:
    return value.isoformat(timespec="seconds")


def last_fetch_success(database: str) -> datetime | None:
    """Return when the latest ok or empty ingest run started (UTC), or None."""
    store = Store.open(database)
    try:
        row = store.db.execute(
            "SELECT max(started) FROM runs WHERE status IN (?, ?)", [RunStatus.OK, RunStatus.EMPTY]
        ).fetchone()
    finally:
        store.close()
    return datetime.fromisoformat(row[0].replace("Z", "+00:00")) if row and row[0] else None


@dataclass(frozen=True)
class HealthFacts:
    """What /healthz judges, read in one go from the file (read-only)."""

    last_run: dict[str, Any] | None  # the daily job's latest fetch (else the latest run)
    last_success: dict[str, Any] | None  # the latest ok or empty run
    papers: int
    uncertain: int  # deliveries that may have gone out: the operator's to check
    last_send: dict[str, Any] | None  # the scheduler's latest ok or failed send
    bouncing: int = 0  # readers not mailed because their mail bounces (smtp.max_bounces)


def health_facts(
    database: str, max_bounces: int = 3, config_readers: Collection[str] = ()
) -> HealthFacts:
    """Read what /healthz needs, without writing. `config_readers`: the address_key of
    each subscriber of the config file (a bouncing address counts when it is one of them
    or an active database reader). Raises DigestError naming the file."""
    store = Store.open(database, read_only=True)
    try:
        conn = store.db.conn
        conn.row_factory = sqlite3.Row
        # Judged by the daily job's latest fetch, as the send is (jobs.send_job): a
        # backfill of an old day that failed says nothing about today's list.
        daily = conn.execute("SELECT value FROM meta WHERE key = 'run:daily'").fetchone()
        last = conn.execute(
            "SELECT id, started, finished, status, reason FROM runs "
            + ("WHERE id = ?" if daily else "ORDER BY id DESC LIMIT 1"),
            [int(daily[0])] if daily else [],
        ).fetchone()
        ok = conn.execute(
            "SELECT id, started, finished, status FROM runs "
            "WHERE status IN ('ok', 'empty') ORDER BY id DESC LIMIT 1"
        ).fetchone()
        if last is not None and last["status"] in (RunStatus.OK, RunStatus.EMPTY):
            ok = last  # how fresh the daily fetch is, not a later backfill
        papers = store.count_papers()  # the count the triggers keep: no scan
        uncertain = conn.execute(
            "SELECT count(*) FROM deliveries WHERE status = ?", [DeliveryState.UNCERTAIN]
        ).fetchone()[0]
        # Bouncing readers as readers.list_subscribers counts them: an active database
        # row, or a config reader the database has no row for (one who left the config
        # file is nobody's reader any more, and not counted). Bouncing rows are few.
        try:
            bouncing = sum(
                1
                for email, status in conn.execute(
                    f"SELECT b.email, s.status FROM ({BOUNCING_SQL}) b "
                    "LEFT JOIN subscribers s ON s.email = b.email",
                    [max_bounces],
                )
                if status == "active" or (status is None and address_key(email) in config_readers)
            )
        except sqlite3.OperationalError:
            bouncing = 0  # a file from before the bounces table, opened read-only
        try:
            send = conn.execute(
                "SELECT day, started, finished, status, summary FROM job_runs "
                "WHERE job = 'send' AND status IN ('ok', 'failed') ORDER BY id DESC LIMIT 1"
            ).fetchone()
        except sqlite3.OperationalError:
            send = None  # no job_runs table: the scheduler never ran here
    except sqlite3.Error as e:
        raise DigestError(f"{database}: {e}") from None
    finally:
        store.close()
    return HealthFacts(
        dict(last) if last else None,
        dict(ok) if ok else None,
        int(papers),
        int(uncertain),
        dict(send) if send else None,
        int(bouncing),
    )
