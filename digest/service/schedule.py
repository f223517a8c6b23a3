"""When the jobs run: fetch several times a day, send once a day, one run at a time.

APScheduler 3.x (`BackgroundScheduler`, cron triggers in the configured time zone) fires
the jobs; this module decides whether a fire may run and what follows it:

- One run at a time: a thread lock inside the process, and the `RunLock` (flock on
  `<database>.lock`) across processes, so two containers on one volume never overlap.
- The send runs once per local day: each job's outcome goes into a small `job_runs`
  table in the same SQLite file, and a send fire for a day that already has a
  successful send is skipped. That covers a second process whose fire waited on the
  lock, and the repeated 02:xx of the autumn DST change.
- Catch-up on start: if today's send time has passed with no successful send today
  and the service had started on this database before it (a send it missed; never on
  a new install's first start), or no fetch succeeded since the last fetch time, that
  job runs now, once; missed fires are never replayed one by one (coalesce=True,
  misfire_grace_time).
- A failed run is tried again `retries` times that day, `retry_after` minutes apart,
  then logged as given up (and /healthz shows it).

The jobs are parameters (`fetch(config)`, `send(config, day)`) so tests hand in their own
and the pipeline's are the default.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler  # type: ignore[import-untyped]
from apscheduler.triggers.cron import CronTrigger  # type: ignore[import-untyped]
from apscheduler.triggers.interval import IntervalTrigger  # type: ignore[import-untyped]

from digest.clock import schedule_timezone
from digest.config import WEEKDAYS, Config
from digest.errors import ConfigError
from digest.jobs import bounces_job, fetch_job, send_job
from digest.lock import RunLock, lock_path_for
from digest.models import JobStatus, RunStatus
from digest.stopping import STOP
from digest.store.runs import JobLog, last_fetch_success

log = logging.getLogger("digest.schedule")

FetchJob = Callable[[Config], Any]
SendJob = Callable[[Config, date], Any]
DAYS = WEEKDAYS
LOOK_BACK = timedelta(days=8)  # how far back `previous_fire` searches: a week of downtime


# -- triggers --------------------------------------------------------------------------


def fetch_trigger(config: Config, *, jitter: int | None = None) -> CronTrigger:
    """Return the fetch job's cron trigger. Raises ConfigError naming schedule.fetch."""
    s = config.schedule
    tz = schedule_timezone(config.schedule.timezone)
    try:
        trigger = CronTrigger.from_crontab(s.fetch, timezone=tz)
    except ValueError as e:
        raise ConfigError(
            f"{s.fetch!r} is not a crontab line like '0 */2 * * *': {e}",
            path=config.path,
            key="schedule.fetch",
        ) from None
    trigger.jitter = (s.jitter if jitter is None else jitter) or None
    return trigger


def send_trigger(config: Config, *, jitter: int | None = None) -> CronTrigger:
    """Return the daily send's cron trigger.

    Raises ConfigError naming schedule.send_time or schedule.send_days.
    """
    s = config.schedule
    hour, minute = parse_hhmm(config)
    days = [d.strip().lower()[:3] for d in s.send_days]
    if not days or any(d not in DAYS for d in days):
        raise ConfigError(
            f"{s.send_days!r}: give day names from {', '.join(DAYS)}",
            path=config.path,
            key="schedule.send_days",
        )
    return CronTrigger(
        day_of_week=",".join(days),
        hour=hour,
        minute=minute,
        timezone=schedule_timezone(config.schedule.timezone),
        jitter=(s.jitter if jitter is None else jitter) or None,
    )


def parse_hhmm(config: Config) -> tuple[int, int]:
    """Return (hour, minute) of schedule.send_time. Raises ConfigError naming the key."""
    text = config.schedule.send_time
    try:
        hour, minute = (int(part) for part in text.split(":"))
        if not (0 <= hour < 24 and 0 <= minute < 60):
            raise ValueError
    except ValueError:
        raise ConfigError(
            f"{text!r} is not a time like '08:00'", path=config.path, key="schedule.send_time"
        ) from None
    return hour, minute


def previous_fire(trigger: CronTrigger, now: datetime) -> datetime | None:
    """Return the trigger's last fire time at or before `now` (within a week), or None."""
    fire = trigger.get_next_fire_time(None, now - LOOK_BACK)
    last = None
    while fire is not None and fire <= now:
        last = fire
        fire = trigger.get_next_fire_time(fire, fire + timedelta(seconds=1))
    return last


def job_failure(result: Any) -> str | None:
    """Return why a job's result counts as failed, or None when it succeeded.

    A RunResult fails with status "failed"; a SendReport when not `ok`.
    """
    if getattr(result, "status", None) == RunStatus.FAILED:
        return str(getattr(result, "reason", None) or "failed")
    if getattr(result, "ok", True) is False:
        return _summary(result)
    return None


def _summary(result: Any) -> str:
    summary = getattr(result, "summary", None)
    return str(summary()) if callable(summary) else repr(result)


# -- the scheduler ---------------------------------------------------------------------


class Scheduler:
    """The fetch and send jobs on their cron triggers, one run at a time."""

    def __init__(
        self,
        config: Config,
        *,
        fetch: FetchJob | None = None,
        send: SendJob | None = None,
    ) -> None:
        # load_config checked all this; a Config built by hand is refused here, before
        # anything is written, not at the first fire.
        fetch_trigger(config)
        send_trigger(config)
        self.config = config
        self.fetch = fetch or self._fetch_job
        self.send = send or self._send_job
        self.tz = schedule_timezone(config.schedule.timezone)
        self.log = JobLog(config.store.database)
        self.lock = RunLock(lock_path_for(config.store.database))
        self._one_at_a_time = threading.Lock()
        self._idle = threading.Event()
        self._idle.set()
        self._stopping = threading.Event()
        # One worker: fires that come while a job runs wait their turn (or coalesce).
        self.aps = BackgroundScheduler(
            timezone=self.tz,
            executors={"default": {"type": "threadpool", "max_workers": 1}},
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": config.schedule.misfire_grace or None,
            },
        )

    # -- lifecycle

    def start(self, *, catch_up: bool | None = None) -> list[str]:
        """Start the triggers; return the job names queued to run now as catch-up."""
        self.aps.add_job(self.run_fetch, fetch_trigger(self.config), id="fetch", name="fetch")
        self.aps.add_job(self.run_send, send_trigger(self.config), id="send", name="send")
        if self.config.bounces.imap_host:
            every = IntervalTrigger(minutes=self.config.bounces.poll_minutes, jitter=30)
            self.aps.add_job(self.run_bounces, every, id="bounces", name="bounces")
        self.aps.start()
        due = (
            self.due_on_start()
            if (self.config.schedule.catch_up if catch_up is None else catch_up)
            else []
        )
        now = datetime.now(self.tz)
        # Noted after due_on_start looked: the next start knows the service was up now.
        self.log.record("serve", now.date(), now, JobStatus.STARTED, "scheduler started")
        for name in due:
            func = self.run_fetch if name == "fetch" else self.run_send
            self.aps.add_job(
                func, "date", run_date=now, id=f"{name}-catch-up", name=name, replace_existing=True
            )
            log.info("catch-up: %s missed while down, running it now", name)
        return due

    def shutdown(self, wait: float = 10.0) -> bool:
        """Stop the triggers; wait up to `wait` seconds for a running job.

        Returns True if no job is still running.
        """
        self._stopping.set()
        if self.aps.running:
            self.aps.shutdown(wait=False)
        return self._idle.wait(wait)

    @property
    def busy(self) -> bool:
        return not self._idle.is_set()

    def next_runs(self) -> dict[str, datetime | None]:
        """Return each job's next fire time (local), None when not scheduled."""
        out: dict[str, datetime | None] = {"fetch": None, "send": None}
        if not self.aps.running:
            return out
        for job in self.aps.get_jobs():
            when = job.next_run_time
            if job.name in out and when is not None:
                current = out[job.name]
                out[job.name] = when if current is None else min(current, when)
        return out

    def due_on_start(self) -> list[str]:
        """Return the jobs the downtime missed: at most one fetch and one send.

        Send: today's send time has passed with no successful send today, and the
        scheduler had started on this database before that time: a send it missed. A
        new install's first start after the send time mails nobody; the first send is
        the next scheduled one.
        Fetch: no ok or empty run started since the latest fetch time (on a first start
        too: the feeds should not wait hours for their first papers).
        """
        now = datetime.now(self.tz)
        due = []
        last_fetch = previous_fire(fetch_trigger(self.config, jitter=0), now)
        done = last_fetch_success(self.config.store.database)
        if last_fetch is not None and (done is None or done < last_fetch):
            due.append("fetch")
        last_send = previous_fire(send_trigger(self.config, jitter=0), now)
        if (
            last_send is not None
            and last_send.date() == now.date()
            and not self.log.succeeded("send", now.date())
        ):
            first = self.log.first_seen()
            if first is not None and first < last_send:
                due.append("send")
            else:
                log.info(
                    "first start after today's send time (%s): no catch-up send; "
                    "the first send is at the next scheduled time",
                    last_send.strftime("%H:%M"),
                )
        return due

    # -- the job bodies the triggers call

    def _fetch_job(self, config: Config) -> Any:
        return fetch_job(config)  # under the lock _run waited for: no send overlaps it

    def _send_job(self, config: Config, day: date) -> Any:
        # Held back (and so retried) while the latest fetch failed: never an empty digest.
        return send_job(config, day, lock=self.lock)

    def run_fetch(self) -> JobStatus:
        """Run the fetch job under the locks; return "ok", "failed", "busy" or "stopped"."""
        return self._run("fetch", lambda day: self.fetch(self.config))

    def run_send(self, day: date | None = None) -> JobStatus:
        """Run the send for local `day` (default today) unless it already succeeded.

        Returns "ok", "failed", "skipped", "busy" or "stopped".
        """
        return self._run("send", lambda d: self.send(self.config, d), day)

    def run_bounces(self) -> JobStatus:
        """Read the bounces mailbox once; return "ok", "failed" or "stopped". Not under
        the run lock: it only changes reader states, and a send reads them at its start."""
        if self._stopped():
            return JobStatus.STOPPED
        started = datetime.now(self.tz)
        try:
            summary = bounces_job(self.config).summary()
        except Exception as e:  # the mailbox down must never kill the scheduler thread
            log.error("bounces: %s", e)
            self.log.record("bounces", started.date(), started, JobStatus.FAILED, str(e))
            return JobStatus.FAILED
        log.info("%s", summary)
        self.log.record("bounces", started.date(), started, JobStatus.OK, summary)
        return JobStatus.OK

    def _run(self, job: str, call: Callable[[date], Any], day: date | None = None) -> JobStatus:
        if self._stopping.is_set():
            return JobStatus.STOPPED
        started = datetime.now(self.tz)
        day = day or started.date()
        with self._one_at_a_time:
            self._idle.clear()
            try:
                if not self._acquire_lock():
                    if self._stopped():
                        return JobStatus.STOPPED
                    holder = self.lock.holder() or "holder unknown"
                    log.warning("%s %s: another run holds the lock (%s); not run", job, day, holder)
                    self.log.record(job, day, started, JobStatus.BUSY, f"lock held by {holder}")
                    if job == "send":  # the holder may be a fetch: the send still has to go
                        self._retry(job, day, "lock busy")
                    return JobStatus.BUSY
                try:
                    # Checked under the lock: another process may have just sent today's.
                    if job == "send" and self.log.succeeded("send", day):
                        log.info("send %s: already sent today; skipped", day)
                        self.log.record(job, day, started, JobStatus.SKIPPED, "already sent")
                        return JobStatus.SKIPPED
                    return self._call(job, call, day, started)
                finally:
                    self.lock.release()
            finally:
                self._idle.set()

    def _stopped(self) -> bool:
        return self._stopping.is_set() or STOP.is_set()

    def _acquire_lock(self) -> bool:
        """Wait up to schedule.lock_wait for the run lock, in short steps: a stop
        (SIGTERM) ends the wait within half a second, not after ten minutes."""
        deadline = time.monotonic() + self.config.schedule.lock_wait
        while True:
            remaining = deadline - time.monotonic()
            if self.lock.acquire(wait=max(0.0, min(0.5, remaining))):
                return True
            if remaining <= 0 or self._stopped():
                return False

    def _call(
        self, job: str, call: Callable[[date], Any], day: date, started: datetime
    ) -> JobStatus:
        try:
            result = call(day)
        except Exception as e:  # a job must never kill the scheduler thread
            log.exception("%s %s raised", job, day)
            why: str | None = f"{type(e).__name__}: {e}"
            summary = f"raised {why}"
        else:
            why = job_failure(result)
            summary = _summary(result)
        status = JobStatus.FAILED if why else JobStatus.OK
        self.log.record(job, day, started, status, summary)
        if why:
            log.error("%s %s failed: %s", job, day, summary)
            self._retry(job, day, why)
        else:
            log.info("%s %s: %s", job, day, summary)
            self._drop_retry(job)
        return status

    def _drop_retry(self, job: str) -> None:
        if self.aps.running and self.aps.get_job(f"{job}-retry") is not None:
            self.aps.remove_job(f"{job}-retry")

    def _retry(self, job: str, day: date, why: str) -> None:
        s = self.config.schedule
        tries = self.log.failures(job, day)
        if tries > s.retries or self._stopping.is_set() or not self.aps.running:
            log.error("%s %s: giving up after %d failed tries: %s", job, day, tries, why)
            self._drop_retry(job)
            return
        when = datetime.now(self.tz) + timedelta(minutes=s.retry_after)
        if when.date() != day:
            log.error("%s %s: no time left today for another try: %s", job, day, why)
            self._drop_retry(job)
            return
        func = self.run_fetch if job == "fetch" else self.run_send
        self.aps.add_job(
            func, "date", run_date=when, id=f"{job}-retry", name=job, replace_existing=True
        )
        log.warning(
            "%s %s: try %d of %d at %s", job, day, tries + 1, s.retries + 1, when.strftime("%H:%M")
        )
