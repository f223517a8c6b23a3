"""Forms keep what the reader typed: a mistake on the sign-up form or the preferences page
draws the same form again with the input and the problem beside its field; a refusal for
too many requests says when to try again. Real uvicorn, httpx, aiosmtpd."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import httpx

from digest.config import Config
from digest.store import Store
from digest.store.meta import secret_key
from digest.store.readers import add_subscriber
from digest.tokens import PREFERENCES, make_token
from digest.web.app import create_app
from tests.support.smtpserver import SmtpServer
from tests.support.subscribe import SITES, form_token
from tests.support.webserver import serving


def post_form(client: httpx.Client, base: str, **fields: object) -> httpx.Response:
    data = {"csrf": form_token(client, base), **fields}
    return client.post(f"{base}/subscribe", data=data)  # type: ignore[arg-type]


def field_error(page: str, field: str) -> str:
    found = re.search(rf'<p class="field-error" id="{field}-error">([^<]+)</p>', page)
    assert found, f"no error beside {field}"
    return found.group(1)


def test_a_bad_address_redraws_the_form_with_the_input(site: str, smtp: SmtpServer) -> None:
    with httpx.Client() as client:
        answer = post_form(
            client, site, email="not-an-address", topics=["agents"], keywords="humanoid*, RL"
        )
    assert answer.status_code == 400
    page = answer.text
    assert 'value="not-an-address"' in page
    assert 'value="agents" checked' in page and 'value="vision" checked' not in page
    assert 'value="humanoid*, RL"' in page
    assert "not a valid email address" in field_error(page, "email")
    # Beside its field: after the address input, before the topics.
    assert page.index('id="email"') < page.index('id="email-error"') < page.index("<fieldset")
    assert 'aria-describedby="email-error"' in page and 'aria-invalid="true"' in page
    assert "Please check the form" in page and 'name="csrf"' in page  # still a working form
    assert smtp.messages == []


def test_a_bad_keyword_is_named_beside_the_keywords(site: str, smtp: SmtpServer) -> None:
    with httpx.Client() as client:
        answer = post_form(client, site, email="kw@example.org", keywords='"tool use')
    assert answer.status_code == 400
    assert "quote is not closed" in field_error(answer.text, "keywords")
    assert 'value="kw@example.org"' in answer.text
    assert "email-error" not in answer.text


def test_both_mistakes_at_once_and_hostile_input_stays_text(site: str) -> None:
    with httpx.Client() as client:
        answer = post_form(client, site, email='"><script>alert(1)</script>', keywords='"<b>x</b>')
    assert answer.status_code == 400
    assert "<script>alert(1)" not in answer.text and "<b>x</b>" not in answer.text
    field_error(answer.text, "email")
    field_error(answer.text, "keywords")
    assert "2 fields below" in answer.text


def test_the_rate_limit_says_when_to_try_again(config: Config, tmp_path: Path) -> None:
    limited = replace(config, web=replace(config.web, subscribe_per_hour=1))
    Store.open(limited.store.database).close()
    with serving(create_app(limited)) as base, httpx.Client() as client:
        SITES[base] = limited
        first = post_form(client, base, email="not-an-address")
        assert first.status_code == 400
        refused = post_form(client, base, email="a@example.org")
    assert refused.status_code == 429
    wait = int(refused.headers["retry-after"])
    assert 3500 <= wait <= 3600
    assert "try again in 60 minutes" in refused.text


def test_a_bad_keyword_on_preferences_keeps_the_new_input(
    config: Config, site: str, smtp: SmtpServer
) -> None:
    reader = "prefs@example.org"
    store = Store.open(config.store.database)
    try:
        add_subscriber(config, store, reader, ["agents"])
        key = secret_key(store)
    finally:
        store.close()
    path = f"/preferences/{make_token(key, reader, PREFERENCES)}"
    with httpx.Client() as client:
        page = client.get(site + path)
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf
        answer = client.post(
            site + path,
            data={"csrf": csrf.group(1), "topics": ["vision"], "keywords": 'robot*, "half'},
        )
    assert answer.status_code == 400
    assert "quote is not closed" in field_error(answer.text, "keywords")
    # What was typed, not what is saved (agents, no keywords).
    assert 'value="vision" checked' in answer.text and 'value="agents" checked' not in answer.text
    assert 'value="robot*, &#34;half"' in answer.text or 'value="robot*, &quot;half"' in answer.text
