"""Headless Chromium on the ranked, budgeted email of a heavy real case (a 7-day first
edition, a reader of three topics): no sideways scrolling at 375 and 1024 px, the overview's
in-page links land on their papers. Screenshots go to test-artifacts/ (docs/ has a copy)."""

from __future__ import annotations

from pathlib import Path

from digest.config import Config, FeedsConfig, SmtpConfig
from digest.models import Subscriber
from digest.render.email import DigestRenderer
from tests.support.budget import EDITION_DAY, THREE_TOPICS, budget_cases
from tests.support.chromium import ARTIFACTS, needs_chromium
from tests.support.mail import bodies, parsed
from tests.test_render_email_browser import chromium, overflow

pytestmark = needs_chromium


def test_budgeted_email_fits_phone_and_desktop(tmp_path: Path) -> None:
    config = Config(
        topics=THREE_TOPICS,
        feeds=FeedsConfig(base_url="https://papers.example.org"),
        smtp=SmtpConfig(sender="Daily Papers <digest@papers.example.org>"),
    )
    papers = budget_cases()["7-day first edition"]
    renderer = DigestRenderer(config, papers, EDITION_DAY)
    message = renderer.render(
        Subscriber("reader@example.net", ("llm", "agents", "vision"), "dG9rZW4.c2lnbmVk")
    )
    assert message is not None
    _, page = bodies(parsed(message))
    ARTIFACTS.mkdir(exist_ok=True)
    source = ARTIFACTS / "email-ranked.html"
    source.write_text(page, encoding="utf-8")
    profile = tmp_path / "chromium"
    for width in (375, 1024):
        shot = ARTIFACTS / f"email-ranked-{width}.png"
        shot.unlink(missing_ok=True)
        chromium(profile, width, f"--screenshot={shot}", source.as_uri())
        assert shot.stat().st_size > 10_000, f"no screenshot at {width} px"
        scroll, client = overflow(page, width, tmp_path, profile)
        assert 0 < client <= width and scroll <= client, f"scrolls sideways at {width} px"
    # Every in-page link of the overview has its target in the page.
    out = chromium(
        profile,
        1024,
        "--dump-dom",
        "--run-all-compositor-stages-before-draw",
        source.as_uri(),
    )
    targets = [a.split('"')[0] for a in page.split('href="#p-')[1:]]
    assert targets
    for target in targets:
        assert f'id="p-{target}"' in out
