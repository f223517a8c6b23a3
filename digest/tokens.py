"""Signed tokens: itsdangerous sign / verify given a key, one salt per purpose.

Every link we mail (unsubscribe, preferences, confirm) and the CSRF form token are
itsdangerous tokens (HMAC-SHA256), each kind with its own salt, so a token of one kind is
never valid as another. Unsubscribe links of the older hand-made HMAC format still
unsubscribe; nothing else of that format is accepted. Where the key comes from is
store.readers.secret_key.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
from collections.abc import Callable
from datetime import datetime
from typing import Any

from itsdangerous import (
    BadData,
    Signer,
    TimestampSigner,
    URLSafeSerializer,
    URLSafeTimedSerializer,
)

from digest.addresses import address_key, normalize_address
from digest.errors import SubscriberError


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# Every signed thing we hand out is an itsdangerous token with its own salt (purpose):
# the salt goes into the key derivation, so a token of one kind never verifies as
# another, whatever its payload.
UNSUBSCRIBE = "unsubscribe"  # the unsubscribe link of every digest (never expires, no time)
PREFERENCES = "preferences"  # the change-your-topics link (never expires)
CONFIRM = "confirm"  # the link in a confirmation mail (expires, bound to one sign-up)
CSRF = "csrf"  # the subscribe / preferences form token (bound to the cookie's nonce)
FEEDBACK = "feedback"  # "more / fewer like this" on one paper, for one reader (never expires)
# The local-part tags of mail addresses (not links): bounces+<tag>@ (the envelope sender,
# where bounce reports come back) and unsubscribe+<tag>@ (List-Unsubscribe's mailto).
BOUNCE_TAG = "bounce-address"
UNSUBSCRIBE_TAG = "unsubscribe-address"
PURPOSES = (UNSUBSCRIBE, PREFERENCES, CONFIRM, CSRF, FEEDBACK)
TAG_PURPOSES = (BOUNCE_TAG, UNSUBSCRIBE_TAG)
SHA256_BLOCK = 64  # bytes: the block HMAC pads its key to


def _serializer(key: bytes, purpose: str, now: datetime | None = None) -> URLSafeTimedSerializer:
    if purpose not in PURPOSES:
        raise ValueError(f"no token purpose {purpose!r}")
    signer: type[TimestampSigner] = TimestampSigner
    if now is not None:  # a token issued (or checked) at a given time: tests, mostly
        stamp = int(now.timestamp())

        class _At(TimestampSigner):
            def get_timestamp(self) -> int:
                return stamp

        signer = _At
    return URLSafeTimedSerializer(
        key,
        salt=f"papers-digest/{purpose}",
        signer=signer,
        signer_kwargs={"digest_method": hashlib.sha256},
    )


def sign(key: bytes, purpose: str, payload: Any, *, now: datetime | None = None) -> str:
    """Return a URL-safe token holding `payload` (JSON-able), signed for `purpose`."""
    return str(_serializer(key, purpose, now).dumps(payload))


def unsign(
    key: bytes,
    purpose: str,
    token: str,
    max_age: int | None = None,
    *,
    now: datetime | None = None,
) -> tuple[Any, datetime] | None:
    """Return (payload, issued at) of a genuine `purpose` token (younger than `max_age`
    seconds at `now` when given), else None: forged, of another purpose, mangled or
    expired."""
    try:
        payload, issued = _serializer(key, purpose, now).loads(
            token, max_age=max_age, return_timestamp=True
        )
    # itsdangerous turns a signed but absurd time into a datetime while raising
    # SignatureExpired; that conversion overflows for huge numbers.
    except (BadData, OverflowError, ValueError, OSError):
        return None
    return payload, issued


def token_address(payload: Any) -> str | None:
    """Return the normal form of an address carried in a token, or None when it is not
    an address (a token we made always holds one; anything else is refused)."""
    if not isinstance(payload, str):
        return None
    try:
        return normalize_address(payload)
    except SubscriberError:
        return None


def _link_serializer(key: bytes, purpose: str) -> URLSafeSerializer:
    # Subscriber links never expire, so they carry no time: the same reader gets the same
    # link in every email, and `digest preview` shows byte for byte what the send mails.
    if purpose not in (UNSUBSCRIBE, PREFERENCES):
        raise ValueError(f"this is for subscriber links, not {purpose!r}")
    return URLSafeSerializer(
        key, salt=f"papers-digest/{purpose}", signer_kwargs={"digest_method": hashlib.sha256}
    )


def make_token(key: bytes, address: str, purpose: str = UNSUBSCRIBE) -> str:
    """Return the `purpose` link token (unsubscribe or preferences) of `address`."""
    return str(_link_serializer(key, purpose).dumps(address))


def verify_token(key: bytes, token: str, purpose: str = UNSUBSCRIBE) -> str | None:
    """Return the (normalised) address of a genuine `purpose` token, else None."""
    serializer = _link_serializer(key, purpose)
    try:
        address = token_address(serializer.loads(token))
    except (BadData, ValueError):
        address = None
    if address is None and purpose == UNSUBSCRIBE:
        # Unsubscribe links mailed before the itsdangerous tokens must keep working.
        return _verify_legacy(key, token)
    return address


def _verify_legacy(key: bytes, token: str) -> str | None:
    """The pre-itsdangerous unsubscribe token: base64(address) "." HMAC(address)[:32].

    Accepted for unsubscribing only, and only for a real address: that old HMAC also
    signed CSRF nonces and confirm links (shaped "csrf\0..." / "confirm\0..."), which
    never normalise to an address, so none of those can pass for a reader here.
    """
    encoded, _, mac = token.partition(".")
    if not mac or "." in mac:
        return None
    try:
        address = _unb64(encoded).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    expected = _b64(hmac.new(key, address_key(address).encode(), hashlib.sha256).digest())[:32]
    # As bytes: compare_digest refuses str with non-ASCII characters (a mangled link).
    if not hmac.compare_digest(mac.encode(), expected.encode()):
        return None
    return token_address(address)


def address_tag(key: bytes, address: str, purpose: str) -> str:
    """Return the tag that names `address` in a mail address's local part, for `purpose`
    (BOUNCE_TAG or UNSUBSCRIBE_TAG): 16 lower-case base32 letters of an HMAC.

    Not an itsdangerous token: a local part has at most 64 characters (RFC 5321), and some
    mail systems change its case, while a token holding the address runs past 64 and is
    case-sensitive. The tag carries no address: the reader is found by computing the tags
    of every reader (store.readers.reader_index). The key is itsdangerous' derivation for
    the purpose's salt, so the two kinds of tag, and the link tokens, are never valid as
    one another.
    """
    mac = hmac.new(_tag_key(key, purpose), address_key(address).encode(), hashlib.sha256)
    return base64.b32encode(mac.digest()[:10]).decode().lower()


@functools.lru_cache(maxsize=8)
def _tag_key(key: bytes, purpose: str) -> bytes:
    if purpose not in TAG_PURPOSES:
        raise ValueError(f"no address tag purpose {purpose!r}")
    signer = Signer(key, salt=f"papers-digest/{purpose}", digest_method=hashlib.sha256)
    return bytes(signer.derive_key())


def make_feedback_token(key: bytes, address: str, paper_id: str) -> str:
    """Return the token of the "more / fewer like this" links of `paper_id` in the email
    of `address`: `<reader>.<paper id>.<MAC>`, the reader's address key in URL-safe
    base64 and an HMAC-SHA256 of both under itsdangerous' derivation of the key for the
    FEEDBACK salt (as address_tag does), so it is valid for that pair only and never as
    another kind of token. Not a URLSafeSerializer token: a send signs one per (reader,
    card), and its JSON, zlib and key derivation per call cost ten times this. No time
    in it (the same links in a resend and in `digest preview`). Which choice is in the
    link's path: the page shows one button for it, and either is the reader's to make."""
    return feedback_signer(key, address)(paper_id)


def feedback_signer(key: bytes, address: str) -> Callable[[str], str]:
    """Return paper id -> make_feedback_token(key, address, paper id), the reader's part
    made once (a send signs one per card of every reader's email)."""
    reader = _b64(address_key(address).encode())
    inner, outer = _feedback_pads(key)

    def sign(paper_id: str) -> str:
        payload = f"{reader}.{paper_id}"
        # HMAC-SHA256 (RFC 2104) from the key's padded states, hashed once a send: the
        # same MAC as hmac.digest, at a third of its cost (two hash blocks, not four).
        mac = inner.copy()
        mac.update(payload.encode())
        out = outer.copy()
        out.update(mac.digest())
        return f"{payload}.{_b64(out.digest())}"

    return sign


@functools.lru_cache(maxsize=8)
def _feedback_pads(key: bytes) -> tuple[Any, Any]:
    """SHA-256 states after HMAC's inner and outer padded key blocks (RFC 2104)."""
    mac_key = _feedback_key(key)
    if len(mac_key) > SHA256_BLOCK:  # pragma: no cover - a derived key is 32 bytes
        mac_key = hashlib.sha256(mac_key).digest()
    padded = mac_key.ljust(SHA256_BLOCK, b"\0")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in padded))
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in padded))
    return inner, outer


def verify_feedback_token(key: bytes, token: str) -> tuple[str, str] | None:
    """Return (the reader's address key, paper id) of a genuine feedback token, else None
    (forged, altered, of another kind, or not the shape we make)."""
    payload, _, mac = token.rpartition(".")
    reader, _, paper_id = payload.partition(".")
    if not (reader and paper_id and mac):
        return None
    expected = _b64(hmac.new(_feedback_key(key), payload.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(mac.encode(), expected.encode()):
        return None
    try:
        address = token_address(_unb64(reader).decode())
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    if address is None:
        return None
    return address_key(address), paper_id


@functools.lru_cache(maxsize=8)
def _feedback_key(key: bytes) -> bytes:
    signer = Signer(key, salt=f"papers-digest/{FEEDBACK}", digest_method=hashlib.sha256)
    return bytes(signer.derive_key())
