"""A bad config stops every command before it writes anything, through the real CLI.

Each case once passed `digest check` or was only found after `fetch`, `run`, `send` or
`serve` had created the database. Now the config is loaded and checked first: exit 1,
one `error:` line per problem naming the file, line and key (or the DIGEST_* variable),
no traceback, and the folder holds nothing but the config file.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from digest.cli import main
from tests.support.cli import CLEAN_ENV
from tests.support.paths import PAGE_2024_08_01, ROOT

# name -> (config text after [store], env, the key named, words in the message)
BAD: dict[str, tuple[str, dict[str, str], str, str]] = {
    "timeout nan": ("[source]\ntimeout = nan\n", {}, "source.timeout", "finite"),
    "timeout inf": ("[source]\ntimeout = inf\n", {}, "source.timeout", "finite"),
    "timeout negative": ("[source]\ntimeout = -1\n", {}, "source.timeout", "more than 0"),
    "smtp timeout nan": ("[smtp]\ntimeout = nan\n", {}, "smtp.timeout", "finite"),
    "smtp timeout huge": ("[smtp]\ntimeout = 1e12\n", {}, "smtp.timeout", "at most 3600"),
    "feed days float": ("[feeds]\ndays = 1e12\n", {}, "feeds.days", "whole number"),
    "feed days huge": ("[feeds]\ndays = 1000000000000\n", {}, "feeds.days", "from 1 to 3650"),
    "confirm_hours huge": (
        "[web]\nconfirm_hours = 1000000000000\n",
        {},
        "web.confirm_hours",
        "from 1 to 8760",
    ),
    "CR LF in sender": (
        '[smtp]\nsender = "digest@example.org\\r\\nBcc: all@example.org"\n',
        {},
        "smtp.sender",
        "one line",
    ),
    "CR LF in domain": (
        '[email]\ndomain = "example.org\\r\\nX-Evil: 1"\n',
        {},
        "email.domain",
        "one line",
    ),
    "sender not an address": (
        '[smtp]\nsender = "papers digest"\n',
        {},
        "smtp.sender",
        "not an email address",
    ),
    "javascript base_url": (
        '[feeds]\nbase_url = "javascript:alert(1)"\n',
        {},
        "feeds.base_url",
        "not an http(s) URL",
    ),
    "bad time zone": (
        '[schedule]\ntimezone = "Mars/Olympus"\n',
        {},
        "schedule.timezone",
        "unknown time zone",
    ),
    "bad cron line": (
        '[schedule]\nfetch = "every two hours"\n',
        {},
        "schedule.fetch",
        "crontab",
    ),
    "typo in a topic key": (
        '[[topics]]\nname = "agents"\nkeyword = ["agent*"]\n',
        {},
        "topics[0].keyword",
        "did you mean 'keywords'?",
    ),
    "typo in a table": (
        '[smpt]\nhost = "mail.example.org"\n',
        {},
        "smpt",
        "did you mean [smtp]?",
    ),
    "env sender": ("", {"DIGEST_SMTP_SENDER": "nobody"}, "DIGEST_SMTP_SENDER", "not an email"),
    "env base url": ("", {"DIGEST_BASE_URL": "javascript:x"}, "DIGEST_BASE_URL", "http(s)"),
    "env port": ("", {"DIGEST_SMTP_PORT": "99999"}, "DIGEST_SMTP_PORT", "1 to 65535"),
    "env CR LF": (
        "",
        {"DIGEST_SMTP_SENDER": "a@example.org\r\nBcc: b@example.org"},
        "DIGEST_SMTP_SENDER",
        "one line",
    ),
}

COMMANDS: dict[str, list[str]] = {
    "check": ["check"],
    "fetch": ["fetch", "--from", str(PAGE_2024_08_01)],
    "run": ["run", "--from", str(PAGE_2024_08_01)],
    "send": ["send"],
    "backfill": ["backfill", "--since", "2024-08-01", "--until", "2024-08-01"],
    "papers": ["papers"],
    "subscribers add": ["subscribers", "add", "reader@example.org"],
    "preview": ["preview", "--to", "reader@example.org", "--out", "out"],
    "topics test": ["topics", "test", "--keywords", "agent*"],
}


def write_bad(tmp: Path, case: str) -> Path:
    text = BAD[case][0]
    feeds = f'dir = "{tmp / "feeds"}"\n'
    if "[feeds]\n" in text:
        text = text.replace("[feeds]\n", "[feeds]\n" + feeds)
    else:
        text = "[feeds]\n" + feeds + text
    path = tmp / "config.toml"
    # The database and feeds would land in `tmp`: the test asserts they never do.
    path.write_text(f'[store]\ndatabase = "{tmp / "digest.db"}"\n' + text, encoding="utf-8")
    return path


def assert_refused(case: str, output: str, code: int, tmp: Path, config: Path) -> None:
    _text, env, key, words = BAD[case]
    where = "environment" if env else str(config)
    assert code == 1, output
    assert "Traceback" not in output, output
    line = next((x for x in output.splitlines() if f", {key}:" in x or f" {key}:" in x), None)
    assert line is not None, output
    assert line.startswith(f"error: {where}"), output
    assert words in line, output
    if not env:
        assert ", line " in line, output  # file, line and key
    assert sorted(p.name for p in tmp.iterdir()) == ["config.toml"], "something was written"


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("case", list(BAD))
def test_bad_config_stops_every_command_before_it_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str, command: str
) -> None:
    monkeypatch.chdir(tmp_path)
    config = write_bad(tmp_path, case)
    env = CLEAN_ENV | BAD[case][1]
    result = CliRunner().invoke(main, ["--config", str(config), *COMMANDS[command]], env=env)
    assert_refused(case, result.output, result.exit_code, tmp_path, config)


@pytest.mark.parametrize("case", list(BAD))
def test_bad_config_stops_serve_before_it_writes(tmp_path: Path, case: str) -> None:
    """A real `digest serve` process: it must exit at once, not start and serve."""
    config = write_bad(tmp_path, case)
    env = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV} | BAD[case][1]
    result = subprocess.run(
        [sys.executable, "-m", "digest", "--config", str(config), "serve", "--port", "0"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        env=env | {"PYTHONPATH": str(ROOT)},
    )
    assert_refused(case, result.stderr, result.returncode, tmp_path, config)


def test_check_reports_every_problem_at_once(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        "[source]\n"
        "timeout = nan\n"  # 2
        "[smpt]\n"  # 3
        'host = "mail.example.org"\n'
        "[smtp]\n"
        'sender = "digest@example.org\\r\\nBcc: x@example.org"\n'  # 6
        "[schedule]\n"
        'timezone = "Mars/Olympus"\n'  # 8
        'fetch = "every two hours"\n'  # 9
        "[web]\n"
        "confirm_hours = 1000000000000\n"  # 11
        "[[topics]]\n"
        'name = "agents"\n'
        'keyword = ["agent*"]\n',  # 14
        encoding="utf-8",
    )
    result = CliRunner().invoke(
        main, ["--config", str(config), "check"], env=CLEAN_ENV | {"DIGEST_SMTP_PORT": "smtp"}
    )
    assert result.exit_code == 1
    lines = [x for x in result.output.splitlines() if x.startswith("error: ")]
    expected = [
        "environment, DIGEST_SMTP_PORT: 'smtp' is not a port number",
        f"{config}, line 2, source.timeout: must be a finite number",
        f"{config}, line 3, smpt: unknown table [smpt]; did you mean [smtp]?",
        f"{config}, line 14, topics[0].keyword: unknown key; did you mean 'keywords'?",
        f"{config}, line 11, web.confirm_hours: must be from 1 to 8760",
        f"{config}, line 6, smtp.sender: must be one line of text",
        f"{config}, line 8, schedule.timezone: unknown time zone 'Mars/Olympus'",
        f"{config}, line 9, schedule.fetch: 'every two hours' is not a crontab line",
    ]
    for want in expected:
        assert any(x.startswith(f"error: {want}") for x in lines), (want, result.output)
    assert lines[-1] == f"error: {len(expected)} problems in the config; nothing was run"
    assert len(lines) == len(expected) + 1, result.output
    assert not (tmp_path / "papers-digest.db").exists()
