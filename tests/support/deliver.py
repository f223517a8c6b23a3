"""Sends of a fixed day with a stand-in renderer and no sleeping, for the delivery tests."""

from __future__ import annotations

from datetime import date
from typing import Any

from digest.config import Config
from digest.deliver.digest import SendReport, send_digests
from digest.store import Store
from tests.support.smtpserver import simple_message

DAY = date(2024, 8, 1)


def send_day(config: Config, store: Store, day: date = DAY, **kw: Any) -> SendReport:
    """send_digests for `day`; by default each reader gets simple_message and backoff
    waits return at once. `kw` (render, sleep, ...) go to send_digests."""
    kw.setdefault("render", lambda sub: simple_message(sub, day))
    kw.setdefault("sleep", lambda _s: None)
    return send_digests(config, store, day, **kw)
