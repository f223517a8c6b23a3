"""Subscribers in the config and the database, their tokens, the ledger, and the CLI."""

from __future__ import annotations

import sqlite3
from datetime import date
from pathlib import Path

import pytest
from click.testing import CliRunner

from digest.cli import main
from digest.config import Config, SubscriberConfig, TopicConfig, load_config
from digest.errors import ConfigError, SubscriberError
from digest.store import Store
from digest.store.meta import secret_key
from digest.store.readers import (
    Ledger,
    active_subscribers,
    add_subscriber,
    list_subscribers,
    remove_subscriber,
)
from digest.tokens import (
    CONFIRM,
    CSRF,
    PREFERENCES,
    UNSUBSCRIBE,
    make_token,
    sign,
    unsign,
    verify_token,
)
from tests.support.tokens import old_token

TOPICS = [
    TopicConfig(name="agents", keywords=["agent*"]),
    TopicConfig(name="vision", keywords=["image", "video"]),
]
CONFIG_TOML = """
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
"""


def config(*subs: SubscriberConfig) -> Config:
    return Config(topics=TOPICS, subscribers=list(subs), path="config.toml")


def test_add_list_remove(store: Store) -> None:
    cfg = config(SubscriberConfig("boss@example.org", ["vision"]))
    add_subscriber(cfg, store, "ada@Example.ORG", ["agents", "vision"])
    add_subscriber(cfg, store, "bob@example.org")
    rows = {r.email: r for r in list_subscribers(cfg, store)}
    assert set(rows) == {"boss@example.org", "ada@example.org", "bob@example.org"}
    assert rows["ada@example.org"].topics == ("agents", "vision")  # domain normalised
    assert rows["boss@example.org"].source == "config"
    remove_subscriber(cfg, store, "ADA@example.org")  # the same person, any case
    active = {s.email for s in active_subscribers(cfg, store)}
    assert active == {"boss@example.org", "bob@example.org"}
    # Re-adding re-activates with the new topics.
    add_subscriber(cfg, store, "ada@example.org", ["agents"])
    ada = next(s for s in active_subscribers(cfg, store) if s.email == "ada@example.org")
    assert ada.topics == ("agents",)


@pytest.mark.parametrize("address", ["not-an-address", "two@@example.org", "a@b@c", ""])
def test_invalid_address_error_names_it(store: Store, address: str) -> None:
    with pytest.raises(SubscriberError, match=f"{address!r} is not a valid email address"):
        add_subscriber(config(), store, address)


def test_unknown_topic_error_names_it(store: Store) -> None:
    with pytest.raises(SubscriberError, match=r"no topic named 'robots'.*agents, vision"):
        add_subscriber(config(), store, "ada@example.org", ["agents", "robots"])
    assert list_subscribers(config(), store) == []


def test_config_address_is_validated_with_its_key(store: Store) -> None:
    cfg = config(SubscriberConfig("ok@example.org"), SubscriberConfig("nope at example"))
    with pytest.raises(ConfigError, match=r"subscribers\[1\]\.email.*'nope at example'"):
        active_subscribers(cfg, store)


def test_config_subscriber_cannot_be_added_or_removed_here(store: Store) -> None:
    cfg = config(SubscriberConfig("boss@example.org"))
    with pytest.raises(SubscriberError, match=r"boss@example\.org is already a subscriber"):
        add_subscriber(cfg, store, "boss@example.org")
    with pytest.raises(SubscriberError, match=r"boss@example\.org is a subscriber in config"):
        remove_subscriber(cfg, store, "boss@example.org")
    with pytest.raises(SubscriberError, match=r"nobody@example\.org is not a subscriber"):
        remove_subscriber(cfg, store, "nobody@example.org")


def test_unsubscribed_record_silences_a_config_entry(store: Store) -> None:
    # The later web issue records unsubscribes through the link; a config file must not
    # override the person's wish.
    store.db.execute(
        "INSERT INTO subscribers (email, status, created, updated) "
        "VALUES ('boss@example.org', 'unsubscribed', 'x', 'x')"
    )
    cfg = config(SubscriberConfig("boss@example.org"))
    assert active_subscribers(cfg, store) == []
    assert [r.status for r in list_subscribers(cfg, store)] == ["unsubscribed"]


def test_tokens_verify_and_resist_tampering(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DIGEST_SECRET_KEY", raising=False)
    key = secret_key(store)
    assert len(key) == 64 and secret_key(store) == key  # generated once, then kept
    token = make_token(key, "ada@example.org")
    assert verify_token(key, token) == "ada@example.org"
    forged = make_token(b"another key", "ada@example.org")
    assert verify_token(key, forged) is None
    _payload, mac = token.split(".")
    other = make_token(key, "eve@example.org").split(".")[0]
    assert verify_token(key, f"{other}.{mac}") is None  # eve's address, ada's MAC
    assert verify_token(key, "garbage") is None
    sub = active_subscribers(config(SubscriberConfig("ada@example.org")), store)[0]
    assert verify_token(key, sub.token) == "ada@example.org"
    assert verify_token(key, sub.preferences_token, PREFERENCES) == "ada@example.org"
    # One kind is never another: the salts differ.
    assert verify_token(key, sub.token, PREFERENCES) is None
    assert verify_token(key, sub.preferences_token, UNSUBSCRIBE) is None
    assert unsign(key, CSRF, sub.token) is None and unsign(key, CONFIRM, sub.token) is None
    # A token holding something that is not an address is refused, even when signed.
    for junk in ("csrf\x00\r\nbcc: x@evil.org", "not-an-address", ["a@example.org"]):
        assert verify_token(key, sign(key, PREFERENCES, junk), PREFERENCES) is None
    # DIGEST_SECRET_KEY is read once, by load_config from the env it is given; the key
    # then travels in the Config, and os.environ is not looked at again.
    monkeypatch.setenv("DIGEST_SECRET_KEY", "not-this-one")
    configured = load_config(None, env={"DIGEST_SECRET_KEY": "from-the-environment"})
    assert secret_key(store, configured.secret_key) == b"from-the-environment"
    assert secret_key(store) == key  # unset: the database's


def test_old_unsubscribe_links_still_unsubscribe_and_nothing_else(store: Store) -> None:
    key = secret_key(store)
    assert verify_token(key, old_token(key, "ada@example.org")) == "ada@example.org"
    # Old links are for unsubscribing only, never to change preferences.
    assert verify_token(key, old_token(key, "ada@example.org"), PREFERENCES) is None
    # The old CSRF token was the same HMAC over "csrf\0<cookie>": not an address.
    assert verify_token(key, old_token(key, "csrf\x00\r\nbcc: x@evil.org")) is None
    assert verify_token(key, old_token(b"other key", "ada@example.org")) is None


def test_secret_key_survives_reopening(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DIGEST_SECRET_KEY", raising=False)
    first = Store.open(tmp_path / "k.db")
    key = secret_key(first)
    first.close()
    again = Store.open(tmp_path / "k.db")
    assert secret_key(again) == key
    again.close()


def test_ledger_never_downgrades_sent(store: Store) -> None:
    day = date(2024, 8, 1)
    ledger = Ledger(store)
    ledger.queue(day, ["a@example.org", "b@example.org"])
    ledger.sent(day, "a@example.org", "250 ok", 1, "<m1@x>")
    ledger.failed(day, "a@example.org", "550 no", 1, "refused")  # too late: already sent
    ledger.queue(day, ["a@example.org"])  # a re-run's queue keeps the row as it is
    rows = ledger.of_day(day)
    assert rows["a@example.org"].status == "sent"
    assert rows["a@example.org"].reply == "250 ok"
    assert rows["a@example.org"].sent is not None
    assert rows["b@example.org"].status == "queued"
    with pytest.raises(sqlite3.IntegrityError):
        store.db.execute(
            "INSERT INTO deliveries (email, day, status, queued) VALUES (?, ?, 'queued', 'x')",
            ["A@EXAMPLE.ORG", day.isoformat()],  # the same person and day: one row only
        )


def test_cli_add_list_remove(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(CONFIG_TOML.format(db=tmp_path / "cli.db"))
    runner = CliRunner()

    def digest(*args: str) -> tuple[int, str, str]:
        result = runner.invoke(main, ["--config", str(cfg), *args])
        return result.exit_code, result.stdout, result.stderr

    code, out, _ = digest("subscribers", "add", "ada@example.org", "--topics", "agents,vision")
    assert code == 0 and "subscribed ada@example.org: agents, vision" in out
    code, out, err = digest("subscribers", "list")
    lines = out.splitlines()
    assert "boss@example.org\tactive\tconfig\tvision\tdaily\t-\tnever sent" in lines
    assert "ada@example.org\tactive\tdatabase\tagents,vision\tdaily\t-\tnever sent" in lines
    assert "2 active of 2 subscribers" in err
    code, out, _ = digest("subscribers", "remove", "ada@example.org")
    assert code == 0 and "unsubscribed ada@example.org" in out
    code, out, err = digest("subscribers", "list")
    assert "ada@example.org\tunsubscribed\tdatabase\tagents,vision\tdaily" in out
    assert "1 active of 2 subscribers" in err

    code, _, err = digest("subscribers", "add", "not-an-address")
    assert code == 1 and "'not-an-address' is not a valid email address" in err
    code, _, err = digest("subscribers", "add", "cy@example.org", "--topics", "agents,robots")
    assert code == 1 and "no topic named 'robots'" in err
    assert "Traceback" not in err
