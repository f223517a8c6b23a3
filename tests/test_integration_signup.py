"""Issue 16's form that keeps its input, issue 14's daily/weekly field and issue 17's
bouncing readers, together on a real uvicorn with a real aiosmtpd: the typed frequency
survives an error, a new weekly reader is weekly once confirmed, and a bouncing reader's
sign-up changes nothing (their frequency included) until they confirm, and then gets
what they typed."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from selectolax.lexbor import LexborHTMLParser as HTMLParser

from digest.config import Config, SubscriberConfig
from digest.store import Store
from digest.store.readers import add_subscriber, list_subscribers, record_bounce
from digest.web.app import create_app
from tests.support.signup import wait_mail_queue
from tests.support.smtpserver import SmtpServer
from tests.support.subscribe import SITES, form_token, link_in, mail_to, path_of, site_config
from tests.support.webserver import serving

CONFIG_WEEKLY = "config-weekly@example.org"  # a weekly reader of the config file


@pytest.fixture
def weekly_site(tmp_path: Path, smtp: SmtpServer) -> Iterator[tuple[Config, str]]:
    config = site_config(tmp_path, smtp)
    config = replace(
        config,
        subscribers=[*config.subscribers, SubscriberConfig(CONFIG_WEEKLY, [], "weekly")],
    )
    Store.open(config.store.database).close()
    with serving(create_app(config)) as base:
        SITES[base] = config
        yield config, base


def rows(config: Config) -> dict[str, tuple[str, str, tuple[str, ...]]]:
    """address -> (status, frequency, topics)."""
    store = Store.open(config.store.database)
    try:
        return {r.email: (r.status, r.frequency, r.topics) for r in list_subscribers(config, store)}
    finally:
        store.close()


def bounce(config: Config, address: str) -> None:
    store = Store.open(config.store.database)
    try:
        record_bounce(store, address, hard=True, reply="550 5.1.1 no such user", source="smtp")
    finally:
        store.close()


def add_bouncing(config: Config, address: str) -> None:
    """A database reader of "agents", daily, whose mail bounces."""
    store = Store.open(config.store.database)
    try:
        add_subscriber(config, store, address, ("agents",), "daily")
    finally:
        store.close()
    bounce(config, address)


def checked_frequency(page: str) -> list[str]:
    tree = HTMLParser(page)
    return [
        i.attributes.get("value") or ""
        for i in tree.css('input[name="frequency"]')
        if "checked" in i.attributes
    ]


def test_typed_weekly_is_kept_on_an_error_and_saved_on_confirm(
    weekly_site: tuple[Config, str], smtp: SmtpServer
) -> None:
    config, site = weekly_site
    reader = "new-weekly@example.org"
    with httpx.Client() as client:
        data = {
            "csrf": form_token(client, site),
            "email": reader,
            "topics": ["agents"],
            "keywords": "x" * 500,  # refused: too long
            "frequency": "weekly",
        }
        refused = client.post(f"{site}/subscribe", data=data)
        assert refused.status_code == 400
        assert checked_frequency(refused.text) == ["weekly"]  # the typed choice, kept
        assert f'value="{reader}"' in refused.text
        data = {**data, "csrf": form_token(client, site), "keywords": ""}
        assert client.post(f"{site}/subscribe", data=data).status_code == 200
        wait_mail_queue(config)
    assert reader not in rows(config) or rows(config)[reader][0] == "pending"
    [mail] = mail_to(smtp, reader)
    assert "once a week" in mail.get_body(("plain",)).get_content()
    confirmed = httpx.post(site + path_of(link_in(mail, "confirm")))
    assert confirmed.status_code == 200
    assert rows(config)[reader] == ("active", "weekly", ("agents",))


def test_a_bouncing_config_reader_stays_weekly_when_someone_posts_the_form(
    weekly_site: tuple[Config, str], smtp: SmtpServer
) -> None:
    """The bouncing branch gives a config reader a database row (keep_row) before the
    confirmation; that row's frequency wins over the config's, so it must be theirs."""
    config, site = weekly_site
    bounce(config, CONFIG_WEEKLY)
    assert rows(config)[CONFIG_WEEKLY] == ("bouncing", "weekly", ())
    with httpx.Client() as client:
        data = {"csrf": form_token(client, site), "email": CONFIG_WEEKLY, "frequency": "weekly"}
        assert client.post(f"{site}/subscribe", data=data).status_code == 200
        wait_mail_queue(config)
    # Anyone can post the form: nothing about the reader changed.
    assert rows(config)[CONFIG_WEEKLY] == ("bouncing", "weekly", ())
    [mail] = mail_to(smtp, CONFIG_WEEKLY)
    assert "refused" in mail.get_body(("plain",)).get_content()
    assert httpx.post(site + path_of(link_in(mail, "confirm"))).status_code == 200
    assert rows(config)[CONFIG_WEEKLY] == ("active", "weekly", ())


def test_a_bouncing_reader_who_signs_up_again_is_active_again(
    weekly_site: tuple[Config, str], smtp: SmtpServer
) -> None:
    config, site = weekly_site
    reader = "db-daily@example.org"
    add_bouncing(config, reader)
    assert rows(config)[reader] == ("bouncing", "daily", ("agents",))
    with httpx.Client() as client:
        data = {
            "csrf": form_token(client, site),
            "email": reader,
            "topics": ["vision"],
            "frequency": "weekly",
        }
        assert client.post(f"{site}/subscribe", data=data).status_code == 200
        wait_mail_queue(config)
    assert rows(config)[reader] == ("bouncing", "daily", ("agents",))  # nothing yet
    [mail] = mail_to(smtp, reader)
    page = httpx.post(site + path_of(link_in(mail, "confirm")))
    assert page.status_code == 200 and "You are subscribed" in page.text
    assert rows(config)[reader][0] == "active"


def test_a_bouncing_reader_gets_what_they_typed_once_confirmed(
    weekly_site: tuple[Config, str], smtp: SmtpServer
) -> None:
    config, site = weekly_site
    reader = "db-daily@example.org"
    add_bouncing(config, reader)
    with httpx.Client() as client:
        data = {
            "csrf": form_token(client, site),
            "email": reader,
            "topics": ["vision"],
            "frequency": "weekly",
        }
        client.post(f"{site}/subscribe", data=data)
        wait_mail_queue(config)
    [mail] = mail_to(smtp, reader)
    assert "once a week (vision)" in mail.get_body(("plain",)).get_content()
    url = site + path_of(link_in(mail, "confirm"))
    assert httpx.get(url).status_code == 200  # a link scanner's GET changes nothing
    assert rows(config)[reader] == ("bouncing", "daily", ("agents",))
    httpx.post(url)
    assert rows(config)[reader][0] == "active"
    assert rows(config)[reader][1:] == ("weekly", ("vision",))


def test_a_forged_sign_up_does_not_change_a_bouncing_readers_topics(
    weekly_site: tuple[Config, str], smtp: SmtpServer
) -> None:
    """Anyone can post the form: what they typed waits with the mail, and only that
    mail's link applies it: a forged link or a link scanner's GET does not."""
    config, site = weekly_site
    reader = "db-daily@example.org"
    add_bouncing(config, reader)
    before = rows(config)[reader]
    with httpx.Client() as client:
        data = {"csrf": form_token(client, site), "email": reader, "topics": ["vision"]}
        assert client.post(f"{site}/subscribe", data=data).status_code == 200
        wait_mail_queue(config)
    assert rows(config)[reader] == before
    [mail] = mail_to(smtp, reader)
    token = path_of(link_in(mail, "confirm")).rsplit("/", 1)[1]
    forged = token[:-3] + ("AAA" if token[-3:] != "AAA" else "BBB")
    assert "You are subscribed" not in httpx.post(f"{site}/confirm/{forged}").text
    assert httpx.get(f"{site}/confirm/{token}").status_code == 200
    store = Store.open(config.store.database)
    try:  # the held choice is kept apart from the row until the link is used
        [held] = store.db.execute(
            "SELECT choice FROM web_mails WHERE email = ? AND used IS NULL", [reader]
        ).fetchone()
        assert '["vision"]' in held
    finally:
        store.close()
    assert rows(config)[reader] == before


@pytest.mark.parametrize("bouncing", [False, True], ids=["new-reader", "bouncing-reader"])
def test_a_second_sign_up_before_confirming_is_what_the_link_confirms(
    weekly_site: tuple[Config, str], smtp: SmtpServer, bouncing: bool
) -> None:
    """The reader changes their mind before confirming: the limits send no second mail,
    and the first mail's link confirms what they typed last (before, the second choice
    was dropped without a word)."""
    config, site = weekly_site
    reader = "changes-mind@example.org"
    if bouncing:
        add_bouncing(config, reader)
    before = rows(config).get(reader)
    with httpx.Client() as client:
        for topics, frequency in ((["agents"], "daily"), (["vision"], "weekly")):
            data = {
                "csrf": form_token(client, site),
                "email": reader,
                "topics": topics,
                "frequency": frequency,
            }
            assert client.post(f"{site}/subscribe", data=data).status_code == 200
            wait_mail_queue(config)
    [mail] = mail_to(smtp, reader)  # one mail for the two posts
    if bouncing:
        assert rows(config)[reader] == before  # nothing changes before the link is used
    else:
        assert rows(config)[reader][0] == "pending"
    text = mail.get_body(("plain",))
    assert text is not None
    # Sent before the second post: it names the first choice and cannot be changed.
    assert "once a day (agents)" in " ".join(text.get_content().split())
    link = site + path_of(link_in(mail, "confirm"))
    # The page with the button says what pressing it applies: what was typed last.
    page = HTMLParser(httpx.get(link).text).body
    assert page is not None
    shown = " ".join(page.text().split())
    assert f"Start the email to {reader}: once a week (vision)?" in shown, shown
    assert "agents" not in shown
    done = HTMLParser(httpx.post(link).text).body
    assert done is not None
    assert f"{reader} gets the next weekly email." in " ".join(done.text().split())
    assert rows(config)[reader] == ("active", "weekly", ("vision",))


def test_the_confirm_page_shows_typed_keywords_as_text_never_as_markup(
    weekly_site: tuple[Config, str], smtp: SmtpServer
) -> None:
    """The confirm page repeats what was typed (keywords are free text): a hostile
    sign-up's markup comes back escaped, shown as the characters typed."""
    config, site = weekly_site
    reader = "hostile@example.org"
    typed = "<script>alert(1)</script> <img src=x onerror=alert(2)>"
    with httpx.Client() as client:
        data = {"csrf": form_token(client, site), "email": reader, "keywords": typed}
        assert client.post(f"{site}/subscribe", data=data).status_code == 200
    wait_mail_queue(config)
    [mail] = mail_to(smtp, reader)
    raw = httpx.get(site + path_of(link_in(mail, "confirm"))).text
    assert "<script>" not in raw and "<img" not in raw
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in raw
    page = HTMLParser(raw)
    assert page.css("script") == [] and page.css("img") == []
    assert page.body is not None
    assert f"your keywords ({typed})" in " ".join(page.body.text().split())


def test_a_web_mails_table_of_before_gets_the_choice_column(tmp_path: Path) -> None:
    """web_mails is made on first use, so the migration must add its column to a table
    made by the code of before, and leave a database without one alone."""
    from digest.store.schema import MIGRATIONS
    from digest.store.signups import ensure_mail_table

    path = str(tmp_path / "old.db")
    store = Store.open(path)
    try:
        store.db.execute("DROP TABLE IF EXISTS web_mails")
        store.db.execute(
            "CREATE TABLE web_mails (id INTEGER PRIMARY KEY, email TEXT NOT NULL, "
            "kind TEXT NOT NULL, nonce TEXT, subject TEXT NOT NULL, body TEXT NOT NULL, "
            "queued TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'queued', claimed TEXT, "
            "used TEXT, reason TEXT)"
        )
        store.db.execute(f"PRAGMA user_version = {len(MIGRATIONS) - 1}")
    finally:
        store.close()
    store = Store.open(path)
    try:
        assert store.schema_version == len(MIGRATIONS)
        ensure_mail_table(store)
        columns = [r[1] for r in store.db.execute("PRAGMA table_info(web_mails)")]
        assert columns[-1] == "choice"
    finally:
        store.close()
    fresh = Store.open(str(tmp_path / "new.db"))
    try:
        assert "web_mails" not in fresh.db.table_names()  # made on first use, as before
    finally:
        fresh.close()


def test_preferences_of_a_weekly_config_reader_keep_what_was_typed(
    weekly_site: tuple[Config, str],
) -> None:
    from digest.store.meta import secret_key
    from digest.tokens import PREFERENCES, make_token

    config, site = weekly_site
    store = Store.open(config.store.database)
    try:
        token = make_token(secret_key(store, config.secret_key), CONFIG_WEEKLY, PREFERENCES)
    finally:
        store.close()
    url = f"{site}/preferences/{token}"
    with httpx.Client() as client:
        page = client.get(url)
        assert page.status_code == 200 and checked_frequency(page.text) == ["weekly"]
        csrf = form_token(client, site, f"/preferences/{token}")
        data = {"csrf": csrf, "keywords": "y" * 500, "frequency": "daily", "topics": ["agents"]}
        refused = client.post(url, data=data)
        assert refused.status_code == 400
        assert checked_frequency(refused.text) == ["daily"]  # typed, not the saved weekly
        assert rows(config)[CONFIG_WEEKLY] == ("active", "weekly", ())
        csrf = form_token(client, site, f"/preferences/{token}")
        saved = client.post(url, data={**data, "csrf": csrf, "keywords": "", "frequency": "weekly"})
        assert saved.status_code == 200
    assert rows(config)[CONFIG_WEEKLY] == ("active", "weekly", ("agents",))
