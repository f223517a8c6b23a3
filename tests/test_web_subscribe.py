"""Subscribing through the web front, end to end: real uvicorn, real aiosmtpd, real sends.

subscribe -> confirmation mail -> confirm link -> the next send includes the reader ->
one-click unsubscribe (RFC 8058 POST) -> the send after that does not. Around it: forged,
altered and expired tokens, CSRF, the rate limit, no enumeration, the archive.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from digest.config import Config
from digest.store import Store
from digest.store.meta import secret_key
from digest.store.readers import add_subscriber, list_subscribers
from digest.tokens import PREFERENCES, make_token, verify_token
from digest.web.app import create_app
from digest.web.subscribe import make_confirm_token, purge_pending
from tests.support.paths import PAGE_2024_08_01, REAL
from tests.support.smtpserver import SmtpServer
from tests.support.subscribe import (
    KNOWN,
    SITES,
    link_in,
    mail_to,
    path_of,
    send,
    statuses,
    store_day,
    subscribe,
)
from tests.support.webserver import make_config, raw_get, serving


def store_nonce(config: Config, address: str) -> str:
    """The nonce of the address's outstanding sign-up mail."""
    store = Store.open(config.store.database)
    try:
        row = store.db.execute(
            "SELECT nonce FROM web_mails WHERE email = ? AND kind = 'confirm'", [address]
        ).fetchone()
    finally:
        store.close()
    return str(row[0])


def test_subscribe_confirm_send_one_click_unsubscribe(
    config: Config, site: str, smtp: SmtpServer
) -> None:
    reader = "reader@example.org"
    with httpx.Client() as client:
        answer = subscribe(client, site, reader, ("agents",))
        assert answer.status_code == 200 and "Check your inbox" in answer.text
    assert statuses(config)[reader] == "pending"
    (confirmation,) = mail_to(smtp, reader)
    assert "confirm" in str(confirmation["Subject"]).lower()

    # Pending readers get nothing.
    store_day(config, PAGE_2024_08_01)
    today = datetime.now(UTC).date()
    first = send(config, today)
    assert reader not in first.sent and KNOWN in first.sent

    link = site + path_of(link_in(confirmation, "confirm"))
    # Opening the link (or a mail filter's scanner fetching it) changes nothing...
    page = httpx.get(link)
    assert page.status_code == 200 and "Confirm your subscription" in page.text
    assert f'action="{path_of(link)}"' in page.text
    assert statuses(config)[reader] == "pending"
    # ...pressing the button on that page does.
    confirmed = httpx.post(link)
    assert confirmed.status_code == 200 and "You are subscribed" in confirmed.text
    assert statuses(config)[reader] == "active"

    second = send(config, today)  # the same day's edition, for the newly confirmed reader
    assert second.sent == [reader]
    digest = mail_to(smtp, reader)[-1]
    assert "Daily Papers" in str(digest["Subject"])
    assert digest["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    https = re.search(r"<(https?://[^>]+)>", str(digest["List-Unsubscribe"]))
    assert https

    # What a mail program does for RFC 8058: POST the body, no cookie, no form token.
    one_click = httpx.post(
        site + path_of(https.group(1)),
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert one_click.status_code == 200 and "unsubscribed" in one_click.text
    assert statuses(config)[reader] == "unsubscribed"

    store_day(config, REAL / "api-daily_papers-2024-03-12.json")
    later = send(config, today + timedelta(days=1))
    assert reader not in later.sent and KNOWN in later.sent
    assert len(mail_to(smtp, reader)) == 2  # the confirmation and one digest, nothing after


def test_the_answer_does_not_tell_who_is_subscribed(
    config: Config, site: str, smtp: SmtpServer
) -> None:
    with httpx.Client() as client:
        new = subscribe(client, site, "fresh@example.org")
        known = subscribe(client, site, KNOWN)
    assert new.status_code == known.status_code == 200
    assert new.text.replace("fresh@example.org", "X") == known.text.replace(KNOWN, "X")
    # The known reader is not set back to pending; they get a note with their link.
    assert statuses(config)[KNOWN] == "active"
    (note,) = mail_to(smtp, KNOWN)
    assert "already subscribed" in str(note["Subject"])
    assert "/preferences/" in note.get_content()


def test_forged_altered_and_expired_tokens_change_nothing(
    config: Config, site: str, smtp: SmtpServer
) -> None:
    reader = "careful@example.org"
    with httpx.Client() as client:
        subscribe(client, site, reader)
    link = path_of(link_in(mail_to(smtp, reader)[0], "confirm"))
    altered = link[:-3] + ("AAA" if not link.endswith("AAA") else "BBB")
    for path in ("/confirm/forged", altered, "/confirm/" + "x" * 40):
        for method in ("GET", "POST"):
            answer = httpx.request(method, site + path)
            assert answer.status_code == 400 and "does not work" in answer.text
    store = Store.open(config.store.database)
    try:
        key = secret_key(store)
    finally:
        store.close()
    nonce = store_nonce(config, reader)
    stale = make_confirm_token(key, reader, nonce, datetime.now(UTC) - timedelta(hours=49))
    assert httpx.get(f"{site}/confirm/{stale}").status_code == 400
    assert httpx.post(f"{site}/confirm/{stale}").status_code == 400
    assert statuses(config)[reader] == "pending"

    # An unsubscribe token that is not ours, or one character off, does nothing.
    for token in ("a.b", "Zm9vQGV4YW1wbGUub3Jn.notthemac", "x", "ImFAYi5vcmci.aw8rJQ.x"):
        assert httpx.post(f"{site}/unsubscribe/{token}").status_code == 400
        assert httpx.get(f"{site}/preferences/{token}").status_code == 400
    assert statuses(config)[KNOWN] == "active"


def test_csrf_rate_limit_and_bad_input(config: Config, tmp_path: Path, smtp: SmtpServer) -> None:
    limited = replace(config, web=replace(config.web, subscribe_per_hour=2))
    Store.open(limited.store.database).close()
    with serving(create_app(limited)) as site, httpx.Client() as client:
        SITES[site] = limited
        no_token = client.post(f"{site}/subscribe", data={"email": "a@example.org"})
        assert no_token.status_code == 403
        forged = client.post(f"{site}/subscribe", data={"email": "a@example.org", "csrf": "x"})
        assert forged.status_code == 403
        bad = subscribe(client, site, "not-an-address")
        assert bad.status_code == 400 and "not a valid email address" in bad.text
        unclosed = subscribe(client, site, "b@example.org", keywords='"tool use')
        assert unclosed.status_code == 400 and "quote is not closed" in unclosed.text
        # Two requests passed the CSRF check this hour (both refused for their input).
        assert subscribe(client, site, "c@example.org").status_code == 429
    assert smtp.messages == []  # nothing was mailed for any of these


def test_preferences_and_personal_keywords(config: Config, site: str, smtp: SmtpServer) -> None:
    reader = "kw@example.org"
    with httpx.Client() as client:
        subscribe(client, site, reader, keywords='humanoid*, "mixture of experts"')
    httpx.post(site + path_of(link_in(mail_to(smtp, reader)[0], "confirm")))
    store_day(config, PAGE_2024_08_01)
    report = send(config, datetime.now(UTC).date())
    assert reader in report.sent
    digest = mail_to(smtp, reader)[-1]
    text = digest.get_body(("plain",)).get_content()
    assert "Your keywords" in text and "Berkeley Humanoid" in text
    assert "Llama 3 Herd" not in text  # only what the keywords matched

    prefs = path_of(link_in(digest, "preferences"))
    with httpx.Client() as client:
        page = client.get(site + prefs)
        assert page.status_code == 200 and "humanoid*" in page.text
        token = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert token
        no_csrf = client.post(site + prefs, data={"topics": ["vision"]})
        saved = client.post(
            site + prefs, data={"csrf": token.group(1), "topics": ["vision"], "keywords": ""}
        )
    assert no_csrf.status_code == 403
    assert saved.status_code == 200 and "Saved" in saved.text
    store = Store.open(config.store.database)
    try:
        row = next(r for r in list_subscribers(config, store) if r.email == reader)
    finally:
        store.close()
    assert row.topics == ("vision",) and row.keywords == ""


def test_archive_pages(config: Config, site: str) -> None:
    assert "No digest was sent yet" in httpx.get(f"{site}/archive").text
    store_day(config, PAGE_2024_08_01)
    today = datetime.now(UTC).date()
    send(config, today)
    index = httpx.get(f"{site}/archive")
    assert f"/archive/{today.isoformat()}" in index.text
    page = httpx.get(f"{site}/archive/{today.isoformat()}")
    assert page.status_code == 200
    assert "The Llama 3 Herd of Models" in page.text and "All past digests" in page.text
    assert "unsubscribe" not in page.text.lower()
    assert httpx.get(f"{site}/archive/2020-01-01").status_code == 404
    assert httpx.get(f"{site}/archive/not-a-date").status_code == 404
    for target in ("/feeds/../digest.db", "/archive/../digest.db", "/feeds/%2e%2e/digest.db"):
        assert raw_get(site, target) == 404


def test_without_smtp_the_form_says_mail_is_unavailable(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    Store.open(config.store.database).close()
    with serving(create_app(config)) as site:
        landing = httpx.get(f"{site}/")
        assert "does not send email" in landing.text
        answer = httpx.post(f"{site}/subscribe", data={"email": "a@example.org"})
        assert answer.status_code == 503


# -- what a review found: each of these once let a stranger or a mangled link do harm ---


def test_the_form_cannot_undo_an_unsubscribe(config: Config, site: str, smtp: SmtpServer) -> None:
    # KNOWN is a subscriber in the config file. They unsubscribe with their link...
    store = Store.open(config.store.database)
    try:
        key = secret_key(store)
    finally:
        store.close()
    unsubscribe_link = f"{site}/unsubscribe/{make_token(key, KNOWN)}"
    assert httpx.post(unsubscribe_link).status_code == 200
    assert statuses(config)[KNOWN] == "unsubscribed"
    # ...then a stranger posts the form with their address: still unsubscribed, mailed
    # only the confirmation, and still unsubscribed after unconfirmed sign-ups expire.
    with httpx.Client() as client:
        assert subscribe(client, site, KNOWN).status_code == 200
    assert statuses(config)[KNOWN] == "unsubscribed"
    store_day(config, PAGE_2024_08_01)
    assert KNOWN not in send(config, datetime.now(UTC).date()).sent
    store = Store.open(config.store.database)
    try:
        purge_pending(store, timedelta(hours=48), datetime.now(UTC) + timedelta(hours=49))
    finally:
        store.close()
    assert statuses(config)[KNOWN] == "unsubscribed"
    # A confirmation link issued before an unsubscribe (here: the same second) does not
    # undo it; the one mailed after it does.
    (before,) = mail_to(smtp, KNOWN)
    assert httpx.post(unsubscribe_link).status_code == 200
    assert httpx.post(site + path_of(link_in(before, "confirm"))).status_code == 400
    assert statuses(config)[KNOWN] == "unsubscribed"
    with httpx.Client() as client:
        assert subscribe(client, site, KNOWN).status_code == 200
    _, after = mail_to(smtp, KNOWN)
    assert httpx.post(site + path_of(link_in(after, "confirm"))).status_code == 200
    assert statuses(config)[KNOWN] == "active"


def test_addresses_that_casefold_alike_are_two_readers(
    config: Config, site: str, smtp: SmtpServer
) -> None:
    # "straße" casefolds to "strasse": two mailboxes all the same, each with its own token.
    store = Store.open(config.store.database)
    try:
        key = secret_key(store)
        for address in ("strasse@example.com", "straße@example.com"):
            add_subscriber(config, store, address, ["vision"])
    finally:
        store.close()
    mine = make_token(key, "strasse@example.com")
    _payload, mac = mine.split(".")
    forged = make_token(key, "straße@example.com").split(".")[0]
    assert verify_token(key, f"{forged}.{mac}") is None
    assert httpx.post(f"{site}/unsubscribe/{forged}.{mac}").status_code == 400
    assert verify_token(key, make_token(key, "straße@example.com", PREFERENCES)) is None
    store_day(config, PAGE_2024_08_01)
    report = send(config, datetime.now(UTC).date())
    assert {"strasse@example.com", "straße@example.com"} <= set(report.sent)
    assert smtp.received_by()["straße@example.com"] == 1


def test_mangled_non_ascii_links_get_the_bad_link_page(site: str) -> None:
    for method, path in (
        ("GET", "/unsubscribe/YQ.%C3%A9"),
        ("POST", "/unsubscribe/YQ.%C3%A9"),
        ("GET", "/preferences/YQ.%C3%A9"),
        ("GET", "/confirm/YQ.1.%C3%A9"),
        ("POST", "/confirm/YQ.1.%C3%A9"),
    ):
        answer = httpx.request(method, site + path)
        assert answer.status_code == 400 and "does not work" in answer.text, path
    with httpx.Client() as client:
        client.get(f"{site}/")  # the CSRF cookie
        assert client.post(f"{site}/subscribe", data={"csrf": "é"}).status_code == 403


def test_a_large_form_is_refused_before_it_is_read(site: str) -> None:
    declared = httpx.post(
        f"{site}/subscribe",
        content=b"email=a%40example.org&x=" + b"y" * 20_000,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert declared.status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked, 1 MB in all
        for _ in range(64):
            yield b"y" * 16_384

    chunked = httpx.post(f"{site}/subscribe", content=chunks())
    assert chunked.status_code == 413

    # A gigabyte announced and never sent: the answer comes at once, nothing is read.
    host, port = urlsplit(site).hostname, urlsplit(site).port
    with socket.create_connection((host, port), timeout=5) as conn:
        conn.sendall(
            b"POST /subscribe HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n\r\nemail=a"
        )
        assert conn.recv(100).startswith(b"HTTP/1.1 413")


def test_keywords_keep_a_reader_whose_topics_left_the_config(
    config: Config, tmp_path: Path, smtp: SmtpServer
) -> None:
    store = Store.open(config.store.database)
    try:
        add_subscriber(config, store, "kw-only@example.org", ["agents"])
        store.db.execute(
            "UPDATE subscribers SET keywords = 'humanoid*' WHERE email = 'kw-only@example.org'"
        )
        store.db.conn.commit()
    finally:
        store.close()
    without_agents = replace(config, topics=[t for t in config.topics if t.name != "agents"])
    store_day(without_agents, PAGE_2024_08_01)
    report = send(without_agents, datetime.now(UTC).date())
    assert "kw-only@example.org" in report.sent
    text = mail_to(smtp, "kw-only@example.org")[0].get_body(("plain",)).get_content()
    assert "Berkeley Humanoid" in text
