"""Daily or weekly on the web: the sign-up form and the preferences page (real uvicorn,
real aiosmtpd), the choice kept through the confirmation and shown back."""

from __future__ import annotations

import re

import httpx

from digest.config import Config
from digest.store import Store
from digest.store.readers import list_subscribers
from tests.support.signup import wait_mail_queue
from tests.support.smtpserver import SmtpServer
from tests.support.subscribe import SITES, form_token, link_in, mail_to, path_of


def frequency_of(config: Config, address: str) -> str:
    store = Store.open(config.store.database)
    try:
        row = next(r for r in list_subscribers(config, store) if r.email == address)
    finally:
        store.close()
    return row.frequency


def test_weekly_from_the_form_then_daily_on_the_preferences_page(
    config: Config, site: str, smtp: SmtpServer
) -> None:
    reader = "weekly@example.org"
    with httpx.Client() as client:
        home = client.get(site + "/")
        assert 'name="frequency" value="weekly"' in home.text
        data = {"csrf": form_token(client, site), "email": reader, "frequency": "weekly"}
        assert client.post(f"{site}/subscribe", data=data).status_code == 200
        if site in SITES:
            wait_mail_queue(SITES[site])
        bad = {"csrf": form_token(client, site), "email": "x@example.org", "frequency": "hourly"}
        refused = client.post(f"{site}/subscribe", data=bad)
        assert refused.status_code == 400 and "frequency &#39;hourly&#39;" in refused.text
    [confirm_mail] = mail_to(smtp, reader)
    assert "once a week" in confirm_mail.get_body(("plain",)).get_content()
    httpx.post(site + path_of(link_in(confirm_mail, "confirm")))
    assert frequency_of(config, reader) == "weekly"

    # The preferences page shows the choice and changes it.
    from digest.store.meta import secret_key
    from digest.tokens import PREFERENCES, make_token

    store = Store.open(config.store.database)
    try:
        token = make_token(secret_key(store, config.secret_key), reader, PREFERENCES)
    finally:
        store.close()
    with httpx.Client() as client:
        page = client.get(f"{site}/preferences/{token}")
        assert re.search(r'value="weekly" checked', page.text)
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf
        saved = client.post(
            f"{site}/preferences/{token}",
            data={"csrf": csrf.group(1), "keywords": "", "frequency": "daily"},
        )
    assert saved.status_code == 200 and "daily" in saved.text
    assert frequency_of(config, reader) == "daily"
