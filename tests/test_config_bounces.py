"""[bounces] and the new [smtp] keys: checked at load, secrets from the environment or a
file (never the config text), `digest check` saying what is set up."""

from __future__ import annotations

from pathlib import Path

import pytest

from digest.config import ConfigProblems, load_config
from tests.support.cli import cli
from tests.support.config import write_config


@pytest.mark.parametrize(
    ("section", "keys", "where", "words"),
    [
        ("bounces", {"imap_security": "ssl"}, "bounces.imap_security", "'tls', 'starttls'"),
        ("bounces", {"imap_host": "mail.example.org"}, "bounces.imap_user", "needs its user"),
        ("bounces", {"imap_port": 0}, "bounces.imap_port", "1 to 65535"),
        ("bounces", {"poll_minutes": 0}, "bounces.poll_minutes", "1 to 1440"),
        ("bounces", {"imap_host": "a b"}, "bounces.imap_host", "not a host name"),
        ("bounces", {"folder": "Bounces\r\nA1 DELETE INBOX"}, "bounces.folder", "one line"),
        ("bounces", {"password": "x"}, "bounces.password", "DIGEST_BOUNCES_PASSWORD"),
        ("bounces", {"password_file": "/nonexistent"}, "bounces.password_file", "not found"),
        ("smtp", {"max_bounces": 0}, "smtp.max_bounces", "1 to 100"),
        ("smtp", {"dkim_selector": "s1"}, "smtp.dkim_key_file", "needs both"),
    ],
)
def test_bad_values_are_refused(
    tmp_path: Path, section: str, keys: dict[str, object], where: str, words: str
) -> None:
    path = write_config(tmp_path, **{section: keys})  # type: ignore[arg-type]
    with pytest.raises(ConfigProblems) as caught:
        load_config(path, env={})
    assert where in str(caught.value) and words in str(caught.value), str(caught.value)


def test_secrets_come_from_the_environment_or_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "webhook.secret"
    secret.write_text("from-a-file\n")
    path = write_config(
        tmp_path,
        bounces={
            "imap_host": "127.0.0.1",
            "imap_user": "bounces",
            "webhook_secret_file": str(secret),
        },
    )
    config = load_config(path, env={"DIGEST_BOUNCES_PASSWORD": "imap-pw"})
    assert config.bounces.password == "imap-pw"
    assert config.bounces.webhook_secret == "from-a-file"
    assert "imap-pw" not in repr(config) and "from-a-file" not in repr(config)
    env = {"DIGEST_BOUNCES_WEBHOOK_SECRET": "from-env", "DIGEST_BOUNCES_IMAP_PORT": "1143"}
    config = load_config(path, env=env)
    assert (config.bounces.webhook_secret, config.bounces.imap_port) == ("from-env", 1143)


def test_check_says_what_is_set_up(tmp_path: Path) -> None:
    plain = cli(write_config(tmp_path, "plain.toml"), "check")
    assert plain.exit_code == 0, plain.output
    assert "bounces:   no mailbox" in plain.stdout and "webhook off" in plain.stdout
    bad_key = tmp_path / "dkim.pem"
    bad_key.write_text("not a key\n")
    path = write_config(
        tmp_path,
        smtp={"dkim_key_file": str(bad_key), "dkim_selector": "s1"},
        bounces={"imap_host": "127.0.0.1", "imap_user": "bounces", "imap_security": "none"},
    )
    broken = cli(path, "check")
    assert broken.exit_code == 1 and "dkim.pem: not a usable DKIM private key" in broken.stderr
