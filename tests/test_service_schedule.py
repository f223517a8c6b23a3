"""The scheduler: cron triggers in local time across DST, catch-up, retries, the run lock.

The clock is time-machine's (it moves `datetime.now` for the scheduler's own thread too),
the database a temporary SQLite file, the second process a real subprocess.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import time_machine

from digest.config import Config, ScheduleConfig, StoreConfig
from digest.errors import ConfigError, LockBusy
from digest.jobs import ingest_file
from digest.lock import RunLock, lock_path_for
from digest.models import RunResult
from digest.service.schedule import JobLog, Scheduler, fetch_trigger, previous_fire, send_trigger
from digest.store import Store
from tests.support.paths import PAGE_2024_08_01, ROOT
from tests.support.waiting import wait_until

BERLIN = ZoneInfo("Europe/Berlin")


def config_for(tmp: Path, **schedule: Any) -> Config:
    # Fetch once a year unless a test says otherwise; tests inject every job anyway.
    defaults: dict[str, Any] = {
        "timezone": "Europe/Berlin",
        "jitter": 0,
        "lock_wait": 0,
        "fetch": "0 0 1 1 *",
    }
    return Config(
        store=StoreConfig(database=str(tmp / "digest.db")),
        schedule=ScheduleConfig(**(defaults | schedule)),
    )


class Calls:
    """Records each job call; `fetch` and `send` are the job callables to inject."""

    def __init__(self, store_path: str, fail: bool = False) -> None:
        self.fetches: list[datetime] = []
        self.sends: list[date] = []
        self.store_path = store_path
        self.fail = fail
        self.done = threading.Event()

    def fetch(self, config: Config) -> RunResult:
        self.fetches.append(datetime.now(BERLIN))
        store = Store.open(self.store_path)
        try:
            if self.fail:
                return store.record_failure("http://127.0.0.1:9/papers", "page", "network: down")
            return ingest_file(store, PAGE_2024_08_01)
        finally:
            store.close()

    def send(self, config: Config, day: date) -> object:
        self.sends.append(day)
        self.done.set()
        return "sent"


# -- triggers across DST -------------------------------------------------------------


@pytest.mark.parametrize(
    ("change_day", "offsets"),
    [(date(2026, 3, 29), (1, 2)), (date(2026, 10, 25), (2, 1))],
)
def test_send_fires_at_local_time_across_dst(
    tmp_path: Path, change_day: date, offsets: tuple[int, int]
) -> None:
    trigger = send_trigger(config_for(tmp_path, send_time="08:00"))
    start = datetime(change_day.year, change_day.month, change_day.day, tzinfo=BERLIN)
    start -= timedelta(days=2)
    fires = []
    fire = trigger.get_next_fire_time(None, start)
    for _ in range(5):
        fires.append(fire)
        fire = trigger.get_next_fire_time(fire, fire + timedelta(seconds=1))
    assert [f.date() for f in fires] == [start.date() + timedelta(days=n) for n in range(5)]
    assert all((f.hour, f.minute) == (8, 0) for f in fires)
    hours = [f.utcoffset() // timedelta(hours=1) for f in fires]  # type: ignore[operator]
    assert hours == [offsets[0]] * 2 + [offsets[1]] * 3
    # The day of the change is 23 or 25 hours long in UTC; the send stays at 08:00.
    utc = [f.astimezone(UTC) for f in fires]  # same-zone subtraction would use wall time
    gaps = {(b - a).total_seconds() / 3600 for a, b in pairwise(utc)}
    assert gaps == {24.0, 24.0 + offsets[0] - offsets[1]}


def test_send_days_and_fetch_every_two_hours(tmp_path: Path) -> None:
    config = config_for(tmp_path, send_days=["mon", "wed"], fetch="0 */2 * * *")
    fire = send_trigger(config).get_next_fire_time(None, datetime(2026, 3, 28, tzinfo=BERLIN))
    assert fire == datetime(2026, 3, 30, 8, 0, tzinfo=BERLIN)  # Saturday -> Monday
    trigger = fetch_trigger(config)
    day = datetime(2026, 3, 29, tzinfo=BERLIN)
    fires = []
    fire = trigger.get_next_fire_time(None, day)
    while fire.date() == day.date():
        fires.append(fire)
        fire = trigger.get_next_fire_time(fire, fire + timedelta(seconds=1))
    # 02:00 does not exist on the spring change: that fire comes at 03:00, still twelve.
    local = [f.astimezone(UTC).astimezone(BERLIN) for f in fires]
    assert [f.hour for f in local] == [0, 3, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22]


@pytest.mark.parametrize(
    "when", [datetime(2026, 3, 29, 7, 59, 58), datetime(2026, 10, 25, 7, 59, 58)]
)
def test_scheduler_thread_fires_at_local_time_on_dst_day(tmp_path: Path, when: datetime) -> None:
    config = config_for(tmp_path, fetch="0 0 1 1 *", send_time="08:00")
    calls = Calls(config.store.database)
    with time_machine.travel(when.replace(tzinfo=BERLIN), tick=True):
        scheduler = Scheduler(config, fetch=calls.fetch, send=calls.send)
        scheduler.start(catch_up=False)
        try:
            assert scheduler.next_runs()["send"] == when.replace(
                hour=8, minute=0, second=0, tzinfo=BERLIN
            )
            assert calls.done.wait(10)
            fired_at = datetime.now(BERLIN)
        finally:
            scheduler.shutdown()
    assert calls.sends == [when.date()]
    assert (fired_at.hour, fired_at.minute) == (8, 0)
    assert calls.fetches == []


def test_ambiguous_autumn_hour_sends_once(tmp_path: Path) -> None:
    """02:30 happens twice on 2026-10-25 in Berlin; the trigger fires twice, the send once."""
    config = config_for(tmp_path, send_time="02:30")
    trigger = send_trigger(config)
    first = trigger.get_next_fire_time(None, datetime(2026, 10, 25, tzinfo=BERLIN))
    second = trigger.get_next_fire_time(first, first + timedelta(seconds=1))
    assert first.date() == second.date() == date(2026, 10, 25)  # APScheduler fires twice
    calls = Calls(config.store.database)
    scheduler = Scheduler(config, fetch=calls.fetch, send=calls.send)
    assert scheduler.run_send(date(2026, 10, 25)) == "ok"
    assert scheduler.run_send(date(2026, 10, 25)) == "skipped"
    assert calls.sends == [date(2026, 10, 25)]


# -- catch-up --------------------------------------------------------------------------


def test_catch_up_after_days_down_runs_once(tmp_path: Path) -> None:
    config = config_for(tmp_path, send_time="08:00", fetch="0 */2 * * *")
    log = JobLog(config.store.database)
    # Last good day: Friday 27 March, fetched and sent. Then down until Tuesday 31, 10:00.
    with time_machine.travel(datetime(2026, 3, 27, 9, 0, tzinfo=BERLIN), tick=False):
        store = Store.open(config.store.database)
        ingest_file(store, PAGE_2024_08_01)
        store.close()
        log.record("send", date(2026, 3, 27), datetime.now(BERLIN), "ok", "sent 3")
    calls = Calls(config.store.database)
    with time_machine.travel(datetime(2026, 3, 31, 10, 0, tzinfo=BERLIN), tick=True):
        scheduler = Scheduler(config, fetch=calls.fetch, send=calls.send)
        assert scheduler.due_on_start() == ["fetch", "send"]
        assert scheduler.start() == ["fetch", "send"]
        try:
            assert calls.done.wait(10)
            wait_until(lambda: not scheduler.busy)
            time.sleep(0.3)  # anything else queued would have started by now
            assert scheduler.due_on_start() == []  # and a restart would not run them again
        finally:
            scheduler.shutdown()
    assert calls.sends == [date(2026, 3, 31)]  # once, for today: not once per missed day
    assert len(calls.fetches) == 1
    assert log.last("send")["day"] == "2026-03-31"  # type: ignore[index]


def test_no_catch_up_before_send_time_or_when_done(tmp_path: Path) -> None:
    config = config_for(tmp_path, send_time="08:00", fetch="0 */2 * * *")
    with time_machine.travel(datetime(2026, 3, 31, 7, 30, tzinfo=BERLIN), tick=False):
        scheduler = Scheduler(config, fetch=Calls(config.store.database).fetch)
        assert scheduler.due_on_start() == ["fetch"]  # nothing ever fetched; send not due
        store = Store.open(config.store.database)
        ingest_file(store, PAGE_2024_08_01)
        store.close()
        assert scheduler.due_on_start() == []
    off = config_for(tmp_path, catch_up=False)
    calls = Calls(off.store.database)
    with time_machine.travel(datetime(2026, 3, 31, 12, 0, tzinfo=BERLIN), tick=True):
        scheduler = Scheduler(off, fetch=calls.fetch, send=calls.send)
        assert scheduler.start() == []
        scheduler.shutdown()
    assert calls.sends == []


def test_first_start_after_send_time_sends_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A new install started at 10:05 with send_time 08:00 was never down: no catch-up
    send (it used to mail everyone at once), but the feeds still get their first fetch."""
    config = config_for(tmp_path, send_time="08:00", fetch="0 */2 * * *")
    calls = Calls(config.store.database)
    with (
        time_machine.travel(datetime(2026, 3, 31, 10, 5, tzinfo=BERLIN), tick=True),
        caplog.at_level(logging.INFO, logger="digest.schedule"),
    ):
        scheduler = Scheduler(config, fetch=calls.fetch, send=calls.send)
        assert scheduler.start() == ["fetch"]
        try:
            wait_until(lambda: len(calls.fetches) == 1 and not scheduler.busy, 5)
            time.sleep(0.3)  # a queued send would have started by now
        finally:
            scheduler.shutdown()
    assert calls.sends == []
    assert "catch-up: send" not in caplog.text
    assert "first start after today's send time (08:00): no catch-up send" in caplog.text
    # A restart later the same day: still never up at 08:00, still nothing to catch up.
    with time_machine.travel(datetime(2026, 3, 31, 11, 0, tzinfo=BERLIN), tick=False):
        assert Scheduler(config).due_on_start() == []


def test_send_missed_while_down_is_caught_up(tmp_path: Path) -> None:
    """Started at 07:00, down from 07:30 to 10:00: the 08:00 send was missed."""
    config = config_for(tmp_path, send_time="08:00")
    with time_machine.travel(datetime(2026, 3, 31, 7, 0, tzinfo=BERLIN), tick=False):
        first = Scheduler(config, fetch=Calls(config.store.database).fetch)
        assert first.start() == []  # before the send time, nothing fetched for a year
        first.shutdown()
    with time_machine.travel(datetime(2026, 3, 31, 10, 0, tzinfo=BERLIN), tick=False):
        assert Scheduler(config).due_on_start() == ["send"]


def test_previous_fire(tmp_path: Path) -> None:
    trigger = send_trigger(config_for(tmp_path, send_days=["fri"]))
    now = datetime(2026, 3, 31, 10, 0, tzinfo=BERLIN)  # a Tuesday
    assert previous_fire(trigger, now) == datetime(2026, 3, 27, 8, 0, tzinfo=BERLIN)


# -- retries ---------------------------------------------------------------------------


def test_failed_run_is_retried_then_given_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = config_for(tmp_path, retries=2, retry_after=15, fetch="0 0 1 1 *")
    calls = Calls(config.store.database, fail=True)
    with time_machine.travel(datetime(2026, 3, 31, 10, 0, tzinfo=BERLIN), tick=True):
        scheduler = Scheduler(config, fetch=calls.fetch, send=calls.send)
        scheduler.start(catch_up=False)
        try:
            with caplog.at_level(logging.WARNING, logger="digest.schedule"):
                assert scheduler.run_fetch() == "failed"
                retry = scheduler.aps.get_job("fetch-retry")
                assert retry is not None
                delay = retry.next_run_time - datetime.now(BERLIN)
                assert timedelta(minutes=14) < delay <= timedelta(minutes=15)
                assert scheduler.run_fetch() == "failed"
                assert scheduler.aps.get_job("fetch-retry") is not None
                assert scheduler.run_fetch() == "failed"  # the third failure: retries=2 spent
                assert scheduler.aps.get_job("fetch-retry") is None
        finally:
            scheduler.shutdown()
    assert len(calls.fetches) == 3
    assert "giving up after 3 failed tries" in caplog.text
    assert JobLog(config.store.database).failures("fetch", date(2026, 3, 31)) == 3


def test_job_that_raises_is_recorded_and_retried(tmp_path: Path) -> None:
    config = config_for(tmp_path, retries=1)

    def broken(_config: Config, _day: date) -> None:
        raise RuntimeError("smtp.example.org:587 refused")

    with time_machine.travel(datetime(2026, 3, 31, 10, 0, tzinfo=BERLIN), tick=True):
        calls = Calls(config.store.database)
        scheduler = Scheduler(config, fetch=calls.fetch, send=broken)
        scheduler.start(catch_up=False)
        try:
            assert scheduler.run_send() == "failed"
            assert scheduler.aps.get_job("send-retry") is not None
        finally:
            scheduler.shutdown()
    last = JobLog(config.store.database).last("send")
    assert last is not None and last["status"] == "failed"
    assert "smtp.example.org:587 refused" in last["summary"]


def test_bad_schedule_config_names_the_key(tmp_path: Path) -> None:
    for key, value in (
        ("timezone", "Mars/Olympus"),
        ("fetch", "every two hours"),
        ("send_time", "8am"),
        ("send_days", ["funday"]),
    ):
        with pytest.raises(ConfigError, match=f"schedule.{key}"):
            Scheduler(config_for(tmp_path, **{key: value}))  # a Config built by hand
    assert not (tmp_path / "digest.db").exists()


# -- one run at a time, across processes ----------------------------------------------

HOLDER = """
import sys, time
from digest.lock import RunLock
lock = RunLock(sys.argv[1])
assert lock.acquire()
print("held", flush=True)
time.sleep(60)
"""


def hold_lock_in_subprocess(path: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_process_cannot_run_while_lock_held_and_kill_releases_it(tmp_path: Path) -> None:
    config = config_for(tmp_path, lock_wait=0)
    path = lock_path_for(config.store.database)
    proc = hold_lock_in_subprocess(path)
    try:
        calls = Calls(config.store.database)
        scheduler = Scheduler(config, fetch=calls.fetch, send=calls.send)
        assert scheduler.run_fetch() == "busy"
        assert scheduler.run_send(date(2026, 3, 31)) == "busy"
        assert calls.fetches == [] and calls.sends == []
        with pytest.raises(LockBusy, match=f"pid {proc.pid}"):
            RunLock(path).__enter__()
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # a crash: no chance to unlock
        proc.wait(10)
    # The kernel dropped the lock with the process: no expiry to wait for.
    assert scheduler.run_fetch() == "ok"
    assert len(calls.fetches) == 1


def test_lock_excludes_within_one_process_and_waits(tmp_path: Path) -> None:
    path = tmp_path / "x.db.lock"
    first = RunLock(path)
    assert first.acquire()
    assert not RunLock(path).acquire(wait=0.2)
    threading.Timer(0.3, first.release).start()
    second = RunLock(path)
    assert second.acquire(wait=5)
    second.release()


def test_scheduler_waits_for_the_other_process_then_skips_a_done_send(tmp_path: Path) -> None:
    """Two containers fire the same send: the second waits, then sees it done."""
    config = config_for(tmp_path, lock_wait=10)
    path = lock_path_for(config.store.database)
    proc = hold_lock_in_subprocess(path)
    today = date(2026, 3, 31)
    # The "other container" records its successful send, then exits (releasing the lock).
    JobLog(config.store.database).record("send", today, datetime.now(BERLIN), "ok", "sent 2")
    threading.Timer(0.5, lambda: os.kill(proc.pid, signal.SIGTERM)).start()
    calls = Calls(config.store.database)
    scheduler = Scheduler(dataclasses.replace(config), fetch=calls.fetch, send=calls.send)
    try:
        assert scheduler.run_send(today) == "skipped"
    finally:
        proc.wait(10)
    assert calls.sends == []


def test_shutdown_cuts_a_wait_for_the_lock(tmp_path: Path) -> None:
    """lock_wait = 600 while another process holds the lock: a stop ends the wait now."""
    config = config_for(tmp_path, lock_wait=600)
    proc = hold_lock_in_subprocess(lock_path_for(config.store.database))
    try:
        calls = Calls(config.store.database)
        scheduler = Scheduler(config, fetch=calls.fetch, send=calls.send)
        outcome: list[str] = []
        waiting = threading.Thread(target=lambda: outcome.append(scheduler.run_send()))
        waiting.start()
        wait_until(lambda: scheduler.busy)
        time.sleep(0.3)
        started = time.monotonic()
        assert scheduler.shutdown(wait=5)
        assert time.monotonic() - started < 1.0
        waiting.join(5)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    assert outcome == ["stopped"]
    assert calls.sends == []
