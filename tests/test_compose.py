"""compose.yaml passes a DIGEST_* variable only as the user set it, so a mounted
config.toml keeps its keys (a TLS port, the public base URL, the sender)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml  # PyYAML, which podman-compose (a test dependency) reads compose files with

from digest.config import ENV_OVERRIDES, load_config
from tests.support.paths import ROOT


def compose_environment() -> dict[str, str]:
    data = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))
    env = data["services"]["papers-digest"]["environment"]
    assert isinstance(env, dict)
    return {str(k): str(v) for k, v in env.items()}


def interpolate(value: str, user_env: dict[str, str]) -> str:
    """`${NAME:-default}` as compose reads it: the user's value, else the default."""
    return re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: user_env.get(m[1]) or m[2], value)


def test_compose_gives_no_defaults_that_would_beat_the_file() -> None:
    env = compose_environment()
    assert {"DIGEST_BASE_URL", "DIGEST_SOURCE", "DIGEST_SMTP_PORT", "DIGEST_SMTP_SENDER"} <= set(
        env
    )
    for name, value in env.items():
        # `${NAME:-}`: the user's value, or empty (unset) when they gave none.
        assert value == f"${{{name}:-}}", f"{name}: {value!r} gives a default"
        assert re.fullmatch(r"DIGEST_[A-Z_]+", name)


def test_empty_variables_leave_the_config_file_alone(tmp_path: Path) -> None:
    """What the container gets when the user set none of the variables: all empty."""
    password = tmp_path / "password"
    password.write_text("s3cret\n", encoding="utf-8")
    config = tmp_path / "config.toml"
    config.write_text(
        '[source]\nlist = "trending"\n'
        '[feeds]\nbase_url = "https://papers.example.org"\n'
        '[smtp]\nhost = "mail.example.org"\nport = 465\nsecurity = "tls"\n'
        f'user = "digest"\nsender = "digest@example.org"\npassword_file = "{password}"\n',
        encoding="utf-8",
    )
    # Interpolated as compose does, for a user who set none of the variables.
    env = {name: interpolate(value, {}) for name, value in compose_environment().items()}
    assert set(env) >= {"DIGEST_SMTP_PASSWORD"}
    secrets = {"DIGEST_SMTP_PASSWORD", "DIGEST_BOUNCES_PASSWORD", "DIGEST_BOUNCES_WEBHOOK_SECRET"}
    assert set(env) - secrets <= set(ENV_OVERRIDES)
    loaded = load_config(config, env=env)
    assert loaded.source.list == "trending"
    assert loaded.feeds.base_url == "https://papers.example.org"
    assert loaded.smtp.port == 465
    assert loaded.smtp.sender == "digest@example.org"
    assert loaded.smtp.host == "mail.example.org"


def test_an_empty_password_variable_does_not_hide_the_password_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    password = tmp_path / "password"
    password.write_text("s3cret\n", encoding="utf-8")
    config = tmp_path / "config.toml"
    config.write_text(f'[smtp]\nuser = "u"\npassword_file = "{password}"\n', encoding="utf-8")
    # compose's `${DIGEST_SMTP_PASSWORD:-}`; the secret comes from the env load_config is
    # given, once, never from os.environ later.
    monkeypatch.setenv("DIGEST_SMTP_PASSWORD", "not-this-one")
    assert load_config(config, env={"DIGEST_SMTP_PASSWORD": ""}).smtp.password == "s3cret"
    loaded = load_config(config, env={"DIGEST_SMTP_PASSWORD": "from-env"})
    assert loaded.smtp.password == "from-env" and "from-env" not in repr(loaded)


def test_a_set_variable_still_overrides_the_file(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[smtp]\nport = 465\n", encoding="utf-8")
    assert load_config(config, env={"DIGEST_SMTP_PORT": "2525"}).smtp.port == 2525
