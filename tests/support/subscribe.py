"""The web front's sign-up flow as a reader drives it: forms, mails, links, sends."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import date
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from digest.config import Config, SmtpConfig, SubscriberConfig
from digest.deliver.digest import send_digests
from digest.source.parse import parse_api, parse_page
from digest.store import Store
from digest.store.readers import list_subscribers
from tests.support.config import smtp_config
from tests.support.signup import wait_mail_queue
from tests.support.smtpserver import SmtpServer
from tests.support.webserver import make_config

KNOWN = "known@example.org"  # the reader of the config file
SITES: dict[str, Config] = {}  # base URL -> its config, so `subscribe` can wait for mail


def smtp_for(server: SmtpServer, **keys: object) -> SmtpConfig:
    """[smtp] for the test server: plain, no rate limit, short timeout."""
    return smtp_config(server.port, **{"sender": "digest@example.org", **keys})


def site_config(tmp_path: Path, smtp: SmtpServer, **smtp_keys: object) -> Config:
    """The web front's config: KNOWN in the config file, mail to `smtp`."""
    base = make_config(tmp_path, subscribe_per_hour=50)
    return replace(
        base, smtp=smtp_for(smtp, **smtp_keys), subscribers=[SubscriberConfig(KNOWN, [])]
    )


def path_of(url: str) -> str:
    return urlsplit(url).path


def form_token(client: httpx.Client, base: str, path: str = "/") -> str:
    """The CSRF token of the form on base/path."""
    page = client.get(f"{base}{path}")
    assert page.status_code == 200
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, "the form carries a CSRF token"
    return found.group(1)


def subscribe(
    client: httpx.Client, base: str, address: str, topics: tuple[str, ...] = (), keywords: str = ""
) -> httpx.Response:
    """Fill in and post the sign-up form; wait until its mail is sent."""
    data = {"csrf": form_token(client, base), "email": address, "keywords": keywords}
    answer = client.post(f"{base}/subscribe", data={**data, "topics": list(topics)})
    if base in SITES:  # the mail goes out from a background queue
        wait_mail_queue(SITES[base])
    return answer


def mail_to(smtp: SmtpServer, address: str) -> list[EmailMessage]:
    return [m.message() for m in smtp.messages if address in m.recipients]


def link_in(message: EmailMessage, prefix: str) -> str:
    """The first https?://.../prefix/... link of the text part."""
    body = message.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    found = re.search(rf"https?://\S+/{prefix}/\S+", text)
    assert found, text
    return found.group(0)


def store_day(config: Config, path: Path) -> None:
    """Store a capture (page or API answer) in the config's database."""
    store = Store.open(config.store.database)
    try:
        body = path.read_bytes()
        listing = (
            parse_page(body, "https://huggingface.co/papers")
            if path.suffix == ".html"
            else parse_api(body, "https://huggingface.co/api/daily_papers")
        )
        store.store_listing(listing)
    finally:
        store.close()


def send(config: Config, day: date):  # type: ignore[no-untyped-def]
    """That day's morning send (tests move the clock ahead with `today=day`)."""
    store = Store.open(config.store.database)
    try:
        return send_digests(config, store, day, sleep=lambda _s: None, today=day)
    finally:
        store.close()


def statuses(config: Config) -> dict[str, str]:
    """Address -> status of every reader."""
    store = Store.open(config.store.database)
    try:
        return {r.email: r.status for r in list_subscribers(config, store)}
    finally:
        store.close()
