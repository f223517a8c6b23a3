"""The jobs take the run lock themselves, so a Python caller gets one run at a time too.

Before issue 13 only the CLI took the lock: `send_job(config)` from a script, while
`digest serve` was sending, mailed the same readers a second time. Here another real
process holds the lock (an flock on `<database>.lock`), and the real SMTP server counts
what arrives.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from digest.config import Config, load_config
from digest.errors import LockBusy
from digest.jobs import fetch_job, resend, run_job, send_job
from digest.lock import RunLock, lock_path_for
from digest.store import Store
from digest.store.readers import Ledger
from tests.support.paths import PAGE_2024_08_01
from tests.support.smtpserver import SmtpServer

READERS = ["ada@example.org", "alan@example.org"]
ROOT = Path(__file__).resolve().parent.parent

HOLDER = """
import sys, time
from digest.lock import RunLock
lock = RunLock(sys.argv[1])
assert lock.acquire()
print("held", flush=True)
sys.stdin.read()  # until the test closes our stdin
"""


def make_config(tmp_path: Path, port: int) -> Config:
    path = tmp_path / "config.toml"
    subs = "".join(f'[[subscribers]]\nemail = "{a}"\n' for a in READERS)
    path.write_text(
        f'[store]\ndatabase = "{tmp_path / "d.db"}"\n[feeds]\ndir = "{tmp_path / "feeds"}"\n'
        '[schedule]\ntimezone = "UTC"\n'
        f'[smtp]\nhost = "127.0.0.1"\nport = {port}\nsecurity = "none"\n'
        'sender = "digest@example.org"\nrate_per_minute = 0\ntimeout = 5.0\n' + subs
    )
    return load_config(str(path))


class Holder:
    """Another process holding the run lock of `database` until closed."""

    def __init__(self, database: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(lock_path_for(database))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "held"

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=20)


def deliveries(config: Config) -> int:
    store = Store.open(config.store.database)
    try:
        return sum(len(Ledger(store).rows([s])) for s in ("queued", "sending", "sent"))
    finally:
        store.close()


@pytest.mark.timeout(60)
def test_a_python_caller_of_the_jobs_gets_the_run_lock(tmp_path: Path) -> None:
    with SmtpServer() as server:
        config = make_config(tmp_path, server.port)
        assert fetch_job(config, from_path=str(PAGE_2024_08_01)).status == "ok"
        holder = Holder(config.store.database)
        try:
            for job in (
                lambda: send_job(config),
                lambda: run_job(config, from_path=str(PAGE_2024_08_01)),
                lambda: resend(config, ["ada@example.org"]),
            ):
                with pytest.raises(LockBusy, match=r"a run is already in progress \(pid"):
                    job()
            assert server.messages == [] and deliveries(config) == 0
        finally:
            holder.close()
        # Once the other run is over, the same call sends, each reader once.
        outcome = send_job(config)
        assert outcome.ok and outcome.report is not None
        assert sorted(outcome.report.sent) == READERS
        assert server.received_by() == {a: 1 for a in READERS}


def test_a_caller_that_holds_the_lock_passes_it_in(tmp_path: Path) -> None:
    # The scheduler waits for the lock, then hands it to the send; the job must not try to
    # take it a second time (two RunLocks exclude each other even in one process).
    with SmtpServer() as server:
        config = make_config(tmp_path, server.port)
        lock = RunLock(lock_path_for(config.store.database))
        assert lock.acquire()
        try:
            report = run_job(config, from_path=str(PAGE_2024_08_01), lock=lock)
            assert report.ok, report.summary()
            assert lock.held  # still the caller's to release
        finally:
            lock.release()
        assert server.received_by() == {a: 1 for a in READERS}
        unheld = RunLock(lock_path_for(config.store.database))
        with pytest.raises(Exception, match="the run lock passed to the job is not held"):
            send_job(config, lock=unheld)
