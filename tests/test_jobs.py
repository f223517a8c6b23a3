"""`digest run` end to end: a real capture in, feeds on disk, mail at a real SMTP server.

Each test drives the CLI in-process against a config file in a temporary folder and an
aiosmtpd server on 127.0.0.1, and reads the one line every run ends with.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import Result

from digest.config import load_config
from digest.jobs import send_job
from digest.store import Store
from tests.support.cli import cli
from tests.support.config import smtp_section, subscribers_section, write_config
from tests.support.paths import PAGE_2024_08_01
from tests.support.smtpserver import SmtpServer

READERS = ["ada@example.org", "alan@example.org"]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for var in (
        "DIGEST_CONFIG",
        "DIGEST_DB",
        "DIGEST_FEEDS_DIR",
        "DIGEST_BASE_URL",
        "DIGEST_SMTP_HOST",
        "DIGEST_SMTP_PORT",
    ):
        monkeypatch.delenv(var, raising=False)


def pipeline_config(
    tmp_path: Path, port: int | None, operator: str = "", timezone: str = "UTC"
) -> Path:
    smtp = {"smtp": smtp_section(port, sender="digest@example.org", timeout=5.0)} if port else {}
    return write_config(
        tmp_path,
        store={"database": tmp_path / "d.db"},
        feeds={"dir": tmp_path / "feeds"},
        email={"operator": operator},
        schedule={"timezone": timezone},
        **smtp,
        subscribers=subscribers_section(READERS),
    )


def last_line(result: Result) -> str:
    return result.output.strip().splitlines()[-1]


def test_run_fetches_builds_feeds_and_mails_each_reader_once(tmp_path: Path) -> None:
    with SmtpServer() as server:
        config = pipeline_config(tmp_path, server.port)
        first = cli(config, "run", "--from", str(PAGE_2024_08_01))
        assert first.exit_code == 0, first.output
        line = last_line(first)
        store = Store.open(tmp_path / "d.db")
        try:
            stored = store.count_papers()
        finally:
            store.close()
        assert stored > 0 and f"seen {stored}, new {stored}" in line
        assert "feeds: all" in line
        assert "sent 2, failed 0" in line
        assert (tmp_path / "feeds" / "all.xml").is_file()
        assert server.received_by() == {a: 1 for a in READERS}

        again = cli(config, "run", "--from", str(PAGE_2024_08_01))
        assert again.exit_code == 0, again.output
        assert "new 0" in last_line(again)
        assert "already sent 2" in last_line(again)
        assert server.received_by() == {a: 1 for a in READERS}, "never sent twice"


def test_the_day_sent_is_today_in_the_configured_time_zone(tmp_path: Path) -> None:
    # The scheduler sends at 08:00 local time; `digest run` from a reader's own cron must
    # name the same day. Pick a zone whose date differs from UTC's right now: UTC+14
    # from 10:00 UTC on, UTC-12 before noon UTC (one of them always does).
    utc = datetime.now(UTC)
    zone = "Etc/GMT-14" if utc.hour >= 10 else "Etc/GMT+12"  # POSIX signs are inverted
    local = datetime.now(ZoneInfo(zone)).date()
    assert local != utc.date()
    with SmtpServer() as server:
        config = pipeline_config(tmp_path, server.port, timezone=zone)
        result = cli(config, "run", "--from", str(PAGE_2024_08_01))
        assert result.exit_code == 0, result.output
        assert f"send {local.isoformat()}: sent 2" in last_line(result)
        subjects = {m.message()["Subject"] for m in server.messages}
        assert len(subjects) == 1 and f", {local.day} {local:%b}: " in subjects.pop()
        again = cli(config, "send")
        assert f"send {local.isoformat()}:" in last_line(again)
        assert "already sent 2" in last_line(again)
    assert server.received_by() == {a: 1 for a in READERS}


def test_without_smtp_the_feeds_are_built_and_the_send_is_skipped(tmp_path: Path) -> None:
    result = cli(pipeline_config(tmp_path, None), "run", "--from", str(PAGE_2024_08_01))
    assert result.exit_code == 0, result.output
    line = last_line(result)
    assert "feeds: all" in line
    assert "skipped: no SMTP server is configured" in line
    assert (tmp_path / "feeds" / "all.atom").is_file()


def test_a_broken_page_holds_the_send_and_tells_the_operator_once(tmp_path: Path) -> None:
    broken = tmp_path / "broken.html"
    broken.write_text("<html><body><p>We are updating the site</p></body></html>")
    with SmtpServer() as server:
        config = pipeline_config(tmp_path, server.port, operator="ops@example.org")
        # A good day first, so the database has papers the held send could have mailed.
        cli(config, "fetch", "--from", str(PAGE_2024_08_01))
        for _ in range(2):
            result = cli(config, "run", "--from", str(broken))
            assert result.exit_code == 1
            line = last_line(result)
            assert "failed" in line and "held back: the last fetch failed" in line
        # No digest went out, and the operator heard about it exactly once.
        assert server.received_by() == {"ops@example.org": 1}
        note = server.messages[0].message()
        assert "held back" in str(note["Subject"])
        assert "last fetch failed" in note.get_content()

        # The list is readable again: the papers go out, nothing was lost.
        ok = cli(config, "run", "--from", str(PAGE_2024_08_01))
        assert ok.exit_code == 0, ok.output
        assert "sent 2" in last_line(ok)
    store = Store.open(tmp_path / "d.db")
    try:
        assert store.digest_days(), "the edition was claimed by the send that went out"
    finally:
        store.close()


def test_a_failed_backfill_day_does_not_hold_the_daily_send(tmp_path: Path) -> None:
    # The daily fetch worked; afterwards a backfill of 2023 met a 404. Today's send
    # judges the list by the daily fetch, not by the old day.
    with SmtpServer() as server:
        config = pipeline_config(tmp_path, server.port)
        assert cli(config, "fetch", "--from", str(PAGE_2024_08_01)).exit_code == 0
        store = Store.open(tmp_path / "d.db")
        try:
            store.record_failure(
                "https://huggingface.co/api/daily_papers?date=2023-01-02",
                "api",
                "network: HTTP 404 Not Found",
                list_date=date(2023, 1, 2),
            )
            assert store.last_run()["status"] == "failed"  # the latest run of any kind
        finally:
            store.close()
        outcome = send_job(load_config(config))  # what the scheduler's send job calls
        assert outcome.held is None, outcome.summary()
        assert outcome.report is not None and len(outcome.report.sent) == 2


def test_fetch_rebuilds_the_feeds_too(tmp_path: Path) -> None:
    result = cli(pipeline_config(tmp_path, None), "fetch", "--from", str(PAGE_2024_08_01))
    assert result.exit_code == 0, result.output
    assert "feeds: all" in last_line(result)
    assert (tmp_path / "feeds" / "all.json").is_file()


def test_bad_operator_address_is_pointed_at(tmp_path: Path) -> None:
    config = pipeline_config(tmp_path, None, operator="not an address")
    result = cli(config, "check")
    assert result.exit_code == 1
    assert "operator" in result.output and "not an address" in result.output
