"""A person subscribing in a real browser: headless Chromium driven by Playwright.

Open the landing page, fill and submit the form, follow the link from the mail that
arrived at aiosmtpd, see the confirmation page. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from digest.config import Config
from digest.store import Store
from digest.store.readers import list_subscribers
from digest.web.app import create_app
from tests.support.chromium import ARTIFACTS, CHROMIUM, FLAGS, needs_chromium
from tests.support.signup import wait_mail_queue
from tests.support.smtpserver import SmtpServer
from tests.support.webserver import serving

pytestmark = [pytest.mark.browser, needs_chromium]


@pytest.fixture
def browser_page() -> Iterator:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield browser.new_page(viewport={"width": 375, "height": 900})
        finally:
            browser.close()


def test_subscribe_in_the_browser_and_confirm_from_the_mail(
    config: Config,
    smtp: SmtpServer,
    browser_page,
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    Store.open(config.store.database).close()
    page = browser_page
    with serving(create_app(config)) as site:
        page.goto(f"{site}/")
        page.fill("#email", "browser@example.org")
        page.check("input[name=topics][value=agents]")
        page.fill("#keywords", 'humanoid*, "tool use"')
        page.screenshot(path=str(ARTIFACTS / "subscribe-form-375.png"), full_page=True)
        page.click("button[type=submit]")
        page.wait_for_selector("h1")
        assert page.inner_text("h1") == "Check your inbox"
        page.screenshot(path=str(ARTIFACTS / "subscribe-sent-375.png"), full_page=True)

        wait_mail_queue(config)  # the mail goes out from a background queue
        (mail,) = [m.message() for m in smtp.messages if "browser@example.org" in m.recipients]
        link = re.search(r"https?://\S+/confirm/\S+", mail.get_content())
        assert link, mail.get_content()
        page.goto(site + urlsplit(link.group(0)).path)
        assert page.inner_text("h1") == "Confirm your subscription"  # a GET changes nothing
        page.click("button[type=submit]")
        page.wait_for_selector("text=You are subscribed")
        assert page.inner_text("h1") == "You are subscribed"
        page.screenshot(path=str(ARTIFACTS / "subscribe-confirmed-375.png"), full_page=True)

    store = Store.open(config.store.database)
    try:
        row = next(r for r in list_subscribers(config, store) if r.email == "browser@example.org")
    finally:
        store.close()
    assert row.status == "active"
    assert row.topics == ("agents",) and row.keywords == 'humanoid*, "tool use"'
