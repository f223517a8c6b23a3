"""Config: the example file is the defaults, every key is documented, errors point home."""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path
from typing import Any

import pytest

from digest.config import API_URL, TRENDING_URL, Config, load_config
from digest.errors import ConfigError
from tests.support.paths import ROOT

EXAMPLE = ROOT / "config.example.toml"


def test_example_equals_builtin_defaults() -> None:
    config = load_config(EXAMPLE, env={})
    assert config.path == str(EXAMPLE)
    assert dataclasses.replace(config, path=None) == Config()
    assert load_config(None, env={}) == Config()


def _sections() -> list[tuple[str, Any]]:
    """(section name, dataclass) for each table of Config, lists of tables included."""
    hints = typing.get_type_hints(Config)
    out = []
    for f in dataclasses.fields(Config):
        hint = hints[f.name]
        if typing.get_origin(hint) is list:
            (hint,) = typing.get_args(hint)
        if dataclasses.is_dataclass(hint):
            out.append((f.name, hint))
    return out


@pytest.mark.parametrize("section,cls", _sections(), ids=lambda v: getattr(v, "__name__", v))
def test_every_key_is_documented_in_the_example(section: str, cls: Any) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    # A plain table is written out; a list of tables ([[topics]]) is shown commented out.
    header = re.search(rf"^(# )?\[\[?{section}\]\]?\s*$", text, re.M)
    assert header, f"no [{section}] in {EXAMPLE.name}"
    commented = header.group(1) is not None
    body = text[header.end() :]
    nxt = re.search(r"^(# )?\[", body, re.M)
    body = body[: nxt.start()] if nxt else body
    for f in dataclasses.fields(cls):
        if f.metadata.get("resolved"):  # load_config fills it (a secret), never the file
            continue
        pattern = rf"^{'# ' if commented else ''}{f.name}\s*="
        assert re.search(pattern, body, re.M), f"{section}.{f.name} is not in {EXAMPLE.name}"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


TOPICS_OK = '[[topics]]\nname = "agents"\nkeywords = ["agent*"]\n\n'

# name -> (file text, dotted key, line the error must name, words in the message)
BAD_CONFIGS: dict[str, tuple[str, str, int, str]] = {
    "unknown key": ('[source]\nlist = "daily"\nlsit = "trending"\n', "source.lsit", 3, "unknown"),
    "password in config": (
        '[smtp]\nhost = "mail"\npassword = "hunter2"\n',
        "smtp.password",
        3,
        "DIGEST_SMTP_PASSWORD",
    ),
    "wrong type": ("[feeds]\ntitle = 'x'\n\ndays = \"seven\"\n", "feeds.days", 4, "whole number"),
    "bool for int": ("[source]\nretries = true\n", "source.retries", 2, "true/false"),
    "table for list": (
        '[[topics]]\nname = "a"\nkeywords = "agent"\n',
        "topics[0].keywords",
        3,
        "list",
    ),
    "topic without name": (
        TOPICS_OK + '[[topics]]\ntitle = "Robots"\nkeywords = ["robot"]\n',
        "topics[1].name",
        5,
        "required",
    ),
    "empty term": (
        TOPICS_OK + '[[topics]]\nname = "robots"\nkeywords = ["robot", "  "]\n',
        "topics[1].keywords",
        7,
        "empty term",
    ),
    "term without letters": (
        TOPICS_OK + '[[topics]]\nname = "robots"\nphrases = ["--"]\n',
        "topics[1].phrases",
        7,
        "no letters",
    ),
    "topic with no terms": (
        TOPICS_OK + '[[topics]]\nname = "robots"\ntitle = "Robots"\n',
        "topics[1]",
        5,
        "no terms",
    ),
    "topic named twice": (TOPICS_OK + TOPICS_OK, "topics[1].name", 6, "twice"),
    "bad topic name": (
        '[[topics]]\nname = "My Agents"\nkeywords = ["a"]\n',
        "topics[0].name",
        2,
        "lower-case",
    ),
    "bad list word": ('[source]\nprefer = "page"\nlist = "weekly"\n', "source.list", 3, "'weekly'"),
    "bad prefer": ('[source]\nprefer = "rss"\n', "source.prefer", 2, "'page' or 'api'"),
    "bad port": ("[smtp]\n\nport = 99999\n", "smtp.port", 3, "port"),
    "unknown subscriber topic": (
        TOPICS_OK + '[[subscribers]]\nemail = "a@example.org"\ntopics = ["robots"]\n',
        "subscribers[0].topics",
        7,
        "robots",
    ),
    "invalid TOML": ('[source]\nlist = "daily"\nprefer = \n', "source.prefer", 3, "not valid TOML"),
    # Values that parse but would quietly break things (each one passed `check` once).
    "bad api_url": ('[source]\napi_url = "huggingface.co/api"\n', "source.api_url", 2, "http(s)"),
    "no feed days": ("[feeds]\ndays = -1\n", "feeds.days", 2, "from 1 to 3650, not -1"),
    "no feed items": ("[feeds]\nmax_items = 0\n", "feeds.max_items", 2, "from 1 to"),
    "negative abstract": (
        "[email]\nabstract_chars = -5\n",
        "email.abstract_chars",
        2,
        "from 0 to",
    ),
    "zero max_bytes": ("[source]\nmax_bytes = 0\n", "source.max_bytes", 2, "from 1 to"),
    "topic with no fields": (
        '[[topics]]\nname = "a"\nkeywords = ["agent"]\nfields = []\n',
        "topics[0].fields",
        4,
        "never match",
    ),
    "negative min_upvotes": (
        '[[topics]]\nname = "a"\nkeywords = ["agent"]\nmin_upvotes = -1\n',
        "topics[0].min_upvotes",
        4,
        "from 0 to",
    ),
    "newline in topic name": (
        '[[topics]]\nname = "agents\\n"\nkeywords = ["a"]\n',
        "topics[0].name",
        2,
        "lower-case",
    ),
    "symbol term": (
        '[[topics]]\nname = "langs"\nkeywords = ["rust", "C++"]\n',
        "topics[0].keywords",
        3,
        "would match only 'c'",
    ),
    "bad subscriber address": (
        '[[subscribers]]\nemail = "not an address"\n',
        "subscribers[0].email",
        2,
        "not a valid email address",
    ),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_config_names_file_key_and_line(tmp_path: Path, case: str) -> None:
    text, key, line, words = BAD_CONFIGS[case]
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    e = err.value
    assert (e.path, e.key, e.line) == (str(path), key, line)
    assert str(e).startswith(f"{path}, line {line}, {key}: ")
    assert words in str(e)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: file not found"):
        load_config(tmp_path / "nope.toml", env={})


def test_env_overrides(tmp_path: Path) -> None:
    path = _write(tmp_path, '[source]\nlist = "daily"\n[store]\ndatabase = "file.db"\n')
    assert load_config(path, env={}).store.database == "file.db"
    env = {
        "DIGEST_DB": "/data/env.db",
        "DIGEST_API_URL": "http://127.0.0.1:9/api/daily_papers",
        "DIGEST_SMTP_PORT": "2525",
    }
    config = load_config(path, env=env)
    assert config.store.database == "/data/env.db"
    assert config.source.api_url == "http://127.0.0.1:9/api/daily_papers"
    assert config.smtp.port == 2525
    assert load_config(path, env={"DIGEST_SOURCE": "trending"}).source.url == TRENDING_URL
    url = "https://huggingface.co/papers/date/2025-03-04"
    assert load_config(path, env={"DIGEST_SOURCE_URL": url}).source.url == url
    # An empty variable is "not set", not "set to nothing".
    assert load_config(path, env={"DIGEST_DB": ""}).store.database == "file.db"
    assert load_config(None, env={}).source.api_url == API_URL


@pytest.mark.parametrize(
    "var,value,words",
    [
        ("DIGEST_SMTP_PORT", "smtp", "not a port number"),
        ("DIGEST_SMTP_PORT", "²", "not a port number"),
        ("DIGEST_SMTP_PORT", "0", "1 to 65535"),
        ("DIGEST_SOURCE", "weekly", "'weekly'"),
    ],
)
def test_bad_env_values_name_the_variable(tmp_path: Path, var: str, value: str, words: str) -> None:
    path = _write(tmp_path, '[source]\nlist = "daily"\n\n[smtp]\nport = 25\n')
    with pytest.raises(ConfigError) as err:
        load_config(path, env={var: value})
    # Blamed on the variable, not on a line of the file that is fine.
    assert err.value.key == var
    assert err.value.line is None
    assert str(err.value).startswith(f"environment, {var}: ")
    assert words in str(err.value)


@pytest.mark.parametrize("name", ["all", "feeds"])
def test_reserved_topic_names_are_refused(tmp_path: Path, name: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f'[[topics]]\nname = "{name}"\nkeywords = ["agent*"]\n')
    with pytest.raises(ConfigError, match=f"line 2, topics\\[0\\].name: topic name '{name}'"):
        load_config(path)


def test_check_points_at_a_bad_schedule_line(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from digest.cli import main

    path = tmp_path / "config.toml"
    path.write_text('[schedule]\nsend_time = "25:00"\n')
    result = CliRunner().invoke(main, ["--config", str(path), "check"])
    assert result.exit_code == 1
    assert "schedule.send_time: '25:00' is not a time like '08:00'" in result.output


def test_every_range_is_written_in_the_example() -> None:
    """The example file shows each number's range beside its default, as load_config has it."""
    from digest.config import RANGES

    text = EXAMPLE.read_text(encoding="utf-8")
    for (table, key), (least, most, open_below) in RANGES.items():
        words = f"over {least}, up to {most}" if open_below else f"{least} to {most}"
        header = re.search(rf"^(# )?\[\[?{table}\]\]?\s*$", text, re.M)
        assert header, table
        body = text[header.end() :]
        assert re.search(rf"^(# )?{key} = \S+\s+# {re.escape(words)}$", body, re.M), (table, key)


@pytest.mark.parametrize(
    "text,key,words",
    [
        ("[source]\ntimeout = nan\n", "source.timeout", "finite"),
        ("[source]\nconnect_timeout = -inf\n", "source.connect_timeout", "finite"),
        ("[source]\ntimeout = 0\n", "source.timeout", "more than 0"),
        ("[source]\ntimeout = 1" + "0" * 400 + "\n", "source.timeout", "at most 600"),
        ("[smtp]\ntimeout = -1.5\n", "smtp.timeout", "more than 0"),
        ("[feeds]\ndays = 1000000000000\n", "feeds.days", "from 1 to 3650"),
        ("[web]\nconfirm_hours = 1000000000000\n", "web.confirm_hours", "from 1 to 8760"),
        ("[schedule]\nretry_after = 0\n", "schedule.retry_after", "from 1 to 1440"),
        ('[smtp]\nsender = "a@example.org\\nBcc: b@example.org"\n', "smtp.sender", "one line"),
        ('[smtp]\nsender = "digest"\n', "smtp.sender", "not an email address"),
        ('[smtp]\nsender = "Digest <digest@@x>"\n', "smtp.sender", "not an email address"),
        ('[email]\ndomain = "a b.example"\n', "email.domain", "not a host name"),
        (
            '[email]\nsubject_prefix = "News\\r\\nBcc: x@example.org"\n',
            "email.subject_prefix",
            "one line",
        ),
        ('[feeds]\nbase_url = "javascript:alert(1)"\n', "feeds.base_url", "http(s)"),
        ('[feeds]\nbase_url = "http://127.0.0.1:99999"\n', "feeds.base_url", "http(s)"),
        ('[smtp]\nhost = "smtp://mail.example.org"\n', "smtp.host", "not a host name"),
        ('[schedule]\ntimezone = "Mars/Olympus"\n', "schedule.timezone", "unknown time zone"),
        ('[schedule]\nfetch = "61 * * * *"\n', "schedule.fetch", "crontab"),
        ('[schedule]\nsend_time = "24:00"\n', "schedule.send_time", "'24:00'"),
        ('[[topics]]\nname = "a"\nkeyword = ["agent"]\n', "topics[0].keyword", "'keywords'"),
        ('[smpt]\nhost = "x"\n', "smpt", "did you mean [smtp]?"),
        ('[[topic]]\nname = "a"\n', "topic", "did you mean [[topics]]?"),
        ('[web]\ntrusted_proxies = ["10.0.0.0/33"]\n', "web.trusted_proxies", "not an IP"),
    ],
)
def test_values_that_once_passed_are_refused_at_load(
    tmp_path: Path, text: str, key: str, words: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert err.value.key == key, str(err.value)
    assert err.value.line is not None
    assert words in str(err.value)


def test_good_senders_and_hosts_pass(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        '[smtp]\nhost = "10.0.0.5"\nsender = "Papers Digest <digest@localhost>"\n'
        '[email]\ndomain = "papers.example.org"\n'
        '[feeds]\nbase_url = "https://papers.example.org/digest/"\n',
    )
    config = load_config(path, env={})
    assert config.smtp.sender == "Papers Digest <digest@localhost>"
