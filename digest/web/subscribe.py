"""Subscribing on the web: sign up, confirm by mail, change topics, unsubscribe.

What each step trusts:
- Every token is an itsdangerous token with a salt of its own kind (subscribers.sign):
  a CSRF token, a confirm link, an unsubscribe link and a preferences link are never
  valid as one another, and a token whose address does not normalise is refused.
- The subscribe form carries a CSRF token bound to a random cookie (double submit), so
  another site cannot post it from a visitor's browser. Requests are limited per client
  address. The answer is the same whether the address was new, pending or already
  subscribed: nobody learns who reads the digest.
- Mails to a sign-up address are limited: at most one outstanding mail per address per
  `web.confirm_hours`, and `web.confirm_mails_per_hour` for all addresses together, so
  the form cannot be used to bomb a mailbox from many client addresses. The mails go
  through a table (`web_mails`) that a background thread sends: a slow mail server never
  holds a web worker, and a mail queued before a restart still goes out.
- The confirmation link expires after `web.confirm_hours` and is bound to the sign-up it
  was made for (a random nonce kept with its mail): confirming uses it up, and an
  unsubscribe voids every link issued before it, whatever the clock says.
- Unsubscribe and preferences links never expire: an unsubscribe link in a mail from
  last year must still work. Only a confirmed reader can change preferences; coming back
  after an unsubscribe goes through the form and a new confirmation.
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from digest.addresses import address_key, normalize_address
from digest.config import Config
from digest.deliver.notices import send_notice
from digest.errors import DigestError, KeywordsError, SubscriberError
from digest.models import SubscriberStatus
from digest.store import Store
from digest.store.meta import secret_key
from digest.store.readers import check_frequency, check_topics, list_subscribers
from digest.store.signups import (
    activate,
    claim_next_mail,
    confirm_choice,
    confirm_mail_unused,
    delete_pending_before,
    ensure_mail_table,
    finish_mail,
    first_mail_since,
    has_outstanding_mail,
    hold_latest_choice,
    is_active,
    keep_row,
    mails_since,
    queue_mail,
    record_pending,
    row_choice,
    save_choice,
    subscriber_status,
    unsubscribe_row,
    unused_confirm_mail,
)
from digest.tokens import (
    CONFIRM,
    CSRF,
    PREFERENCES,
    UNSUBSCRIBE,
    make_token,
    sign,
    token_address,
    unsign,
    verify_token,
)
from digest.topics import parse_keywords

log = logging.getLogger("digest.web")
MAX_KEYWORDS = 300  # characters; a personal topic, not an essay
# The cookie nonce we hand out (secrets.token_urlsafe(18)); any other cookie value is
# replaced, never echoed or signed.
NONCE = re.compile(r"[A-Za-z0-9_-]{24}")


class MailLimitReached(DigestError):
    """The hourly cap on subscription mails (all addresses) is reached; `retry_after` is
    how many seconds until the oldest of them leaves the hour."""

    def __init__(self, message: str, retry_after: float = 3600.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _stamp(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- tokens ------------------------------------------------------------------------------


def make_confirm_token(key: bytes, address: str, nonce: str, now: datetime | None = None) -> str:
    """Return the confirmation token of the sign-up `nonce` of `address`."""
    return sign(key, CONFIRM, {"a": address, "n": nonce}, now=now)


def verify_confirm_token(
    key: bytes, token: str, max_age: timedelta, now: datetime | None = None
) -> tuple[str, str, datetime] | None:
    """Return (address, sign-up nonce, issued at) of a genuine, unexpired confirmation
    token, else None."""
    found = unsign(key, CONFIRM, token, max_age=int(max_age.total_seconds()), now=now)
    if found is None or not isinstance(found[0], dict):
        return None
    payload, issued = found
    address, nonce = token_address(payload.get("a")), payload.get("n")
    if address is None or not isinstance(nonce, str):
        return None
    return address, nonce, issued


def new_csrf(key: bytes) -> tuple[str, str]:
    """Return (cookie value, form token): a random nonce and its CSRF token."""
    nonce = secrets.token_urlsafe(18)
    return nonce, csrf_token(key, nonce)


def csrf_token(key: bytes, nonce: str) -> str:
    """Return the form token that goes with the cookie's `nonce`."""
    return sign(key, CSRF, nonce)


def csrf_ok(key: bytes, cookie: str | None, token: str | None) -> bool:
    """True when the form token is a CSRF token for the cookie's nonce."""
    if not cookie or not token or not NONCE.fullmatch(cookie):
        return False
    found = unsign(key, CSRF, token)
    if found is None or not isinstance(found[0], str):
        return False
    return hmac.compare_digest(found[0].encode(), cookie.encode())


# -- rate limit --------------------------------------------------------------------------


class SignUpLimiter:
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
        """Count a hit for `client`; False when it is over the limit."""
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

    def retry_after(self, client: str) -> float:
        """Seconds until `client` may be counted again (0 when it may now)."""
        now = self.clock()
        with self._lock:
            hits = self._hits.get(client)
            if not hits or len(hits) < self.limit:
                return 0.0
            return max(0.0, self.window - (now - hits[0]))


# -- the mail queue ----------------------------------------------------------------------


class Outbox:
    """Sends the queued `web_mails` rows from one background thread.

    The thread starts on `wake()` and ends after `idle` seconds with nothing to send,
    so no thread outlives its work. Each row is claimed (queued -> sending) before it is
    sent, so two processes on one database never send the same mail.
    """

    def __init__(self, config: Config, idle: float = 5.0) -> None:
        self.config = config
        self.idle = idle
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def wake(self) -> None:
        """Make sure the sender thread runs and looks at the queue now."""
        with self._lock:
            self._event.set()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="outbox", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            self._event.clear()
            try:
                while self._send_one():
                    pass
            except Exception:  # never let the thread die silently with mail queued
                log.exception("sign-up mails: the queue could not be read")
            if not self._event.wait(self.idle):
                with self._lock:
                    if not self._event.is_set():
                        self._thread = None
                        return

    def _send_one(self) -> bool:
        store = Store.open(self.config.store.database)
        try:
            ensure_mail_table(store)
            now = datetime.now(UTC)
            claimed = claim_next_mail(store, _stamp(now), _stamp(now - timedelta(minutes=15)))
            if claimed is None:
                return False
            mail_id, address, subject, body = claimed
            reason: str | None = None
            try:
                send_notice(self.config, address, subject, body)
            except DigestError as e:
                log.warning("sign-up mail to %s not sent: %s", address, e)
                status, reason = "failed", str(e)
            else:
                status = "sent"
            finish_mail(store, mail_id, status, reason)
            return True
        finally:
            store.close()


# -- the steps ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Choice:
    """What a reader chose on a form, checked."""

    topics: tuple[str, ...]
    keywords: str
    frequency: str = "daily"  # or "weekly"

    @property
    def weekly(self) -> bool:
        return self.frequency == "weekly"


def check_choice(
    config: Config, topics: Sequence[str], keywords: str, frequency: str = "daily"
) -> Choice:
    """Return the checked choice; raises SubscriberError saying what is wrong."""
    chosen = check_topics(config, topics)
    how = check_frequency(frequency or "daily")
    keywords = " ".join(keywords.split())
    if len(keywords) > MAX_KEYWORDS:
        raise SubscriberError(f"keep the keywords under {MAX_KEYWORDS} characters")
    if keywords:
        try:
            parse_keywords(keywords)
        except KeywordsError as e:
            raise SubscriberError(f"keywords {e}") from None  # the form field's name
    return Choice(chosen, keywords, how)


def purge_pending(store: Store, max_age: timedelta, now: datetime) -> int:
    """Delete sign-ups not confirmed within `max_age`; return how many."""
    return delete_pending_before(store, _stamp(now - max_age))


def request_subscription(
    config: Config,
    store: Store,
    address: str,
    choice: Choice,
    *,
    now: datetime | None = None,
) -> str:
    """Record a sign-up and queue the mail that confirms it; return the address.

    An address that already gets the digest is not changed: it is mailed a note with
    its preferences link instead, so the page shown is the same in both cases. An
    address with a mail of the last `web.confirm_hours` still outstanding gets no other
    (the answer is the same). Raises SubscriberError for a bad address, MailLimitReached
    when `web.confirm_mails_per_hour` mails went out in the last hour.
    """
    now = now or datetime.now(UTC)
    address = normalize_address(address)
    key = secret_key(store, config.secret_key)
    max_age = timedelta(hours=config.web.confirm_hours)
    ensure_mail_table(store)
    purge_pending(store, max_age, now)
    base = config.feeds.base_url.rstrip("/")
    title = config.email.subject_prefix
    with store.transaction() as conn:
        # One transaction (BEGIN IMMEDIATE): thirty requests at once for one address
        # see each other's mail, and only the first queues one.
        recent = mails_since(conn, _stamp(now - timedelta(hours=1)))
        if recent >= config.web.confirm_mails_per_hour:
            oldest = first_mail_since(conn, _stamp(now - timedelta(hours=1)))
            wait = 3600.0
            if oldest:
                aged = now - datetime.fromisoformat(oldest.replace("Z", "+00:00"))
                wait = max(1.0, 3600.0 - aged.total_seconds())
            raise MailLimitReached(
                f"{recent} sign-up mails in the last hour "
                f"(web.confirm_mails_per_hour = {config.web.confirm_mails_per_hour})",
                retry_after=wait,
            )
        if has_outstanding_mail(conn, address, _stamp(now - max_age)):
            # No second mail (the limits), but not a lost choice either: the first
            # mail's link confirms what was typed last.
            choice_now = (choice.topics, choice.keywords, choice.frequency)
            hold_latest_choice(conn, address, _stamp(now - max_age), choice_now)
            return address
        rows = list_subscribers(config, store)
        active = {address_key(r.email) for r in rows if r.status == SubscriberStatus.ACTIVE}
        bouncing = {address_key(r.email): r for r in rows if r.status == SubscriberStatus.BOUNCING}
        chosen = describe_choice(choice)
        mail: tuple[str, str | None, str, str]
        held: tuple[tuple[str, ...], str, str] | None = None
        if address_key(address) in bouncing:
            # Mail to them bounced: confirming proves the mailbox works again and mails
            # them again (signups.activate) with what they typed now; anyone can post
            # this form, so the row stays as it is until then and the choice waits with
            # the mail (web_mails.choice).
            row = bouncing[address_key(address)]
            keep_row(conn, row.email, row.topics, row.keywords, _stamp(now), row.frequency)
            held = (choice.topics, choice.keywords, choice.frequency)
            nonce = secrets.token_urlsafe(12)
            link = f"{base}/confirm/{make_confirm_token(key, address, nonce, now)}"
            mail = (
                "confirm",
                nonce,
                f"{title}: confirm to get the digest again",
                f"Someone (probably you) asked to subscribe {address} to the {title} digest.\n"
                "This address is subscribed, but mail to it was refused, so it is not sent "
                "any more.\n\n"
                f"To get it again, {chosen}, open this link within "
                f"{config.web.confirm_hours} hours and press Confirm:\n\n{link}\n\n"
                "If it was not you, ignore this mail: nothing changes without the "
                "confirmation.\n",
            )
        elif address_key(address) in active:
            link = f"{base}/preferences/{make_token(key, address, PREFERENCES)}"
            mail = (
                "note",
                None,
                f"{title}: you are already subscribed",
                f"Someone (probably you) asked to subscribe {address} to the {title} digest.\n"
                f"This address already gets it. To change your topics or unsubscribe:\n\n"
                f"{link}\n\nIf it was not you, there is nothing to do.\n",
            )
        else:
            # Someone who unsubscribed stays unsubscribed until they use the link mailed
            # now: anyone can post this form with their address, and a pending row would
            # not survive purge_pending (nor, for a config subscriber, keep them silenced;
            # see list_subscribers).
            record_pending(
                conn, address, choice.topics, choice.keywords, _stamp(now), choice.frequency
            )
            nonce = secrets.token_urlsafe(12)
            link = f"{base}/confirm/{make_confirm_token(key, address, nonce, now)}"
            mail = (
                "confirm",
                nonce,
                f"{title}: confirm your subscription",
                f"Someone (probably you) asked to subscribe {address} to the {title} digest:\n"
                "new papers from the Hugging Face Daily Papers list, "
                f"{chosen}.\n\n"
                f"To confirm, open this link within {config.web.confirm_hours} hours and "
                f"press Confirm:\n\n{link}\n\n"
                "If it was not you, ignore this mail: nothing is sent without the "
                "confirmation.\n",
            )
        kind, mail_nonce, subject, text = mail
        queue_mail(conn, address, kind, mail_nonce, subject, text, _stamp(now), held)
    return address


def describe_choice(choice: Choice) -> str:
    """The choice in words, for the confirmation mail and page: "once a day (agents,
    your keywords (x))"."""
    follows = ", ".join(choice.topics) or ("" if choice.keywords else "every new paper")
    if choice.keywords:
        follows = ", ".join(filter(None, [follows, f"your keywords ({choice.keywords})"]))
    return f"{'once a week' if choice.weekly else 'once a day'} ({follows})"


@dataclass(frozen=True)
class ToConfirm:
    """A genuine confirmation link: its address, and what pressing Confirm applies or,
    once pressed, what the reader gets (None: a link pressed already, on its page)."""

    address: str
    choice: Choice | None


def confirm_link(
    config: Config, store: Store, token: str, *, now: datetime | None = None
) -> ToConfirm | None:
    """Return the address of a genuine, unexpired confirmation token and what confirming
    it applies (what was typed last: a second sign-up before confirming changes it, and
    the mail, sent already, cannot say so), changing nothing (the page a GET shows: link
    scanners in mail filters fetch links, people press)."""
    max_age = timedelta(hours=config.web.confirm_hours)
    found = verify_confirm_token(secret_key(store, config.secret_key), token, max_age, now)
    if found is None:
        return None
    address, nonce, _issued = found
    if not confirm_mail_unused(store, address, nonce):  # used up, voided, or not ours
        return ToConfirm(address, None) if is_active(store, address) else None
    held = confirm_choice(store, address, nonce)
    return ToConfirm(address, Choice(*held) if held else None)


def confirm(
    config: Config, store: Store, token: str, *, now: datetime | None = None
) -> ToConfirm | None:
    """Activate the sign-up a confirmation token names; return its address and what the
    reader now gets, or None when the token is forged or expired, or its sign-up is gone,
    used up or voided."""
    now = now or datetime.now(UTC)
    max_age = timedelta(hours=config.web.confirm_hours)
    found = verify_confirm_token(secret_key(store, config.secret_key), token, max_age, now)
    if found is None:
        return None
    address, nonce, _issued = found
    ensure_mail_table(store)
    purge_pending(store, max_age, now)
    with store.transaction() as conn:
        mail_id = unused_confirm_mail(conn, address, nonce)
        status = subscriber_status(conn, address)
        if status is None:
            return None
        if mail_id is None and status != SubscriberStatus.ACTIVE:
            return None  # voided by an unsubscribe since, or never ours
        if mail_id is not None:  # else used already: a second press of the button is fine
            activate(conn, mail_id, address, _stamp(now))
        now_gets = row_choice(conn, address)
    return ToConfirm(address, Choice(*now_gets) if now_gets else None)


def unsubscribe_address(config: Config, store: Store, token: str) -> str | None:
    """Return the address of a genuine unsubscribe token (old format too), else None."""
    return verify_token(secret_key(store, config.secret_key), token, UNSUBSCRIBE)


def preferences_address(config: Config, store: Store, token: str) -> str | None:
    """Return the address of a genuine preferences token, else None."""
    return verify_token(secret_key(store, config.secret_key), token, PREFERENCES)


def unsubscribe(config: Config, store: Store, token: str) -> str | None:
    """Unsubscribe the token's address (config subscribers too) and void its outstanding
    confirmation links; return the address, or None for a bad token."""
    address = unsubscribe_address(config, store, token)
    if address is None:
        return None
    unsubscribe_row(store, address, _stamp(datetime.now(UTC)))
    return address


@dataclass(frozen=True)
class Preferences:
    """What a reader follows now, for the preferences page."""

    address: str
    status: SubscriberStatus
    topics: tuple[str, ...]
    keywords: str
    frequency: str = "daily"


def preferences(config: Config, store: Store, token: str) -> Preferences | None:
    """Return what the token's subscriber follows now, or None for a bad token."""
    address = preferences_address(config, store, token)
    if address is None:
        return None
    for row in list_subscribers(config, store):
        if address_key(row.email) == address_key(address):
            return Preferences(row.email, row.status, row.topics, row.keywords, row.frequency)
    return Preferences(address, SubscriberStatus.UNSUBSCRIBED, (), "")


class NotSubscribed(SubscriberError):
    """Preferences were sent for an address that is not a confirmed reader now."""


def save_preferences(config: Config, store: Store, token: str, choice: Choice) -> str | None:
    """Set the token's reader's topics and keywords; return the address, or None for a
    bad token.

    Only a confirmed reader (active in the database or in the config) can: this never
    creates nor re-activates a subscriber (raises NotSubscribed), so a token, whatever
    it is, cannot stand in for the confirmation mail.
    """
    address = preferences_address(config, store, token)
    if address is None:
        return None
    stamp = _stamp(datetime.now(UTC))
    with store.transaction() as conn:
        rows = list_subscribers(config, store)
        if not any(
            address_key(r.email) == address_key(address) and r.status == SubscriberStatus.ACTIVE
            for r in rows
        ):
            raise NotSubscribed(f"{address} is not subscribed now")
        save_choice(conn, address, choice.topics, choice.keywords, stamp, choice.frequency)
    return address
