"""Feeds built from three real captures: the config, the store, what each feed must hold."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from digest.config import Config, FeedsConfig, TopicConfig
from digest.jobs import ingest_file
from digest.models import StoredPaper
from digest.store import Store
from digest.store.browse import rising
from digest.topics import match_topics
from tests.support.paths import REAL

CAPTURES = [
    REAL / "api-daily_papers-2024-03-12.json",
    REAL / "api-daily_papers-2025-03-04.reserialised.json",
    REAL / "api-daily_papers-2025-10-03.reserialised.json",
]
TOPICS = [
    TopicConfig(name="agents", title="LLM agents", keywords=["agent*", "tool use"]),
    TopicConfig(name="vision", keywords=["image*", "video*", "vision"], exclude=["survey"]),
    TopicConfig(name="nothing", keywords=["zzyzx-no-such-word"]),  # an empty feed
]


def feed_config(tmp_path: Path, **feeds: Any) -> Config:
    """A config with TOPICS whose feeds go to tmp_path/feeds."""
    feeds.setdefault("dir", str(tmp_path / "feeds"))
    feeds.setdefault("base_url", "https://papers.example.org/")
    return Config(feeds=FeedsConfig(**feeds), topics=list(TOPICS))


def fill_store(store: Store) -> None:
    """Store the three CAPTURES."""
    for capture in CAPTURES:
        assert ingest_file(store, capture).status == "ok"


def expected_items(config: Config, store: Store) -> dict[str, list[StoredPaper]]:
    """Feed name -> the stored papers it must hold, in order, computed from the database."""
    window = store.papers_in_window(config.feeds.days)
    limit = config.feeds.max_items
    out = {"all": window[:limit]}
    matches = match_topics([sp.paper for sp in window], config.topics)
    for topic in config.topics:
        hits = [
            sp for sp in window if any(m.topic == topic.name for m in matches.get(sp.paper.id, []))
        ]
        out[topic.name] = hits[:limit]
    # The upvote snapshots' own order (store.browse.rising; tests/test_web_rising.py
    # checks it against gains worked out by hand).
    out["rising"] = [r.paper for r in rising(store, limit=limit)]
    return out


def guid(feed: str, sp: StoredPaper) -> str:
    """The item identity a feed must use: the arXiv URL in all.*, plus the topic elsewhere."""
    url = sp.paper.arxiv_url
    if feed == "rising":
        return f"{url}#rising"
    return url if feed == "all" else f"{url}#topic-{feed}"
