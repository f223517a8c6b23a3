"""The store under faults: first runs racing on a new file, papers it cannot store."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import sqlite_utils

from digest.jobs import FetchReport
from digest.models import Listing, Paper
from digest.source.parse import parse_api
from digest.store import MIGRATIONS, Store
from tests.support.cli import process_env
from tests.support.pages import raw_items
from tests.support.paths import PAGE_2024_08_01, REAL

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
    return process_env()


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


# -- one bad paper does not stop the day (issue 6) -------------------------------------

API_0801 = REAL / "api-daily_papers-2024-08-01.reserialised.json"


def test_fetch_from_a_capture_with_a_lone_surrogate_and_a_year_1_date(tmp_path: Path) -> None:
    # RECONSTRUCTED from the real 2024-08-01 API capture: one title carries half of a
    # surrogate pair, another paper a date that is before year 1 in UTC. Before: a
    # traceback (OverflowError: date value out of range), exit 1, no run recorded.
    items = raw_items(API_0801)
    items[0]["paper"]["title"] = items[0]["title"] = "Bad \ud83d title"
    items[1]["paper"]["publishedAt"] = "0001-01-01T00:00:00+05:00"
    saved = tmp_path / "bad.json"
    saved.write_text(json.dumps(items), encoding="ascii")
    assert b"\\ud83d" in saved.read_bytes()
    proc = subprocess.run(
        [sys.executable, "-m", "digest", "fetch", "--from", str(saved)],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    n = len(items)
    assert f"seen {n}, new {n}, updated 0;" in proc.stdout
    store = Store.open(tmp_path / "papers-digest.db")
    try:
        run = store.last_run()
        assert run is not None and (run["status"], run["new"], run["left_out"]) == ("ok", n, None)
        by_id = {sp.paper.id: sp.paper for sp in store.papers()}
        assert by_id[items[0]["paper"]["id"]].title == "Bad \ufffd title"
        assert by_id[items[1]["paper"]["id"]].published_at is None
    finally:
        store.close()


def _bad_papers() -> tuple[Paper, ...]:
    """Papers made without the parser (as a plugin or a test might) that SQLite cannot take."""
    year_1_east = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5)))
    return (
        Paper(id="bad-title", title="half \ud83d pair"),
        Paper(id="bad-\udc00-id", title="fine"),
        Paper(id="bad-date", title="fine", published_at=year_1_east),
        Paper(id="bad-votes", title="fine", upvotes=2**64),
    )


def test_a_paper_the_store_cannot_hold_is_left_out_with_its_id_and_reason(store: Store) -> None:
    good = parse_api(
        API_0801.read_bytes(), "https://huggingface.co/api/daily_papers?date=2024-08-01"
    )
    listing = dataclasses.replace(good, papers=good.papers[:3] + _bad_papers() + good.papers[3:])
    result = store.store_listing(listing)
    n = len(good.papers)
    assert (result.status, result.seen, result.new) == ("ok", n + 4, n)
    assert [i for i, _ in result.left_out] == [
        "bad-title",
        "bad-\udc00-id",
        "bad-date",
        "bad-votes",
    ]
    line = result.summary()
    assert (
        f"seen {n + 4}, new {n}, updated 0; left out 4: bad-title: title is not valid text" in line
    )
    assert "bad-\\udc00-id: id is not valid text" in line  # printable: no surrogate in the line
    assert "bad-date: published_at 0001-01-01 00:00:00+05:00 is outside years 1-9999" in line
    assert "bad-votes: upvotes 18446744073709551616 does not fit in 64 bits" in line
    line.encode("utf-8")
    # The run's record keeps all of them, as JSON.
    run = store.last_run()
    assert run is not None
    recorded = json.loads(run["left_out"])
    assert [r["id"] for r in recorded] == [i for i, _ in result.left_out]
    assert all(r["reason"] for r in recorded)
    # The rest of the day is stored, and only it got a vote snapshot.
    assert {sp.paper.id for sp in store.papers()} == {p.id for p in good.papers}
    snapshots = store.db.execute("SELECT count(*) FROM upvotes").fetchone()[0]
    assert snapshots == n


def test_a_bad_refresh_leaves_the_stored_paper_as_it_was(store: Store) -> None:
    first = Paper(id="2408.00001", title="Good title", upvotes=3)
    store.store_listing(Listing(papers=(first,), url="u", source="test"))
    worse = dataclasses.replace(first, title="Bad \ud83d", upvotes=9)
    result = store.store_listing(Listing(papers=(worse,), url="u", source="test"))
    assert result.status == "failed"
    assert result.left_out == (
        ("2408.00001", "title is not valid text (character 4 is a lone surrogate)"),
    )
    (stored,) = store.papers()
    assert (stored.paper.title, stored.paper.upvotes) == ("Good title", 3)


def test_a_list_none_of_whose_papers_can_be_stored_is_a_failed_run(store: Store) -> None:
    result = store.store_listing(Listing(papers=_bad_papers(), url="u", source="test"))
    assert result.status == "failed"
    line = result.summary()
    assert line.startswith(
        f"run {result.run_id} failed: none of the 4 papers listed could be stored"
    )
    assert "left out 4: bad-title" in line
    run = store.last_run()
    assert run is not None and run["status"] == "failed" and run["error"]
    assert store.count_papers() == 0
    # The fetch's one line (what `digest fetch` prints) carries the same.
    assert "left out 4: bad-title" in FetchReport(result, None).summary()


def test_a_version_3_file_gains_the_left_out_column(tmp_path: Path) -> None:
    db = tmp_path / "v3.db"
    conn = sqlite3.connect(db, isolation_level=None)
    old = sqlite_utils.Database(conn)
    for step in MIGRATIONS[:3]:
        step(old)
    conn.execute("PRAGMA user_version = 3")
    conn.execute(
        "INSERT INTO runs (started, source_url, source, status) VALUES ('t', 'u', 's', 'ok')"
    )
    conn.close()
    store = Store.open(db)
    try:
        assert store.schema_version == len(MIGRATIONS)
        (old_run,) = store.runs()
        assert old_run["left_out"] is None
        result = store.store_listing(Listing(papers=_bad_papers()[:1], url="u", source="test"))
        assert json.loads(store.runs(1)[0]["left_out"])[0]["id"] == "bad-title"
        assert result.left_out[0][0] == "bad-title"
    finally:
        store.close()
