"""The operator's side of "uncertain": the run line, /healthz, `digest deliveries`, and
`digest resend`, with the real CLI, the real renderer and a real aiosmtpd server."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from digest.clock import local_today
from digest.config import load_config
from digest.jobs import ingest_file
from digest.store import Store
from digest.store.readers import Ledger
from digest.web.app import health
from tests.support.cli import cli
from tests.support.config import smtp_section, subscribers_section
from tests.support.paths import PAGE_2024_08_01
from tests.support.smtpserver import SmtpServer

READERS = ["ann@example.org", "bob@example.org", "cat@example.org"]


def test_uncertain_is_reported_kept_and_resent_only_on_purpose(
    tmp_path: Path, config_file: Callable[..., Path]
) -> None:
    db = tmp_path / "digest.db"
    store = Store.open(db)
    ingest_file(store, PAGE_2024_08_01)
    store.close()
    with SmtpServer() as server:
        cfg = config_file(
            store={"database": db},
            feeds={"dir": tmp_path / "feeds"},
            smtp=smtp_section(server.port),
            subscribers=subscribers_section(READERS),
        )
        server.data_for["bob@example.org"] = "take-drop"  # taken, then no reply
        first = cli(cfg, "send")
        assert first.exit_code == 0, first.output
        assert "sent 2, failed 0, skipped 0, already sent 0, uncertain 1 (bob@" in first.stdout
        assert "1 uncertain (maybe delivered) not resent" in first.stdout
        _status, body = health(load_config(str(cfg)))
        assert body["uncertain"] == 1

        listed = cli(cfg, "deliveries")
        assert listed.exit_code == 0, listed.output
        lines = [ln for ln in listed.stdout.splitlines() if ln]
        assert len(lines) == 1 and "\tuncertain\tbob@example.org\t" in lines[0]
        assert "no reply to the end of the message" in lines[0]

        # Re-runs (the scheduler's retries) leave it alone.
        again = cli(cfg, "send")
        assert "sent 0" in again.stdout and "1 uncertain (maybe delivered)" in again.stdout
        assert server.received_by() == {a: 1 for a in READERS}

        # A delivery the server accepted is never resent, even on purpose.
        refused = cli(cfg, "resend", "ann@example.org")
        assert refused.exit_code == 1
        assert (
            "accepted by the server" in refused.output and "not sending a second" in refused.output
        )

        # The operator checked: bob has nothing; resend every uncertain row of the day.
        del server.data_for["bob@example.org"]
        resent = cli(cfg, "resend")
        assert resent.exit_code == 0, resent.output
        assert "sent 1, failed 0" in resent.stdout
        assert server.received_by() == {
            "ann@example.org": 1,
            "bob@example.org": 2,
            "cat@example.org": 1,
        }
        assert health(load_config(str(cfg)))[1]["uncertain"] == 0
        assert "nothing to resend" in cli(cfg, "resend").stdout
    assert [ln for ln in cli(cfg, "deliveries").stdout.splitlines() if ln] == []
    shown = cli(cfg, "deliveries", "--all").stdout
    assert shown.count("\tsent\t") == 3


def test_a_row_left_in_flight_by_a_dead_run_becomes_uncertain(
    tmp_path: Path, config_file: Callable[..., Path]
) -> None:
    db = tmp_path / "digest.db"
    with SmtpServer() as server:
        cfg = config_file(
            store={"database": db},
            feeds={"dir": tmp_path / "feeds"},
            smtp=smtp_section(server.port),
            subscribers=subscribers_section(READERS),
        )
        store = Store.open(db)
        ingest_file(store, PAGE_2024_08_01)
        # What a run does just before ann's final "."; then it is killed.
        day = local_today(load_config(str(cfg)).schedule.timezone)
        Ledger(store).queue(day, READERS)
        assert Ledger(store).claim(day, READERS[0])
        store.close()
        assert "\tsending\tann@example.org" in cli(cfg, "deliveries").stdout
        after = cli(cfg, "send")
        assert "sent 2, failed 0" in after.stdout
        assert "1 uncertain (maybe delivered) not resent" in after.stdout
        assert server.received_by() == {a: 1 for a in READERS[1:]}
    listed = cli(cfg, "deliveries").stdout
    assert "\tuncertain\tann@example.org\t" in listed and "crash or kill" in listed
