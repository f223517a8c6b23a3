"""Why a paper is in a topic, or was left out: the matched term in its context, and what
each filter removed (real papers of 2025-04-23, where "TTS" means test-time scaling in one
abstract and "ASR" speech recognition in another)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner
from selectolax.lexbor import LexborHTMLParser as HTMLParser

from digest.cli import main
from digest.config import Config, FeedsConfig, TopicConfig
from digest.jobs import ingest_file
from digest.models import Paper, Subscriber
from digest.render.email import DigestRenderer
from digest.store import Store
from digest.topics import explain_topic, term_context
from tests.support.captures import parse_capture
from tests.support.mail import bodies, parsed
from tests.support.paths import REAL

CAPTURE = REAL / "api-daily_papers-2025-04-23.reserialised.json"
SPEECH = TopicConfig(name="speech", keywords=["TTS", "ASR"], exclude=["test-time scaling"])
TEST_TIME = "2504.16084"  # "Test-Time Scaling (TTS)"
LIVECC = "2504.16030"  # "automatic speech recognition (ASR) transcripts", 5 upvotes


def test_term_context_finds_the_words_as_the_matcher_does() -> None:
    paper = Paper(id="1", title="t", abstract="We show that test-time scaling (TTS) improves X.")
    assert term_context(paper, "TTS") == "We show that test-time scaling (TTS) improves X."
    assert "test-time scaling" in term_context(paper, "test time scal*")
    long = Paper(id="2", title="t", abstract="word " * 30 + "the TTS here " + "word " * 30)
    got = term_context(long, "tts", width=20)
    assert got.startswith("… ") and got.endswith(" …") and "the TTS here" in got
    assert len(got) < 60
    assert term_context(paper, "speech") == ""  # not there: no context, no error


def test_explain_topic_counts_each_filter() -> None:
    papers = list(parse_capture(CAPTURE).papers)
    taken, removed = explain_topic(SPEECH, papers)
    assert LIVECC in {p.id for p, _ in taken}
    [why] = [r for r in removed if r.paper.id == TEST_TIME]
    assert why.filter == "exclude" and why.terms == ("TTS",)
    assert why.detail.startswith("exclude 'test-time scaling': ")
    assert "Test-Time Scaling (TTS)" in why.detail
    strict = TopicConfig(name="speech", keywords=["TTS", "ASR"], min_upvotes=6, has_code=True)
    taken, removed = explain_topic(strict, papers)
    by_id = {r.paper.id: r for r in removed}
    assert by_id[TEST_TIME].filter == "has_code"  # no repository: the first filter to say no
    assert by_id[LIVECC].filter == "min_upvotes" and "5 upvotes" in by_id[LIVECC].detail
    assert not taken


def test_cli_topics_test_shows_context_and_filter_counts(tmp_path: Path) -> None:
    db = tmp_path / "papers.db"
    store = Store.open(db)
    try:
        ingest_file(store, CAPTURE)
    finally:
        store.close()
    config = tmp_path / "config.toml"
    config.write_text(
        f'[store]\ndatabase = "{db}"\n\n'
        '[[topics]]\nname = "speech"\nkeywords = ["TTS", "ASR"]\n'
        'exclude = ["test-time scaling"]\n'
    )
    result = CliRunner().invoke(main, ["--config", str(config), "topics", "test", "speech"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "ASR: … cheap automatic speech recognition (ASR) transcripts" in out
    taken, removed = out.split("removed by the filters:\n")
    assert LIVECC in taken and TEST_TIME not in taken
    assert TEST_TIME in removed
    assert "removed by exclude 'test-time scaling': " in removed
    assert out.splitlines()[-1].endswith("; the filters removed 1 more (exclude 1)")


def test_email_chip_carries_the_why() -> None:
    papers = list(parse_capture(CAPTURE).papers)
    from datetime import UTC, date, datetime

    from digest.models import StoredPaper

    stored = [StoredPaper(p, datetime(2025, 4, 23, 8, tzinfo=UTC)) for p in papers]
    config = Config(topics=[SPEECH], feeds=FeedsConfig(base_url="https://papers.example.org"))
    message = DigestRenderer(config, stored, date(2025, 4, 23)).render(
        Subscriber("r@example.net", ("speech",), "t")
    )
    assert message is not None
    _, page = bodies(parsed(message))
    card = HTMLParser(page).css_first(f'[id="p-{LIVECC}"]')
    assert card is not None
    chip = card.css_first(".matched")
    assert chip.text() == "matched: ASR"
    assert "ASR: … cheap automatic speech recognition (ASR) transcripts" in (
        chip.attributes.get("title") or ""
    )


def test_feed_item_carries_the_why() -> None:
    from datetime import UTC, datetime

    from digest.models import StoredPaper, TopicMatch
    from digest.render.feed import item_html

    [paper] = [p for p in parse_capture(CAPTURE).papers if p.id == LIVECC]
    body = item_html(StoredPaper(paper, datetime.now(UTC)), TopicMatch("speech", ("ASR",)))
    assert "<p>Matched: ASR</p>" in body
    assert "<p>ASR: … cheap automatic speech recognition (ASR) transcripts" in body
