"""Test helper: wait for the web front's background queue of sign-up mails to drain."""

from __future__ import annotations

import time

from digest.config import Config
from digest.store import Store
from digest.store.signups import unsent_mails


def wait_mail_queue(config: Config, timeout: float = 20.0) -> None:
    """Return once no sign-up mail is queued or being sent; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        store = Store.open(config.store.database)
        try:
            left = unsent_mails(store)
        finally:
            store.close()
        if left == 0:
            return
        assert time.monotonic() < deadline, f"{left} sign-up mails still unsent"
        time.sleep(0.02)
