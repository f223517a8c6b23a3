"""POST /webhooks/bounce on a real uvicorn: the shared secret (missing, forged, right),
the body shapes (ours, Postmark, SES through SNS), and addresses that cannot be ours."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from digest.config import BouncesConfig, Config, SmtpConfig, SubscriberConfig
from digest.models import SubscriberStatus
from digest.store import Store
from digest.store.readers import list_subscribers
from digest.web.app import create_app
from tests.support.webserver import make_config, serving

SECRET = "s3cret-webhook-value"
READERS = ["a@example.org", "b@example.org", "c@example.org", "d@example.org"]


def site_config(tmp_path: Path, secret: str = SECRET) -> Config:
    base = make_config(tmp_path)
    return dataclasses.replace(
        base,
        smtp=SmtpConfig(max_bounces=1),
        bounces=BouncesConfig(webhook_secret=secret),
        subscribers=[SubscriberConfig(a) for a in READERS],
    )


@pytest.fixture
def hook(tmp_path: Path) -> Iterator[tuple[Config, str]]:
    config = site_config(tmp_path)
    Store.open(config.store.database).close()
    with serving(create_app(config)) as base:
        yield config, f"{base}/webhooks/bounce"


def states(config: Config) -> dict[str, SubscriberStatus]:
    store = Store.open(config.store.database)
    try:
        return {r.email: r.status for r in list_subscribers(config, store)}
    finally:
        store.close()


def bounced(config: Config) -> set[str]:
    return {a for a, s in states(config).items() if s == SubscriberStatus.BOUNCING}


def bearer(secret: str = SECRET) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def test_missing_or_forged_secret_is_refused(hook: tuple[Config, str]) -> None:
    config, url = hook
    body = {"email": READERS[0], "type": "permanent"}
    for headers in (
        {},
        bearer("wrong"),
        bearer(SECRET + "x"),
        bearer(SECRET[:-1]),
        {"Authorization": "Basic " + "bm90OnJpZ2h0"},  # not:right
        {"Authorization": "Basic !!!"},
        {"X-Secret": SECRET},  # not a place we read it from
    ):
        answer = httpx.post(url, json=body, headers=headers)
        assert answer.status_code == 401, (headers, answer.text)
    assert bounced(config) == set()


def test_our_shape_postmark_and_ses(hook: tuple[Config, str]) -> None:
    config, url = hook
    ours = httpx.post(
        url, json={"email": READERS[0].upper(), "type": "permanent"}, headers=bearer()
    )
    assert ours.status_code == 200 and ours.json() == {"counted": 1, "ignored": 0}
    postmark = httpx.post(
        url,
        json={"RecordType": "Bounce", "Type": "HardBounce", "Email": READERS[1]},
        auth=("postmark", SECRET),  # basic auth: the password is the secret
    )
    assert postmark.status_code == 200 and postmark.json()["counted"] == 1
    ses = {
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": "Permanent",
            "bouncedRecipients": [{"emailAddress": READERS[2], "status": "5.1.1"}],
        },
    }
    sns = {"Type": "Notification", "Message": json.dumps(ses)}
    answer = httpx.post(url, content=json.dumps(sns), headers=bearer())
    assert answer.status_code == 200 and answer.json()["counted"] == 1
    assert bounced(config) == set(READERS[:3])


def test_what_is_not_counted(hook: tuple[Config, str]) -> None:
    config, url = hook
    bodies = [
        {"email": READERS[3], "type": "temporary"},
        {"email": READERS[3], "type": "permanent", "status": "5.7.1"},  # spam: the message
        {"email": "stranger@example.org", "type": "permanent"},  # not a subscriber
        {"RecordType": "Bounce", "Type": "SoftBounce", "Email": READERS[3]},
    ]
    answer = httpx.post(url, json=bodies, headers=bearer())
    assert answer.status_code == 200 and answer.json() == {"counted": 0, "ignored": 4}
    assert bounced(config) == set()


@pytest.mark.parametrize(
    "body",
    [
        b'{"email": "a@example.org\\r\\nBcc: x@evil.example", "type": "permanent"}',
        b'{"email": "a@example.org\\n", "type": "permanent"}',
        b'[{"email": "b@example.org"}, {"email": "c@example.org\\r\\n"}]',
        b'{"email": "not an address"}',
        b'{"email": 7}',
        b'{"type": "permanent"}',
        b'{"email": "a@example.org", "type": "sometimes"}',
        b"not json",
    ],
)
def test_bad_bodies_change_nothing(hook: tuple[Config, str], body: bytes) -> None:
    config, url = hook
    answer = httpx.post(url, content=body, headers=bearer())
    assert answer.status_code == 400, answer.text
    assert "error" in answer.json()
    assert bounced(config) == set()  # a list with one bad address records none of it


def test_no_secret_configured_is_no_route(tmp_path: Path) -> None:
    config = site_config(tmp_path, secret="")
    Store.open(config.store.database).close()
    with serving(create_app(config)) as base:
        answer = httpx.post(
            f"{base}/webhooks/bounce", json={"email": READERS[0]}, headers=bearer("x")
        )
    assert answer.status_code == 404
    assert bounced(config) == set()
