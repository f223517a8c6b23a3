"""The jobs a user runs or the scheduler fires: each one a library call, used by the CLI too.

fetch_job: fetch + store (+ feeds). send_job: the day's emails. run_job: both, in that order.
"""

from __future__ import annotations

from digest.config import Config
from digest.ingest import ingest, ingest_file, make_fetcher
from digest.models import RunResult
from digest.store import Store


def fetch_job(config: Config, *, from_path: str | None = None, url: str | None = None) -> RunResult:
    """Return the RunResult of one ingest run (failures are recorded, not raised)."""
    store = Store.open(config.store.database)
    try:
        if from_path:
            return ingest_file(store, from_path)
        fetcher = make_fetcher(config)
        with fetcher.client:
            return ingest(config, store, fetcher, url=url)
    finally:
        store.close()
