"""Like-topics wired into the product (issue 15 item 1): config, vectors kept with the
papers, `digest topics test`, the email's chip, the feeds, and seeds fetched once.

Real parts: the real captures through ingest_file, the real renderer (preview), the real
feed writer, the HF test server for /api/papers/<id>, the CLI through click."""

from __future__ import annotations

import json
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path

import pytest

from digest import relevance
from digest.config import Config, FeedsConfig, SubscriberConfig, TopicConfig, load_config
from digest.deliver.likes import fetch_seeds, like_matches_for, missing_seeds
from digest.errors import ConfigError
from digest.jobs import ingest_file, preview, rebuild_vocabulary, write_feeds
from digest.source.parse import parse_api
from digest.store import Store
from digest.store import vectors as stored
from digest.store.schema import MIGRATIONS
from tests.support.cli import cli
from tests.support.config import write_config
from tests.support.hfserver import HFServer, Reply, fast_fetcher
from tests.support.paths import REAL

# Seed days (tests/data/relevance/README.md): the 16 earliest captures; one later day.
SEED_CAPTURES = sorted(REAL.glob("api-daily_papers-2024-0[34]-*.json"))
LATER = REAL / "api-daily_papers-2024-06-12.reserialised.json"
# Three speech / music / audio papers of the seed days (as tests/test_relevance.py uses).
SPEECH_SEEDS = ["2404.00656", "2403.10493", "2403.17694"]
SPEECH = TopicConfig(name="speech", title="Speech and audio", like=SPEECH_SEEDS)
READER = "reader@example.org"


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database of the seed days and one later day, stored as a fetch stores them."""
    path = tmp_path_factory.mktemp("likes") / "papers.db"
    store = Store.open(path)
    for capture in [*SEED_CAPTURES, LATER]:
        assert ingest_file(store, capture).status == "ok"
    store.close()
    return path


def copy_of(archive: Path, tmp_path: Path) -> Store:
    target = tmp_path / "papers.db"
    target.write_bytes(archive.read_bytes())
    return Store.open(target)


def later_ids() -> set[str]:
    return {p.id for p in parse_api(LATER.read_bytes(), str(LATER)).papers}


# -- config ---------------------------------------------------------------------------


def test_like_and_min_similarity_are_read_and_checked(tmp_path: Path) -> None:
    ok = write_config(tmp_path, "ok.toml", topics=[{"name": "speech", "like": SPEECH_SEEDS}])
    topic = load_config(ok).topics[0]
    assert topic.like == SPEECH_SEEDS  # a like-only topic needs no keywords
    assert topic.min_similarity == relevance.DEFAULT_MIN_SIMILARITY
    bad = write_config(
        tmp_path,
        "bad.toml",
        topics=[{"name": "speech", "like": ["2404.00656", "arXiv:24"], "min_similarity": 1.5}],
    )
    with pytest.raises(ConfigError) as e:
        load_config(bad)
    text = str(e.value)
    assert "'arXiv:24' is not an arXiv id" in text
    assert "min_similarity" in text and "1.5" in text
    typo = write_config(tmp_path, "typo.toml", topics=[{"name": "s", "likes": SPEECH_SEEDS}])
    with pytest.raises(ConfigError, match="did you mean 'like'"):
        load_config(typo)


def test_the_example_config_documents_the_keys() -> None:
    example = (Path(__file__).parent.parent / "config.example.toml").read_text()
    assert "# like = [" in example and "# min_similarity = 0.08" in example


# -- vectors kept with the papers -----------------------------------------------------


def test_every_stored_paper_has_a_vector_of_the_current_vocabulary(
    archive: Path, tmp_path: Path
) -> None:
    store = copy_of(archive, tmp_path)
    assert store.schema_version == len(MIGRATIONS)
    kept = stored.vocabulary(store)
    assert kept is not None
    version, data = kept
    vocab = relevance.Vocabulary.from_bytes(data)
    vectors = stored.vectors_of(store, version)
    assert len(vectors) == store.count_papers()
    # The vectors are the vocabulary's own (what a rebuild would make for that paper).
    sp = store.papers(ids=[SPEECH_SEEDS[0]])[0]
    assert relevance.Vector.from_bytes(vectors[sp.paper.id]) == vocab.vector(sp.paper)
    # Rebuilt (the job after backfill, `digest topics vectors --rebuild`): a new version,
    # every vector re-made with it, none of the old one left.
    made = rebuild_vocabulary(store)
    assert made == store.count_papers()
    assert stored.vocabulary(store)[0] == version + 1  # type: ignore[index]
    assert stored.vectors_of(store, version) == {}
    assert len(stored.vectors_of(store, version + 1)) == made
    store.close()


def test_the_cli_rebuilds_the_vectors(archive: Path, tmp_path: Path) -> None:
    copy_of(archive, tmp_path).close()
    cfg = write_config(tmp_path, "c.toml", store={"database": str(tmp_path / "papers.db")})
    result = cli(cfg, "topics", "vectors", "--rebuild")
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith("paper vectors made")
    store = Store.open(tmp_path / "papers.db")
    assert int(result.output.split()[0]) == store.count_papers()
    store.close()


# -- topics test, email, feeds ----------------------------------------------------------


def test_topics_test_shows_the_why_and_the_scores_under_the_threshold(
    archive: Path, tmp_path: Path
) -> None:
    copy_of(archive, tmp_path).close()
    cfg = write_config(
        tmp_path,
        "c.toml",
        store={"database": str(tmp_path / "papers.db")},
        topics=[{"name": "speech", "like": SPEECH_SEEDS}],
    )
    result = cli(cfg, "topics", "test", "speech", "--days", "100000")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    why = [line for line in lines if 'matched: like "' in line]
    assert len(why) >= 3, result.output
    assert any('"WavLLM: Towards Robust and Adaptive Spe…"' in line for line in why)
    assert "closest under min_similarity 0.08:" in result.output
    under = lines[lines.index("closest under min_similarity 0.08:") + 1 :: 2][:5]
    scores = [float(line.split()[1]) for line in under]
    assert scores and all(s < 0.08 for s in scores) and scores == sorted(scores, reverse=True)
    assert not any(line.split()[0] in SPEECH_SEEDS for line in lines if line[:1].isdigit())
    assert lines[-1].startswith(f"{len(why)} of ")


def test_a_reader_of_a_like_topic_gets_its_papers_with_the_why(
    archive: Path, tmp_path: Path
) -> None:
    store = copy_of(archive, tmp_path)
    config = Config(
        topics=[SPEECH],
        feeds=FeedsConfig(base_url="https://papers.example.org"),
        subscribers=[SubscriberConfig(READER, ["speech"])],
    )
    likes = like_matches_for(config, store, [sp.paper for sp in store.papers()])
    assert likes, "the like-topic keeps no paper"
    shown = preview(config, store, READER, None, tmp_path / "out")
    assert shown.eml is not None, shown.reason
    msg = message_from_bytes(shown.eml.read_bytes(), policy=default_policy)
    assert isinstance(msg, EmailMessage)
    text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    flat = " ".join(text.split())
    # Every paper of the email is one the like-topic keeps (the reader has no keywords),
    # never one of its seeds (the reader knows those), and each card's chip says which
    # seed it is like, and how much.
    ids = {pid for pid in likes if f"papers/{pid}" in flat}
    assert ids and not ids & set(SPEECH_SEEDS)
    cards = [pid for pid in ids if likes[pid][0].terms[0] in flat]
    assert len(cards) == min(len(ids), config.email.max_full), (cards, ids)
    assert 'like "' in msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    store.close()


def test_a_like_topic_feed_carries_its_papers_with_the_why(archive: Path, tmp_path: Path) -> None:
    store = copy_of(archive, tmp_path)
    config = Config(
        topics=[SPEECH],
        feeds=FeedsConfig(dir=str(tmp_path / "feeds"), base_url="https://papers.example.org"),
    )
    window = store.papers_in_window(config.feeds.days)
    likes = like_matches_for(config, store, [sp.paper for sp in window])
    write_feeds(config, store)
    feed = json.loads((tmp_path / "feeds" / "speech.json").read_text())
    assert [i["id"].split("#")[0].rsplit("/", 1)[-1] for i in feed["items"]] == [
        sp.paper.id for sp in window if sp.paper.id in likes
    ]
    assert all('like \\"' in json.dumps(i) or 'like "' in json.dumps(i) for i in feed["items"])
    store.close()


def test_the_web_pages_and_the_api_carry_a_like_topics_papers(
    archive: Path, tmp_path: Path
) -> None:
    # /topics/<name>, /?topic=, and /api/papers?topic= show what the feeds and the email
    # show: a like-only topic's papers, each chip with its why; never a seed.
    import html
    import re

    import httpx

    from digest.config import StoreConfig
    from digest.web.app import create_app
    from tests.support.webserver import serving

    store = copy_of(archive, tmp_path)
    config = Config(
        store=StoreConfig(database=str(store.path)),
        topics=[SPEECH],
        feeds=FeedsConfig(dir=str(tmp_path / "feeds"), base_url="https://papers.example.org"),
    )
    papers = [sp.paper for sp in store.papers()]
    likes = like_matches_for(config, store, papers)
    store.close()
    assert likes and not set(likes) & set(SPEECH_SEEDS)
    with serving(create_app(config)) as site:
        topic_page = httpx.get(f"{site}/topics/speech").text
        api = httpx.get(f"{site}/api/papers", params={"topic": "speech", "limit": 100}).json()
    shown = set(re.findall(r'href="https://huggingface.co/papers/([0-9.]+)"', topic_page))
    assert shown == set(likes)
    api_ids = {p["id"] for p in api["papers"]}
    assert api_ids == set(likes)
    assert all(p["topics"] == ["speech"] for p in api["papers"])
    # The chip's title says why: the nearest seed and how alike.
    some = next(iter(likes))
    assert f'title="matched: {likes[some][0].terms[0]}"' in html.unescape(topic_page)


# -- seeds not in the archive: fetched once, never at send time -------------------------


def test_an_unknown_seed_is_fetched_once_then_used_offline(
    archive: Path, tmp_path: Path, hf_server: HFServer
) -> None:
    store = copy_of(archive, tmp_path)
    # A real paper of a later capture, not in this archive: the API's /api/papers/<id>
    # answers with the paper object, as a list item's "paper" is.
    later = json.loads(
        (REAL / "api-daily_papers-2025-03-04.reserialised.json").read_text(encoding="utf-8")
    )
    item = later[0]["paper"]
    seed = item["id"]
    assert not store.papers(ids=[seed])
    hf_server.route(f"/api/papers/{seed}", Reply.json(item))
    hf_server.route("/api/papers/2401.99999", Reply(b"not found", status=404))
    topic = TopicConfig(name="later", like=[seed, "2401.99999"], min_similarity=0.0)
    config = Config(topics=[topic])
    config = Config(
        topics=[topic],
        source=type(config.source)(api_url=hf_server.url("/api/daily_papers")),
    )
    assert missing_seeds(config, store) == [seed, "2401.99999"]
    fetcher = fast_fetcher(retries=0)
    problems = fetch_seeds(config, store, fetcher, [seed, "2401.99999"])
    assert len(problems) == 1 and "2401.99999" in problems[0] and "404" in problems[0]
    assert missing_seeds(config, store) == ["2401.99999"]
    assert stored.seed_papers(store)[seed].title == " ".join(item["title"].split())
    # Once: a second call asks only for the one still missing.
    fetch_seeds(config, store, fetcher, [seed, "2401.99999"])
    assert len(hf_server.requests_to(f"/api/papers/{seed}")) == 1
    hf_server.reset_log()
    likes = like_matches_for(config, store, [sp.paper for sp in store.papers()])
    assert likes and all(m[0].topic == "later" for m in likes.values())
    assert hf_server.requests == []  # matching read only the database
    store.close()


def test_check_says_which_seeds_are_missing(archive: Path, tmp_path: Path) -> None:
    copy_of(archive, tmp_path).close()
    cfg = write_config(
        tmp_path,
        "c.toml",
        store={"database": str(tmp_path / "papers.db")},
        topics=[{"name": "speech", "like": [*SPEECH_SEEDS, "2401.99999"]}],
    )
    result = cli(cfg, "check")
    assert result.exit_code == 0, result.output
    assert (
        "seeds:     4 seed papers, 1 neither in the archive nor fetched (2401.99999): "
        "run `digest topics like`" in result.output
    )


def test_a_backfill_ends_with_a_vocabulary_of_the_whole_archive(
    tmp_path: Path, hf_server: HFServer
) -> None:
    from datetime import date

    from digest.jobs import backfill
    from tests.support.hfserver import local_config

    days = [date(2024, 3, 25), date(2024, 3, 26), date(2024, 3, 27)]
    for day in days:
        body = (REAL / f"api-daily_papers-{day.isoformat()}.json").read_bytes()
        hf_server.route("/api/daily_papers", Reply(body), query={"date": str(day)})
    store = Store.open(tmp_path / "papers.db")
    assert ingest_file(store, SEED_CAPTURES[0]).status == "ok"  # a first, small vocabulary
    first = stored.vocabulary(store)
    assert first is not None
    result = backfill(
        local_config(hf_server), store, fast_fetcher(), days[0], days[-1], today=date(2024, 4, 5)
    )
    assert not result.failed and sum(r.new for r in result.runs) > 0
    version, data = stored.vocabulary(store)  # type: ignore[misc]
    assert version > first[0]
    assert relevance.Vocabulary.from_bytes(data).documents == store.count_papers()
    assert len(stored.vectors_of(store, version)) == store.count_papers()
    store.close()
