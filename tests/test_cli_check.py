"""`digest check` and the DIGEST_* variables of the send: DIGEST_SMTP_CONNECTIONS, the
weekly readers and weekly_day, the bounce settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from digest.config import ConfigError, load_config
from digest.store import Store
from tests.support.cli import cli
from tests.support.config import write_config


def test_digest_smtp_connections_sets_the_sessions(tmp_path: Path) -> None:
    path = write_config(tmp_path, "config.toml", smtp={"host": "relay.example.org"})
    assert load_config(path, env={}).smtp.connections == 4
    assert load_config(path, env={"DIGEST_SMTP_CONNECTIONS": "8"}).smtp.connections == 8
    assert load_config(path, env={"DIGEST_SMTP_CONNECTIONS": ""}).smtp.connections == 4
    result = cli(path, "check", env={"DIGEST_SMTP_CONNECTIONS": "16"})
    assert result.exit_code == 0, result.output
    assert "rate:      no limit, 16 SMTP sessions" in result.stdout, result.stdout


@pytest.mark.parametrize(
    "value,words",
    [
        ("four", "'four' is not a whole number"),
        ("²", "not a whole number"),
        ("0", "1 to 32"),
        ("33", "1 to 32"),
    ],
)
def test_a_bad_digest_smtp_connections_names_the_variable(
    tmp_path: Path, value: str, words: str
) -> None:
    path = write_config(tmp_path, "config.toml", smtp={"host": "relay.example.org"})
    with pytest.raises(ConfigError) as err:
        load_config(path, env={"DIGEST_SMTP_CONNECTIONS": value})
    assert "DIGEST_SMTP_CONNECTIONS" in str(err.value) and words in str(err.value)
    result = cli(path, "check", env={"DIGEST_SMTP_CONNECTIONS": value})
    assert result.exit_code != 0
    assert "DIGEST_SMTP_CONNECTIONS" in result.output and words in result.output


def test_check_says_weekly_day_and_the_weekly_readers(tmp_path: Path) -> None:
    db = tmp_path / "digest.db"
    path = write_config(
        tmp_path,
        "config.toml",
        store={"database": db},
        schedule={"send_days": ["mon", "thu"], "weekly_day": "thu"},
        subscribers=[
            {"email": "daily@example.org", "topics": []},
            {"email": "weekly@example.org", "topics": [], "frequency": "weekly"},
        ],
    )
    before = cli(path, "check")
    assert before.exit_code == 0, before.output
    assert "weekly readers (1 of 2) on thu" in before.stdout, before.stdout
    assert not db.exists()  # check creates nothing
    store = Store.open(db)
    stamp = "2026-12-01T00:00:00Z"
    with store.transaction() as conn:
        conn.executemany(
            "INSERT INTO subscribers (email, topics, status, frequency, created, updated) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [
                ("w1@example.org", json.dumps([]), "active", "weekly", stamp, stamp),
                ("w2@example.org", json.dumps([]), "active", "weekly", stamp, stamp),
                ("d1@example.org", json.dumps([]), "active", "daily", stamp, stamp),
                ("gone@example.org", json.dumps([]), "unsubscribed", "weekly", stamp, stamp),
            ],
        )
    store.close()
    after = cli(path, "check")
    assert "weekly readers (3 of 5) on thu" in after.stdout, after.stdout


def test_check_shows_the_bounce_settings(tmp_path: Path) -> None:
    # Already there before this branch: checked so it stays.
    path = write_config(
        tmp_path,
        "config.toml",
        smtp={"host": "relay.example.org", "max_bounces": 3},
        bounces={"imap_host": "imap.example.org", "imap_user": "bounces", "poll_minutes": 20},
    )
    result = cli(path, "check", env={"DIGEST_BOUNCES_PASSWORD": "secret"})
    assert result.exit_code == 0, result.output
    assert (
        "bounces:   bounces at imap.example.org:993 (INBOX), every 20 min; webhook off "
        "(no secret); bouncing after 3 days"
    ) in result.stdout, result.stdout
    plain = cli(write_config(tmp_path, "plain.toml", smtp={"host": "relay.example.org"}), "check")
    assert "bounces:   no mailbox (envelope sender smtp.sender, no unsubscribe mailto)" in (
        plain.stdout
    )
