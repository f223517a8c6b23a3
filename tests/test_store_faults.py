"""The store under faults: first runs racing on a new file, papers it cannot store."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from digest.store import MIGRATIONS, Store
from tests.conftest import PAGE_2024_08_01, ROOT
from tests.test_cli_ingest import CLEAN_ENV

# A child that imports everything first, says so, then opens the store on "go": the two
# children's Store.open calls start within a few milliseconds of each other.
OPEN_ON_GO = """
import sys
from digest.store import Store
print("ready", flush=True)
sys.stdin.readline()
store = Store.open(sys.argv[1])
print(store.schema_version, store.count_papers(), flush=True)
store.close()
"""

TRIALS = 20


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV}
    env["PYTHONPATH"] = str(ROOT)
    return env


def _race(commands: list[list[str]], cwd: Path) -> list[subprocess.CompletedProcess[str]]:
    """Start `commands` together (each waits for a line on stdin), return their outcomes."""
    procs = [
        subprocess.Popen(
            cmd,
            cwd=cwd,
            env=_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for cmd in commands
    ]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    results = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        results.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return results


def test_two_first_opens_of_a_new_file_both_succeed(tmp_path: Path) -> None:
    # Before: 2 to 18 of 20 trials had one process fail with `table "papers" already
    # exists` (both read version 0, then both migrated) or `database is locked` (the
    # switch to WAL does not wait for the other process).
    started = time.monotonic()
    for trial in range(TRIALS):
        db = tmp_path / f"new-{trial}.db"
        cmd = [sys.executable, "-c", OPEN_ON_GO, str(db)]
        for result in _race([cmd, cmd], tmp_path):
            assert result.returncode == 0, f"trial {trial}: {result.stderr}"
            assert result.stdout.split() == [str(len(MIGRATIONS)), "0"]
        assert time.monotonic() - started < 50
    store = Store.open(tmp_path / "new-0.db")
    try:
        tables = {r[0] for r in store.db.execute("SELECT name FROM sqlite_master")}
        assert {"papers", "runs", "upvotes", "meta", "subscribers"} <= tables
    finally:
        store.close()


# `digest fetch --from` itself, after the same start signal.
FETCH_ON_GO = """
import sys
from digest.cli import main
print("ready", flush=True)
sys.stdin.readline()
main(sys.argv[1:])
"""


def test_two_first_fetches_from_a_real_capture_both_succeed(tmp_path: Path) -> None:
    for trial in range(5):
        folder = tmp_path / f"t{trial}"
        folder.mkdir()
        cmd = [sys.executable, "-c", FETCH_ON_GO, "fetch", "--from", str(PAGE_2024_08_01)]
        results = _race([cmd, cmd], folder)
        for result in results:
            assert result.returncode == 0, f"trial {trial}: {result.stderr}"
            assert "Traceback" not in result.stderr
        # One of them stored the 13 papers, the other saw them all as known.
        news = sorted(r.stdout.split("new ")[1].split(",")[0] for r in results)
        assert news == ["0", "13"], [r.stdout for r in results]
