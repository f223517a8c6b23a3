"""The daily email in a real browser: headless Chromium (Playwright, scripts off) shows the
HTML part of a real day's digest as a mail client gets it (the message's bytes parsed
back), at a phone's and a desktop's width, in the light and the dark colour scheme (the
email keeps a `prefers-color-scheme: dark` block for the clients that honour it).

Every kind of text passes WCAG AA contrast against what is behind it, nothing scrolls
sideways, and the dark block changes colours only: the same sizes, margins and borders
as in the light scheme. Screenshots go to test-artifacts/."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from digest.models import Subscriber
from digest.render.email import DigestRenderer
from digest.store import Store
from tests.support.chromium import ARTIFACTS, needs_chromium
from tests.support.mail import READER, bodies, make_config, parsed, real_day

pytestmark = [pytest.mark.browser, needs_chromium]

# The text kinds of the email (templates/email/*.html), each checked where it occurs;
# ".sep" (a middle dot between two links) is decoration, not text to read.
TEXT = [
    "body", ".brand", ".date", ".summary", ".ov-topic", ".overview p", ".group", ".count",
    ".title a", ".meta", ".votes", ".why", ".tag", ".blurb", ".ai", ".links a",
    ".feedback a", ".line", ".line a", ".more", ".foot", ".foot a",
]  # fmt: skip

# For each selector, the worst contrast of an element's colour against the first
# background behind it (its own or an ancestor's); and each element's box, for
# comparing the two schemes.
MEASURE = """(selectors) => {
  const rgba = s => s.match(/[\\d.]+/g).map(Number);
  const lum = c => { const [r, g, b] = c.slice(0, 3).map(v => { v /= 255;
      return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
  const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p);
    return (x + 0.05) / (y + 0.05); };
  const behind = el => {
    for (let e = el; e; e = e.parentElement) {
      const c = rgba(getComputedStyle(e).backgroundColor);
      if (c.length < 4 || c[3] > 0) return c;
    }
    return [255, 255, 255];
  };
  const worst = {};
  for (const sel of selectors) {
    for (const el of document.querySelectorAll(sel)) {
      const r = ratio(rgba(getComputedStyle(el).color), behind(el));
      worst[sel] = Math.min(worst[sel] ?? 99, r);
    }
  }
  const boxes = [...document.body.querySelectorAll('*')].map(el => {
    const s = getComputedStyle(el);
    return [el.tagName, el.className, s.fontSize, s.fontWeight, s.margin, s.padding,
            s.borderWidth, s.display].join(' | ');
  });
  return {worst, boxes, width: document.scrollingElement.scrollWidth,
          viewport: window.innerWidth};
}"""


@pytest.fixture(scope="module")
def email_page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The HTML part of a real day's email to a reader of three topics, with their
    "why" chips and feedback links, an AI summary, cards, one-line entries and "more on
    the web" (7 papers match, a budget of 3 + 2), as a mail client parses it from the
    bytes."""
    store = Store.open(tmp_path_factory.mktemp("email") / "test.db")
    try:
        papers, day = real_day(store)
        # This capture has no AI summaries: one paper gets its abstract's first sentence.
        first = papers[0]
        summary = first.paper.abstract.split(". ")[0] + "."
        papers[0] = replace(first, paper=replace(first.paper, ai_summary=summary))
        config = make_config(max_full=3, max_listed=2, use_ai_summary=True)
        renderer = DigestRenderer(config, papers, day, feedback_key=b"k" * 32)
        message = renderer.render(
            Subscriber(READER, ("video", "diffusion", "robots"), token="t", preferences_token="p")
        )
        assert message is not None
        yield bodies(parsed(message))[1]
    finally:
        store.close()


@pytest.mark.parametrize("width", [375, 1024])
def test_the_email_is_readable_in_both_colour_schemes(
    email_page: str, browser: Any, width: int
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    seen: dict[str, dict[str, Any]] = {}
    for scheme in ("light", "dark"):
        context = browser.new_context(
            viewport={"width": width, "height": 900},
            java_script_enabled=False,
            color_scheme=scheme,
        )
        try:
            page = context.new_page()
            page.set_content(email_page)
            page.screenshot(path=str(ARTIFACTS / f"email-{scheme}-{width}.png"), full_page=True)
            found = seen[scheme] = page.evaluate(MEASURE, TEXT)
        finally:
            context.close()
        assert found["width"] <= found["viewport"], f"{scheme}: scrolls sideways at {width} px"
        missing = [sel for sel in TEXT if sel not in found["worst"]]
        assert missing == [], f"not in this email: {missing}"  # the check saw every kind
        for selector, ratio in found["worst"].items():
            assert ratio >= 4.5, f"{scheme} at {width} px: {selector} contrast {ratio:.2f} < 4.5"
    # The dark block recolours; it does not resize, box or move anything.
    light, dark = seen["light"]["boxes"], seen["dark"]["boxes"]
    assert len(light) == len(dark) > 100
    changed = [(a, b) for a, b in zip(light, dark, strict=True) if a != b]
    assert changed == [], changed[:5]
