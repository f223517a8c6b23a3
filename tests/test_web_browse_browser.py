"""The reading pages in a real browser: headless Chromium (Playwright) with JavaScript
off, at 375 and 1024 px. Nothing overflows a phone's width (a 10 KB title included),
every field has a label, the text and links pass WCAG AA contrast, a reader can search
with the keyboard alone. Screenshots go to test-artifacts/ (copies in docs/screenshots/)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from digest.config import Config
from digest.web.app import create_app
from tests.support.archive import Archive, build_archive
from tests.support.chromium import ARTIFACTS, needs_chromium
from tests.support.webserver import make_config, serving

pytestmark = [pytest.mark.browser, needs_chromium]

# Contrast of the computed colour of each kind of text against the page's background
# (WCAG 2 relative luminance), and whether any visible field lacks an accessible name.
CHECKS = """() => {
  const rgb = s => s.match(/[\\d.]+/g).slice(0, 3).map(Number);
  const lum = c => { const [r, g, b] = c.map(v => { v /= 255;
      return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
  const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p);
    return (x + 0.05) / (y + 0.05); };
  const bg = rgb(getComputedStyle(document.body).backgroundColor);
  const worst = {};
  for (const sel of ['body', 'a', '.hint', 'h3 a', 'button', '.error', '.field-error']) {
    for (const el of document.querySelectorAll(sel)) {
      const style = getComputedStyle(el);
      const back = sel === 'button' ? rgb(style.backgroundColor) : bg;
      const r = ratio(rgb(style.color), back);
      worst[sel] = Math.min(worst[sel] || 99, r);
    }
  }
  const unlabelled = [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
    .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
    .map(el => el.outerHTML);
  return {worst, unlabelled, width: document.scrollingElement.scrollWidth,
          viewport: window.innerWidth};
}"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Config, Archive, str]]:
    config = make_config(tmp_path_factory.mktemp("browser"))
    archive = build_archive(config)
    with serving(create_app(config)) as base:
        yield config, archive, base


def pages(archive: Archive) -> dict[str, str]:
    return {
        "home": "/",
        "search": "/search?q=humanoid",
        "day": f"/archive/{archive.days[1]}",
        "topic": "/topics/agents",
        "archive": "/archive",
    }


@pytest.mark.parametrize("width", [375, 1024])
def test_pages_fit_are_labelled_and_readable(
    site: tuple[Config, Archive, str], browser, width: int
) -> None:
    _config, archive, base = site
    ARTIFACTS.mkdir(exist_ok=True)
    context = browser.new_context(
        viewport={"width": width, "height": 900}, java_script_enabled=False
    )
    try:
        page = context.new_page()
        for name, path in pages(archive).items():
            page.goto(base + path)
            assert page.locator("article.paper").count() > 0 or name == "archive", name
            page.screenshot(path=str(ARTIFACTS / f"web-{name}-{width}.png"))
            # The checks run in the page; scripts are off for the site, not for Playwright.
            found = page.evaluate(CHECKS)
            assert found["width"] <= found["viewport"], f"{name} scrolls sideways at {width} px"
            assert found["unlabelled"] == [], name
            for selector, ratio in found["worst"].items():
                assert ratio >= 4.5, f"{name}: {selector} contrast {ratio:.2f} < 4.5"
    finally:
        context.close()


def test_search_with_the_keyboard_alone(site: tuple[Config, Archive, str], browser) -> None:
    _config, _archive, base = site
    context = browser.new_context(viewport={"width": 375, "height": 900}, java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto(base + "/")
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.className") == "skip"
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.className") == "home"
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.id") == "site-q"
        page.keyboard.type("humanoid")
        page.keyboard.press("Enter")
        page.wait_for_url("**/search?q=humanoid")
        assert page.locator("article.paper mark").count() > 0
        # A focused link shows where it is (an outline, not the browser's default only).
        page.keyboard.press("Tab")
        outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
        assert outline not in ("", "none")
        page.screenshot(path=str(ARTIFACTS / "web-search-keyboard-375.png"))
    finally:
        context.close()


def test_the_screenshots_in_docs_are_of_these_pages() -> None:
    docs = Path(__file__).resolve().parents[1] / "docs" / "screenshots"
    for name in ("home", "search", "day", "topic"):
        for width in (375, 1024):
            assert (docs / f"web-{name}-{width}.png").stat().st_size > 10_000, (name, width)
