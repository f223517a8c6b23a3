"""Shared fixtures: a fresh store, the real servers (SMTP, Hugging Face, the web front with
its sign-up flow), a config builder. The helpers behind them are in tests/support/."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from digest.config import Config
from digest.store import Store
from digest.web.app import create_app
from tests.support.chromium import CHROMIUM, FLAGS
from tests.support.config import write_config
from tests.support.hfserver import HFServer
from tests.support.smtpserver import SmtpServer
from tests.support.subscribe import SITES, site_config
from tests.support.webserver import serving


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A fresh SQLite store in the test's folder."""
    s = Store.open(tmp_path / "test.db")
    yield s
    s.close()


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    """A started aiosmtpd server on 127.0.0.1 (tests.support.smtpserver)."""
    with SmtpServer() as server:
        yield server


@pytest.fixture
def hf_server() -> Iterator[HFServer]:
    """A started HFServer on a free port of 127.0.0.1, stopped after the test."""
    with HFServer() as server:
        yield server


@pytest.fixture
def config_file(tmp_path: Path) -> Callable[..., Path]:
    """write_config in the test's folder: config_file(store={...}, smtp={...}) -> path."""

    def build(name: str = "config.toml", **sections: Any) -> Path:
        return write_config(tmp_path, name, **sections)

    return build


@pytest.fixture
def config(tmp_path: Path, smtp: SmtpServer) -> Config:
    """The web front's config: KNOWN in the config file, mail to `smtp`."""
    return site_config(tmp_path, smtp)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium (Debian's, through Playwright), shared by a module's tests."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def site(config: Config) -> Iterator[str]:
    """The web front of `config` under a real uvicorn; its base URL."""
    Store.open(config.store.database).close()
    with serving(create_app(config)) as base:
        SITES[base] = config
        yield base
