"""`digest subscribers`: add --weekly, list with every column, import FILE.csv in one
transaction with a line per refused row, and add/import of a bouncing reader."""

from __future__ import annotations

import time
from datetime import date
from pathlib import Path

from click.testing import CliRunner

from digest.cli import main
from digest.config import load_config
from digest.store import Store
from digest.store.readers import Ledger, active_subscribers, list_subscribers, record_bounce

CONFIG = """
[store]
database = "{db}"

[[topics]]
name = "agents"
keywords = ["agent*"]

[[topics]]
name = "vision"
keywords = ["image", "video"]

[[subscribers]]
email = "boss@example.org"
topics = ["vision"]
frequency = "weekly"
"""

GOOD = 200
CSV = (
    "email,topics,frequency\n"
    + "".join(
        f"reader{i}@example.org,agents vision,{'weekly' if i % 2 else 'daily'}\n"
        for i in range(GOOD)
    )
    + "not-an-address,agents,daily\n"  # line 202
    + "x@example.org,robots,daily\n"  # line 203: no such topic
    + "y@example.org,agents,hourly\n"  # line 204: no such frequency
    + "reader0@example.org,agents,daily\n"  # line 205: twice in the file
    + "boss@example.org,agents,daily\n"  # line 206: in the config already
    + ",agents,daily\n"  # line 207: no address
)


def run(cfg: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["--config", str(cfg), *args])
    return result.exit_code, result.stdout, result.stderr


def test_import_many_in_one_go_with_refused_rows(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(CONFIG.format(db=tmp_path / "s.db"))
    data = tmp_path / "readers.csv"
    data.write_text(CSV)
    started = time.monotonic()
    code, out, err = run(cfg, "subscribers", "import", str(data))
    took = time.monotonic() - started
    assert code == 1  # some rows were refused: said, and the exit code says so too
    assert out.strip() == f"imported {GOOD}, refused 6"
    refused = err.splitlines()
    assert len(refused) == 6
    assert refused[0].startswith(f"{data}:202: refused not-an-address: ")
    assert refused[1].startswith(f"{data}:203: refused x@example.org: no topic named 'robots'")
    assert refused[2] == (
        f"{data}:204: refused y@example.org: frequency 'hourly': must be one of daily, weekly"
    )
    assert refused[3] == (
        f"{data}:205: refused reader0@example.org: reader0@example.org comes twice in the file"
    )
    assert refused[4].startswith(f"{data}:206: refused boss@example.org: ")
    assert refused[5].startswith(f"{data}:207: refused (no address): ")
    assert took < 10  # one transaction: 200 adds one by one took 63 s before
    config = load_config(cfg)
    store = Store.open(tmp_path / "s.db")
    try:
        rows = {r.email: r for r in list_subscribers(config, store)}
    finally:
        store.close()
    assert len(rows) == GOOD + 1
    assert rows["reader1@example.org"].frequency == "weekly"
    assert rows["reader2@example.org"].topics == ("agents", "vision")


def test_import_of_only_bad_rows_writes_nothing(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(CONFIG.format(db=tmp_path / "s.db"))
    data = tmp_path / "bad.csv"
    data.write_text("email,topics\nnope,agents\n")
    code, out, _ = run(cfg, "subscribers", "import", str(data))
    assert code == 1 and out.strip() == "imported 0, refused 1"
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("email,colour\na@example.org,red\n")
    code, _, err = run(cfg, "subscribers", "import", str(wrong))
    assert code == 1 and f"{wrong}: line 1: unknown column 'colour'" in err


def test_add_weekly_and_list_columns(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(CONFIG.format(db=tmp_path / "s.db"))
    code, out, _ = run(
        cfg, "subscribers", "add", "ada@example.org", "--weekly", "--topics", "agents"
    )
    assert code == 0 and out.strip() == "subscribed ada@example.org: agents (weekly)"
    store = Store.open(tmp_path / "s.db")
    try:
        ledger = Ledger(store)
        ledger.queue(date(2026, 11, 30), ["ada@example.org"])
        ledger.sent(date(2026, 11, 30), "ada@example.org", "250 ok", 1, "<m@x>")
    finally:
        store.close()
    code, out, err = run(cfg, "subscribers", "list")
    assert code == 0 and "2 active of 2 subscribers" in err
    assert out.splitlines() == [
        "boss@example.org\tactive\tconfig\tvision\tweekly\t-\tnever sent",
        "ada@example.org\tactive\tdatabase\tagents\tweekly\t-\tlast sent 2026-11-30",
    ]


def bounce_and_status(cfg: Path, address: str, *, bounce: bool) -> tuple[str, bool]:
    """(status, mailed today) of `address`; first a 5.1.1 for it when `bounce`."""
    config = load_config(cfg)
    store = Store.open(config.store.database)
    try:
        if bounce:
            record_bounce(store, address, hard=True, reply="550 5.1.1 no such user", source="smtp")
        status = {r.email: str(r.status) for r in list_subscribers(config, store)}[address]
        mailed = address in {s.email for s in active_subscribers(config, store)}
        return status, mailed
    finally:
        store.close()


def test_adding_or_importing_a_bouncing_reader_mails_them_again(tmp_path: Path) -> None:
    """Re-adding an address is the operator's explicit reactivation, as `subscribers
    activate` is: the "subscribed" / "imported" it prints must be true."""
    cfg = tmp_path / "config.toml"
    cfg.write_text(CONFIG.format(db=tmp_path / "s.db"))
    assert run(cfg, "subscribers", "add", "ada@example.org")[0] == 0
    assert bounce_and_status(cfg, "ada@example.org", bounce=True) == ("bouncing", False)
    code, out, _ = run(cfg, "subscribers", "add", "ada@example.org", "--topics", "agents")
    assert code == 0
    assert out.strip() == (
        "subscribed ada@example.org: agents (was bouncing: its bounces are cleared)"
    )
    assert bounce_and_status(cfg, "ada@example.org", bounce=False) == ("active", True)
    # Cleared bounces are history: one more "no such user" makes them bouncing again.
    assert bounce_and_status(cfg, "ada@example.org", bounce=True) == ("bouncing", False)
    data = tmp_path / "again.csv"
    data.write_text("email,topics\nada@example.org,vision\nbob@example.org,agents\n")
    code, out, _ = run(cfg, "subscribers", "import", str(data))
    assert code == 0 and out.strip() == "imported 2, refused 0, 1 bouncing made active"
    assert bounce_and_status(cfg, "ada@example.org", bounce=False) == ("active", True)
    code, out, _ = run(cfg, "subscribers", "add", "ada@example.org")  # not bouncing now
    assert code == 0 and out.strip() == "subscribed ada@example.org: every paper"


def test_an_import_leaves_who_unsubscribed_unsubscribed(tmp_path: Path) -> None:
    # An old export fed back in must not mail people who left: one removed by the
    # operator, one who pressed the one-click unsubscribe (the web's row, in mixed case).
    from digest.store.signups import unsubscribe_row

    cfg = tmp_path / "config.toml"
    cfg.write_text(CONFIG.format(db=tmp_path / "s.db"))
    first = tmp_path / "first.csv"
    first.write_text("email,topics\na@example.org,agents\nb@example.org,\nc@example.org,\n")
    assert run(cfg, "subscribers", "import", str(first))[0] == 0
    assert run(cfg, "subscribers", "remove", "a@example.org")[0] == 0
    store = Store.open(tmp_path / "s.db")
    try:
        unsubscribe_row(store, "b@example.org", "2026-11-30T08:00:00+00:00")
    finally:
        store.close()

    again = tmp_path / "again.csv"
    again.write_text(
        "email,topics\nA@Example.org,agents\nb@example.org,vision\nc@example.org,vision\n"
        "d@example.org,\n"
    )
    code, out, err = run(cfg, "subscribers", "import", str(again))
    assert code == 0  # nothing was wrong with the file
    assert out.strip() == "imported 2, refused 0, 2 kept unsubscribed"
    lines = err.splitlines()
    assert lines[0].startswith(f"{again}:2: kept unsubscribed a@example.org: they unsubscribed on ")
    assert lines[1].startswith(
        f"{again}:3: kept unsubscribed b@example.org: they unsubscribed on 2026-11-30;"
    )
    config = load_config(cfg)
    store = Store.open(tmp_path / "s.db")
    try:
        status = {r.email: str(r.status) for r in list_subscribers(config, store)}
        mailed = {s.email for s in active_subscribers(config, store)}
    finally:
        store.close()
    assert status["a@example.org"] == status["b@example.org"] == "unsubscribed"
    assert mailed == {"boss@example.org", "c@example.org", "d@example.org"}

    # One address typed on purpose is the way back.
    code, out, _ = run(cfg, "subscribers", "add", "a@example.org")
    assert code == 0 and out.startswith("subscribed a@example.org")
