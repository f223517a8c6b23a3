"""Subscribing on the web: sign up, confirm by mail, change topics, unsubscribe.

What each step trusts:
- The subscribe form carries a CSRF token bound to a random cookie (double submit,
  signed with the secret key), so another site cannot post it from a visitor's browser.
  Requests are limited per client address. The answer is the same whether the address
  was new, pending or already subscribed: nobody learns who reads the digest.
- The confirmation link is signed, names its purpose and expires after
  `web.confirm_hours`; unconfirmed sign-ups older than that are deleted on the next
  subscribe or confirm.
- Unsubscribe and preferences links carry the subscriber's HMAC token (the one in every
  email, subscribers.make_token). They never expire: an unsubscribe link in a mail from
  last year must still work. Nothing changes for a subscriber without their token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from digest.config import Config
from digest.errors import DigestError
from digest.notices import send_notice
from digest.store import Store
from digest.subscribers import (
    SubscriberError,
    address_key,
    check_topics,
    list_subscribers,
    make_token,
    normalize_address,
    secret_key,
    verify_token,
)
from digest.topics import parse_keywords

CONFIRM = "confirm"
MAX_KEYWORDS = 300  # characters; a personal topic, not an essay


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(key: bytes, *parts: str) -> str:
    mac = hmac.new(key, "\x00".join(parts).encode(), hashlib.sha256).digest()
    return _b64(mac)[:32]


def _stamp(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_stamp(stamp: str) -> datetime:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


# -- tokens ------------------------------------------------------------------------------


def make_confirm_token(key: bytes, address: str, now: datetime) -> str:
    """Return a confirmation token for `address`, issued at `now`."""
    issued = str(int(now.timestamp()))
    return f"{_b64(address.encode())}.{issued}.{_sign(key, CONFIRM, address_key(address), issued)}"


def verify_confirm_token(
    key: bytes, token: str, max_age: timedelta, now: datetime
) -> tuple[str, datetime] | None:
    """Return (address, issued at) of a genuine, unexpired confirmation token, else None."""
    try:
        encoded, issued, mac = token.split(".")
        address = _unb64(encoded).decode()
        age = now.timestamp() - int(issued)
    except (ValueError, UnicodeDecodeError):
        return None
    # As bytes: compare_digest refuses str with non-ASCII characters (a mangled link).
    expected = _sign(key, CONFIRM, address_key(address), issued)
    if not hmac.compare_digest(mac.encode(), expected.encode()):
        return None
    if not 0 <= age <= max_age.total_seconds():
        return None
    return address, datetime.fromtimestamp(int(issued), UTC)


def new_csrf(key: bytes) -> tuple[str, str]:
    """Return (cookie value, form token): a random nonce and its signature."""
    nonce = secrets.token_urlsafe(18)
    return nonce, csrf_token(key, nonce)


def csrf_token(key: bytes, nonce: str) -> str:
    """Return the form token that goes with the cookie's `nonce`."""
    return _sign(key, "csrf", nonce)


def csrf_ok(key: bytes, cookie: str | None, token: str | None) -> bool:
    """True when the form token is the signature of the cookie's nonce."""
    if not cookie or not token:
        return False
    return hmac.compare_digest(token.encode(), csrf_token(key, cookie).encode())


# -- rate limit --------------------------------------------------------------------------


class RateLimiter:
    """At most `limit` hits per `window` seconds per client, in this process's memory.

    Memory per client is bounded by `limit` timestamps; clients idle for a window are
    forgotten as others arrive.
    """

    def __init__(
        self, limit: int, window: float = 3600.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def allow(self, client: str) -> bool:
        now = self.clock()
        with self._lock:
            if len(self._hits) > 10_000:  # forget the quiet ones
                self._hits = {
                    c: h for c, h in self._hits.items() if h and now - h[-1] < self.window
                }
            hits = self._hits.setdefault(client, deque())
            while hits and now - hits[0] >= self.window:
                hits.popleft()
            if len(hits) >= self.limit:
                return False
            hits.append(now)
            return True


# -- the steps ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Choice:
    """What a reader chose on a form, checked."""

    topics: tuple[str, ...]
    keywords: str


def check_choice(config: Config, topics: Sequence[str], keywords: str) -> Choice:
    """Return the checked choice; raises SubscriberError saying what is wrong."""
    chosen = check_topics(config, topics)
    keywords = " ".join(keywords.split())
    if len(keywords) > MAX_KEYWORDS:
        raise SubscriberError(f"keep the keywords under {MAX_KEYWORDS} characters")
    if keywords:
        try:
            parse_keywords(keywords)
        except DigestError as e:
            raise SubscriberError(str(e).replace("--keywords ", "keywords ")) from None
    return Choice(chosen, keywords)


def purge_pending(store: Store, max_age: timedelta, now: datetime) -> int:
    """Delete sign-ups not confirmed within `max_age`; return how many."""
    with store.transaction() as conn:
        cur = conn.execute(
            "DELETE FROM subscribers WHERE status = 'pending' AND updated < ?",
            (_stamp(now - max_age),),
        )
    return cur.rowcount


def request_subscription(
    config: Config,
    store: Store,
    address: str,
    choice: Choice,
    *,
    now: datetime | None = None,
) -> str:
    """Record a sign-up and mail the link that confirms it; return the address as mailed.

    An address that already gets the digest is not changed: it is mailed a note with
    its preferences link instead, so the page shown is the same in both cases.
    Raises SubscriberError for a bad address, DeliveryError when the mail was refused.
    """
    now = now or datetime.now(UTC)
    address = normalize_address(address)
    key = secret_key(store)
    max_age = timedelta(hours=config.web.confirm_hours)
    purge_pending(store, max_age, now)
    base = config.feeds.base_url.rstrip("/")
    title = config.email.subject_prefix
    active = {address_key(r.email) for r in list_subscribers(config, store) if r.status == "active"}
    if address_key(address) in active:
        link = f"{base}/preferences/{make_token(key, address)}"
        send_notice(
            config,
            address,
            f"{title}: you are already subscribed",
            f"Someone (probably you) asked to subscribe {address} to the {title} digest.\n"
            f"This address already gets it. To change your topics or unsubscribe:\n\n"
            f"{link}\n\nIf it was not you, there is nothing to do.\n",
        )
        return address
    with store.transaction() as conn:
        # Someone who unsubscribed stays unsubscribed, with the time they did, until they
        # follow a link issued after it: anyone can post this form with their address,
        # and a pending row would not survive purge_pending (nor, for a config
        # subscriber, keep them silenced; see list_subscribers).
        conn.execute(
            "INSERT INTO subscribers (email, topics, keywords, status, created, updated) "
            "VALUES (?, ?, ?, 'pending', ?, ?) ON CONFLICT (email) DO UPDATE SET "
            "topics = excluded.topics, keywords = excluded.keywords, "
            "status = CASE WHEN status = 'unsubscribed' THEN status ELSE 'pending' END, "
            "updated = CASE WHEN status = 'unsubscribed' THEN updated ELSE excluded.updated END",
            (address, json.dumps(list(choice.topics)), choice.keywords, _stamp(now), _stamp(now)),
        )
    link = f"{base}/confirm/{make_confirm_token(key, address, now)}"
    follows = ", ".join(choice.topics) or ("" if choice.keywords else "every new paper")
    if choice.keywords:
        follows = ", ".join(filter(None, [follows, f"your keywords ({choice.keywords})"]))
    send_notice(
        config,
        address,
        f"{title}: confirm your subscription",
        f"Someone (probably you) asked to subscribe {address} to the {title} digest:\n"
        f"new papers from the Hugging Face Daily Papers list, once a day ({follows}).\n\n"
        f"To confirm, open this link within {config.web.confirm_hours} hours and press "
        f"Confirm:\n\n{link}\n\n"
        "If it was not you, ignore this mail: nothing is sent without the confirmation.\n",
    )
    return address


def confirm_token_address(
    config: Config, store: Store, token: str, *, now: datetime | None = None
) -> str | None:
    """Return the address of a genuine, unexpired confirmation token, changing nothing
    (the page a GET shows: link scanners in mail filters fetch links, people press)."""
    max_age = timedelta(hours=config.web.confirm_hours)
    found = verify_confirm_token(secret_key(store), token, max_age, now or datetime.now(UTC))
    return found[0] if found else None


def confirm(config: Config, store: Store, token: str, *, now: datetime | None = None) -> str | None:
    """Activate the sign-up a confirmation token names; return its address, or None when
    the token is forged, expired, or its sign-up is gone."""
    now = now or datetime.now(UTC)
    max_age = timedelta(hours=config.web.confirm_hours)
    found = verify_confirm_token(secret_key(store), token, max_age, now)
    if found is None:
        return None
    address, issued = found
    purge_pending(store, max_age, now)
    with store.transaction() as conn:
        row = conn.execute(
            "SELECT status, updated FROM subscribers WHERE email = ?", (address,)
        ).fetchone()
        if row is None:
            return None
        status, updated = row
        # A link issued after the unsubscribe is a new sign-up; an older one does not undo it.
        if status == "pending" or (status == "unsubscribed" and issued >= _parse_stamp(updated)):
            conn.execute(
                "UPDATE subscribers SET status = 'active', updated = ? WHERE email = ?",
                (_stamp(now), address),
            )
        elif status != "active":
            return None
    return address


def token_address(store: Store, token: str) -> str | None:
    """Return the address a subscriber token was made for, or None if it is not genuine."""
    return verify_token(secret_key(store), token)


def unsubscribe(config: Config, store: Store, token: str) -> str | None:
    """Unsubscribe the token's address (config subscribers too); return it, or None."""
    address = token_address(store, token)
    if address is None:
        return None
    stamp = _stamp(datetime.now(UTC))
    with store.transaction() as conn:
        conn.execute(
            "INSERT INTO subscribers (email, topics, status, created, updated) "
            "VALUES (?, '[]', 'unsubscribed', ?, ?) ON CONFLICT (email) DO UPDATE SET "
            "status = 'unsubscribed', updated = excluded.updated",
            (address, stamp, stamp),
        )
    return address


@dataclass(frozen=True)
class Preferences:
    address: str
    status: str
    topics: tuple[str, ...]
    keywords: str


def preferences(config: Config, store: Store, token: str) -> Preferences | None:
    """Return what the token's subscriber follows now, or None for a bad token."""
    address = token_address(store, token)
    if address is None:
        return None
    for row in list_subscribers(config, store):
        if address_key(row.email) == address_key(address):
            return Preferences(row.email, row.status, row.topics, row.keywords)
    return Preferences(address, "unsubscribed", (), "")


def save_preferences(config: Config, store: Store, token: str, choice: Choice) -> str | None:
    """Set the token's subscriber's topics and keywords and make them active (saving is
    also how someone who unsubscribed comes back); return the address, or None."""
    address = token_address(store, token)
    if address is None:
        return None
    stamp = _stamp(datetime.now(UTC))
    with store.transaction() as conn:
        conn.execute(
            "INSERT INTO subscribers (email, topics, keywords, status, created, updated) "
            "VALUES (?, ?, ?, 'active', ?, ?) ON CONFLICT (email) DO UPDATE SET "
            "topics = excluded.topics, keywords = excluded.keywords, status = 'active', "
            "updated = excluded.updated",
            (address, json.dumps(list(choice.topics)), choice.keywords, stamp, stamp),
        )
    return address
