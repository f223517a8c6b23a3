"""The email's budget on the three heavy real cases: every HTML part under 90 KB, every
paper of the reader counted (in full, as a line, or in "N more on the web"), the best
ones first, an overview at the top and a subject of one line within 120 characters."""

from __future__ import annotations

import re
from datetime import date

import pytest
from selectolax.lexbor import LexborHTMLParser as HTMLParser

from digest.config import Config, FeedsConfig, SmtpConfig
from digest.models import Paper, Subscriber, TopicMatch
from digest.ranking import Candidate, rank
from digest.render.email import SUBJECT_MAX, DigestRenderer, subject_line
from digest.topics import match_topics
from tests.support.budget import EDITION_DAY, THREE_TOPICS, budget_cases
from tests.support.mail import bodies, parsed

HTML_LIMIT = 90 * 1024
CASES = budget_cases()
READERS = {"no topics": (), "three topics": ("llm", "agents", "vision")}


def config() -> Config:
    return Config(
        topics=THREE_TOPICS,
        feeds=FeedsConfig(base_url="https://papers.example.org"),
        smtp=SmtpConfig(sender="Daily Papers <digest@papers.example.org>"),
    )


@pytest.fixture(scope="module")
def renderers() -> dict[str, DigestRenderer]:
    return {name: DigestRenderer(config(), papers, EDITION_DAY) for name, papers in CASES.items()}


def counted(page: str) -> tuple[list[str], list[str], int]:
    """(ids in full, ids as lines, papers said to be on the web) from the HTML part."""
    tree = HTMLParser(page)
    full = [n.attributes["id"] for n in tree.css("div.paper")]
    lines = [n.attributes["id"] for n in tree.css("p.line")]
    more = sum(int(re.match(r"\d+", n.text()).group(0)) for n in tree.css("p.more a"))
    return [i[2:] for i in full if i], [i[2:] for i in lines if i], more


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("case", CASES)
def test_every_email_within_budget_and_every_paper_counted(
    renderers: dict[str, DigestRenderer], case: str, reader: str
) -> None:
    papers = CASES[case]
    topics = READERS[reader]
    message = renderers[case].render(Subscriber("r@example.net", topics, "tok"))
    assert message is not None
    msg = parsed(message)
    text, page = bodies(msg)
    assert len(page.encode("utf-8")) < HTML_LIMIT, f"{case}, {reader}: {len(page)} bytes"
    # What the reader should get, counted apart from the renderer.
    if topics:
        matched = match_topics([sp.paper for sp in papers], THREE_TOPICS)
        mine = {pid for pid, ms in matched.items() if {m.topic for m in ms} & set(topics)}
    else:
        mine = {sp.paper.id for sp in papers}
    full, lines, more = counted(page)
    assert len(full) + len(lines) + more == len(mine)
    assert set(full) | set(lines) <= mine and len(set(full + lines)) == len(full + lines)
    # The defaults: 12 in full, 40 as lines, the rest on the web.
    assert len(full) == min(12, len(mine)) and len(lines) == min(40, len(mine) - len(full))
    if case == "heaviest day":
        assert more == 0 and "more on the web" not in page
        return
    assert more > 0 and f"{more} more on the web" in page
    # The same count in the text part, and the links to the day's web page.
    text = " ".join(text.split())
    assert f"{more} more on the web: https://papers.example.org/archive/2026-12-01" in text
    hrefs = [a.attributes.get("href") or "" for a in HTMLParser(page).css("p.more a")]
    assert all(h.startswith("https://papers.example.org/archive/2026-12-01") for h in hrefs)
    if topics:
        assert any("?topic=" in h for h in hrefs)
    # The overview: per topic its count and its top titles, linking into the page.
    overview = HTMLParser(page).css_first("div.overview")
    assert overview is not None
    anchors = [a.attributes.get("href") or "" for a in overview.css("a")]
    inside = [a for a in anchors if a.startswith("#p-")]
    assert inside and {a[3:] for a in inside} <= set(full) | set(lines)
    assert all(
        a.startswith("https://papers.example.org/archive/") for a in anchors if a not in inside
    )
    # The subject names the best paper, on one line, within the limit.
    subject = str(message["Subject"])  # as set; parsed back it must read the same
    assert "\n" not in subject and len(subject) <= SUBJECT_MAX
    assert str(msg["Subject"]) == subject
    best = HTMLParser(page).css_first("div.paper h3.title a").text()
    quoted = subject.split('"')[1].removesuffix("...")
    assert best.startswith(quoted) and f"and {len(mine) - 1} more" in subject


def test_the_best_paper_comes_first() -> None:
    """The rank: topic match strength, then upvotes, then freshness."""
    strong = Paper(id="1", title="a", upvotes=10)
    popular = Paper(id="2", title="b", upvotes=12)
    old = Paper(id="3", title="c", upvotes=12)
    three = (TopicMatch("t", ("x", "y", "z")),)
    one = (TopicMatch("t", ("x",)),)
    day = date(2026, 12, 1)
    got = rank(
        [
            Candidate(popular, one, day),
            Candidate(strong, three, day),
            Candidate(old, one, date(2026, 11, 24)),
        ],
        day,
    )
    assert [r.candidate.paper.id for r in got] == ["1", "2", "3"]
    # The hook for a learned relevance: an extra score per paper lifts it.
    lifted = rank([Candidate(popular, one, day), Candidate(old, one, day)], day, {"3": 0.5})
    assert lifted[0].candidate.paper.id == "3"


@pytest.mark.parametrize(
    ("best", "count", "topics"),
    [
        ("Best-of-N TTS", 15, ["speech", "agents"]),
        ("A" * 300, 600, ["a very long topic name"] * 12),
        ('Quotes "inside"\nand a line break', 1, []),
        ("", 0, ["speech"]),
    ],
)
def test_subject_one_line_within_limit(best: str, count: int, topics: list[str]) -> None:
    subject = subject_line("Daily Papers", "1 Dec", best, count, topics)
    assert "\n" not in subject and len(subject) <= SUBJECT_MAX
    if count > 1:
        assert f"and {count - 1} more" in subject
    if best == "Best-of-N TTS":
        assert subject == 'Daily Papers, 1 Dec: "Best-of-N TTS" and 14 more on speech, agents'


def test_fragments_rendered_once_per_paper(renderers: dict[str, DigestRenderer]) -> None:
    """Many readers of one send share each paper's fragment: none is rendered twice."""
    renderer = DigestRenderer(config(), CASES["7-day first edition"], EDITION_DAY)
    for i in range(30):
        topics = (("llm",), ("agents",), ("llm", "vision"))[i % 3]
        assert renderer.render(Subscriber(f"r{i}@example.net", topics, f"t{i}")) is not None
    # One card or line per paper shown, whoever it was shown to, not one per reader.
    cards = [pid for pid, full in renderer._fragments if full]
    assert len(cards) == len(set(cards)) <= 3 * 12
    assert len(renderer._chips) <= 3 * 12  # a "why" line per (paper, reader's topics)
    made = set(renderer._fragments)
    renderer.render(Subscriber("again@example.net", ("llm",), "t"))
    assert set(renderer._fragments) == made


def test_a_small_topic_beside_a_big_one_keeps_a_line() -> None:
    """Three topics on a 7-day edition: 'Agents' has 6 papers, outranked by 'Language
    models' (98); its best paper still goes in the email, as a line, the total the same."""
    renderer = DigestRenderer(config(), CASES["7-day first edition"], EDITION_DAY)
    groups, _, _ = renderer.groups(READERS["three topics"])
    small = min(groups, key=lambda g: g.count)
    assert small.count < 10 and small.cards + small.lines
    assert sum(len(g.cards) for g in groups) == 12
    assert sum(len(g.lines) for g in groups) == 40
    assert sum(len(g.cards) + len(g.lines) + g.more for g in groups) == sum(g.count for g in groups)
