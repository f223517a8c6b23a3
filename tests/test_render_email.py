"""The daily email: a real day rendered, parsed back as a mail client would, and checked."""

from __future__ import annotations

import email.policy
from dataclasses import replace
from datetime import UTC, date, datetime
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from selectolax.lexbor import LexborHTMLParser as HTMLParser

from digest.cli import main
from digest.clock import now_utc
from digest.deliver.smtp import flatten
from digest.models import Paper, StoredPaper, Subscriber
from digest.render.email import (
    ALL_PAPERS,
    DigestRenderer,
    shorten_authors,
    trim_sentences,
)
from digest.store import Store
from digest.topics import match_topics
from tests.support.mail import TOPICS, bodies, make_config, parsed, real_day

TOKEN = "YUBleGFtcGxlLm9yZw.abcDEF123_-xyz"
PREFS = "YUBleGFtcGxlLm9yZw.prefsDEF123_-xyz"  # the preferences link's own token


def sections(page: str) -> list[tuple[str, list[str]]]:
    """[(group heading, [paper titles])] in document order, from the HTML part."""
    out: list[tuple[str, list[str]]] = []
    for node in HTMLParser(page).css("h2.group, h3.title, p.line > a"):
        if node.tag == "h2":
            out.append((node.text(strip=True), []))
        else:
            out[-1][1].append(node.text(strip=True))
    return out


def stored(paper: Paper) -> StoredPaper:
    return StoredPaper(paper, datetime(2024, 8, 1, 12, tzinfo=UTC))


@pytest.fixture
def day_papers(store: Store) -> tuple[list[StoredPaper], date]:
    return real_day(store)


def test_real_day_message(day_papers: tuple[list[StoredPaper], date]) -> None:
    papers, day = day_papers
    config = make_config()
    renderer = DigestRenderer(config, papers, day)
    sub = Subscriber("reader@example.net", ("video", "diffusion"), TOKEN, preferences_token=PREFS)
    message = renderer.render(sub)
    assert message is not None
    msg = parsed(message)
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    assert all(p.get_content_charset() == "utf-8" for p in msg.iter_parts())
    # What the subscriber should get, counted apart from the renderer.
    matched = match_topics([sp.paper for sp in papers], TOPICS)
    mine = {pid for pid, ms in matched.items() if {m.topic for m in ms} & {"video", "diffusion"}}
    assert 0 < len(mine) < 13
    subject = str(msg["Subject"])
    assert subject.startswith(f'Daily Papers, {day.day} {day:%b}: "')
    assert subject.endswith(f'" and {len(mine) - 1} more on Video, Diffusion')
    assert len(subject) <= 120 and "\n" not in subject
    assert msg["From"].addresses[0].addr_spec == "digest@papers.example.org"
    assert msg["To"] == "reader@example.net"
    sent = parsedate_to_datetime(msg["Date"])
    assert abs((sent - datetime.now(UTC)).total_seconds()) < 60
    assert msg["Message-ID"].endswith("@papers.example.org>")
    assert msg["List-Id"] == "Daily Papers <daily.papers.example.org>"
    # No bounces mailbox in this config: no mailto (tests/test_render_mailheaders.py).
    assert msg["List-Unsubscribe"] == f"<https://papers.example.org/unsubscribe/{TOKEN}>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    text, page = bodies(msg)
    hrefs = {a.attributes.get("href") for a in HTMLParser(page).css("a")}
    for sp in papers:
        p = sp.paper
        inside = p.id in mine
        assert (p.hf_url in hrefs) is inside, p.id
        assert (p.arxiv_url in hrefs and p.pdf_url in hrefs) is inside
        assert (p.hf_url in text and p.pdf_url in text) is inside
    for link in (
        f"https://papers.example.org/unsubscribe/{TOKEN}",
        f"https://papers.example.org/preferences/{PREFS}",
    ):
        assert link in hrefs and link in text
    assert "reader@example.net" in text and "reader@example.net" in page
    assert "Your topics: Video, Diffusion." in text
    assert "<script" not in page.lower() and "@import" not in page
    # CSS is inlined (no class-only styling left to chance), dark mode kept as a media query.
    assert HTMLParser(page).css_first("h3.title a").attributes.get("style")
    assert 'name="color-scheme"' in page and "prefers-color-scheme: dark" in page
    # No body line longer than the RFC's 78 (quoted-printable soft breaks at 76).
    raw = flatten(message).split(b"\r\n\r\n", 1)[1]
    assert max(len(line) for line in raw.split(b"\r\n")) <= 78


def test_message_id_is_stable_per_subscriber_and_day(
    day_papers: tuple[list[StoredPaper], date],
) -> None:
    papers, day = day_papers
    config = make_config()
    a = Subscriber("a@example.net", (), "t1")
    b = Subscriber("b@example.net", (), "t2")

    def mid(sub: Subscriber, on: date) -> str:
        message = DigestRenderer(config, papers, on).render(sub)
        assert message is not None
        return str(message["Message-ID"])

    assert mid(a, day) == mid(a, day)  # a resend after a crash: same id
    assert mid(a, day) != mid(b, day)
    assert mid(a, day) != mid(a, date(2024, 8, 2))


def test_each_paper_once_under_its_best_topic_tagged_with_both(
    day_papers: tuple[list[StoredPaper], date],
) -> None:
    papers, day = day_papers
    renderer = DigestRenderer(make_config(), papers, day)
    message = renderer.render(Subscriber("a@example.net", ("video", "diffusion", "robots"), "t"))
    assert message is not None
    text, page = bodies(parsed(message))
    groups = sections(page)
    titles = [t for _, ts in groups for t in ts]
    assert len(titles) == len(set(titles))  # nobody's paper twice
    by_title = {sp.paper.title: sp.paper for sp in papers}
    tora = by_title[next(t for t in by_title if t.startswith("Tora:"))]
    # Tora hits "diffusion" and "generation" (Diffusion) but only "video*" (Video).
    heading = next(h for h, ts in groups if tora.title in ts)
    assert heading.startswith("Diffusion")
    node = next(n for n in HTMLParser(page).css("div.paper") if tora.id in (n.html or ""))
    assert [t.text() for t in node.css(".tag")] == ["Diffusion", "Video"]
    assert "matched: diffusion, generation, video*" in node.text()
    assert titles.count(tora.title) == 1 and text.count(tora.title) == 1
    # Groups in config order, each sorted by upvotes, most first.
    order = [h.split("(")[0].strip() for h, _ in groups]
    assert order == [t.title for t in TOPICS if t.title in order]
    for _, ts in groups:
        votes = [by_title[t].upvotes for t in ts]
        assert votes == sorted(votes, reverse=True)


def test_no_topics_gets_every_paper(day_papers: tuple[list[StoredPaper], date]) -> None:
    papers, day = day_papers
    message = DigestRenderer(make_config(), papers, day).render(Subscriber("a@example.net"))
    assert message is not None
    msg = parsed(message)
    assert msg["Subject"].endswith('" and 12 more')
    text, page = bodies(msg)
    [(heading, titles)] = sections(page)
    assert heading.startswith(ALL_PAPERS)
    assert sorted(titles) == sorted(" ".join(sp.paper.title.split()) for sp in papers)
    assert "You follow no topics" in text
    nothing = make_config(no_topics_gets="nothing")
    assert DigestRenderer(nothing, papers, day).render(Subscriber("a@example.net")) is None


def test_nothing_matched(day_papers: tuple[list[StoredPaper], date]) -> None:
    papers, day = day_papers
    quiet = Subscriber("q@example.net", ("quiet",), "t")
    assert DigestRenderer(make_config(), papers, day).render(quiet) is None
    message = DigestRenderer(make_config(send_when_empty=True), papers, day).render(quiet)
    assert message is not None
    msg = parsed(message)
    assert msg["Subject"].endswith(": nothing new on quiet")
    text, _ = bodies(msg)
    assert "None of today's 13 new papers matched your topics." in text


def test_cached_bodies_personalised_exactly(day_papers: tuple[list[StoredPaper], date]) -> None:
    """A subscriber rendered from another's cached body gets what a fresh render gives."""
    papers, day = day_papers
    config = make_config()
    long_token = "Q" * 300 + ".x"  # longer than a quoted-printable line
    shared = DigestRenderer(config, papers, day)
    assert shared.render(Subscriber("first@example.net", ("robots",), "t1")) is not None
    later = Subscriber("second+tag@example.net", ("robots",), long_token)
    from_cache = shared.render(later)
    fresh = DigestRenderer(config, papers, day).render(later)
    assert from_cache is not None and fresh is not None
    assert bodies(parsed(from_cache)) == bodies(parsed(fresh))
    text, page = bodies(parsed(from_cache))
    assert f"https://papers.example.org/unsubscribe/{long_token}" in text
    assert f'href="https://papers.example.org/unsubscribe/{long_token}"' in page
    assert "first@example.net" not in text + page and "t1" not in text
    assert "pdx" not in text + page  # no placeholder left behind


def test_paper_details_links_and_ai_summary() -> None:
    paper = Paper(
        id="2501.00001",
        title="Robot Learning",
        abstract="We study robots. " * 60,
        authors=tuple(f"Author {i}" for i in range(7)),
        organization="Example Lab",
        upvotes=42,
        github_repo="https://github.com/example/robots",
        project_page="https://example.org/robots",
        ai_summary="An AI summary of the robot paper.",
    )
    evil = replace(paper, id="2501.00002", github_repo="javascript:alert(1)", ai_summary=None)
    papers = [stored(paper), stored(evil)]
    sub = Subscriber("a@example.net", ("robots",), "t")
    message = DigestRenderer(make_config(abstract_chars=200), papers, date(2024, 8, 1)).render(sub)
    assert message is not None
    text, page = bodies(parsed(message))
    hrefs = [a.attributes.get("href") for a in HTMLParser(page).css("a")]
    assert "https://github.com/example/robots" in hrefs and "https://example.org/robots" in hrefs
    assert not any("javascript" in (h or "") for h in hrefs)
    assert "Author 0, Author 1, Author 2 et al. (7 authors)" in text
    assert "Example Lab" in page and "42 upvotes" in page
    assert "We study robots." in text and "An AI summary" not in text
    assert "Read more: https://huggingface.co/papers/2501.00001" in text
    assert any(a.text() == "more" for a in HTMLParser(page).css("a"))
    ai = DigestRenderer(make_config(use_ai_summary=True), papers, date(2024, 8, 1)).render(sub)
    assert ai is not None
    text, page = bodies(parsed(ai))
    assert "AI summary: An AI summary of the robot paper." in text
    # The paper without one falls back to its abstract.
    assert text.count("We study robots.") >= 1


@pytest.mark.parametrize(
    ("authors", "expected"),
    [
        ((), ""),
        (("A",), "A"),
        (("A", "B", "C", "D"), "A, B, C, D"),
        (("A", "B", "C", "D", "E"), "A, B, C et al. (5 authors)"),
        (("A\nnewline", " B ", "", "C"), "A newline, B, C"),
    ],
)
def test_shorten_authors(authors: tuple[str, ...], expected: str) -> None:
    assert shorten_authors(authors) == expected


def test_trim_sentences() -> None:
    text = "First sentence here. Second one, e.g. with an abbreviation. Third! Fourth?"
    assert trim_sentences(text, 1000) == (text, False)
    cut, trimmed = trim_sentences(text, 65)
    assert trimmed and cut == "First sentence here. Second one, e.g. with an abbreviation."
    cut, trimmed = trim_sentences(text, 30)
    assert trimmed and cut == "First sentence here."
    # "e.g." is not a sentence end: cutting there would leave "Second one, e.g."
    assert trim_sentences("Aaaa bbbb. Second one, e.g. Thing here.", 30)[0] == "Aaaa bbbb."
    one_long = "word " * 100
    cut, trimmed = trim_sentences(one_long, 50)
    assert trimmed and cut.endswith("…") and len(cut) <= 51 and " wor…" not in cut


HOSTILE = '<script>alert("x")</script> "Quoted" & <b>bold</b>\nSecond line \u202eעברית 🚀 مرحبا'


def hostile_message(prefix: str = "Daily Papers") -> EmailMessage:
    paper = Paper(id="2501.00009", title=HOSTILE, abstract="A robot paper.", upvotes=3)
    config = make_config(subject_prefix=prefix)
    renderer = DigestRenderer(config, [stored(paper)], date(2024, 8, 1))
    message = renderer.render(Subscriber("a@example.net", ("robots",), "t"))
    assert message is not None
    return parsed(message)


def test_hostile_title_escaped_in_html_intact_in_text() -> None:
    msg = hostile_message()
    text, page = bodies(msg)
    one_line = " ".join(HOSTILE.split())
    # The text part shows it as written (wrapped like any long line).
    assert one_line in " ".join(text.split())
    assert "<script>" not in page and "<b>bold</b>" not in page
    assert "&lt;script&gt;" in page
    link = HTMLParser(page).css_first("h3.title a")
    assert link.text() == one_line and link.attributes.get("dir") == "auto"
    assert not HTMLParser(page).css("script, b")
    assert "\n" not in msg["Subject"] and len(msg["Subject"]) <= 120


def test_subject_prefix_cannot_break_the_header() -> None:
    msg = hostile_message(prefix="Papers\r\nBcc: victim@example.com")
    assert msg["Bcc"] is None
    assert msg["Subject"].startswith('Papers Bcc: victim@example.com, 1 Aug: "')


def test_preview_command(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    store = Store.open(db)
    real_day(store)
    store.close()
    config = tmp_path / "config.toml"
    config.write_text(
        f'[store]\ndatabase = "{db}"\n[feeds]\nbase_url = "https://papers.example.org"\n'
        '[schedule]\ntimezone = "UTC"\n'
        '[[topics]]\nname = "robots"\nkeywords = ["humanoid"]\n'
        '[[subscribers]]\nemail = "r@example.net"\ntopics = ["robots"]\n'
    )
    out = tmp_path / "out"
    runner = CliRunner()
    result = runner.invoke(
        main, ["--config", str(config), "preview", "--to", "r@example.net", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    eml, page = (Path(line) for line in result.output.split())
    today = now_utc().date().isoformat()
    assert eml.name == f"digest-{today}-r@example.net.eml" and page.suffix == ".html"
    msg = BytesParser(policy=email.policy.default).parsebytes(eml.read_bytes())
    assert msg["Subject"].endswith(
        'Humanoid: A Research Platform for Learning-based Control" on robots'
    )
    assert "Berkeley Humanoid" in page.read_text(encoding="utf-8")
    # Someone who is not a subscriber gets nothing from a send: the preview says so.
    result = runner.invoke(
        main, ["--config", str(config), "preview", "--to", "x@example.net", "--out", str(out)]
    )
    assert result.exit_code == 1 and "x@example.net is not a subscriber" in result.output
    # A day with nothing new says so and fails.
    result = runner.invoke(
        main,
        ["--config", str(config), "preview", "--to", "r@example.net", "--date", "2020-01-01"],
    )
    assert result.exit_code == 1 and "no new papers on 2020-01-01" in result.output
