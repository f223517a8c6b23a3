"""Tokens as earlier versions made them (what old mails still carry)."""

from __future__ import annotations

import base64
import hashlib
import hmac


def old_token(key: bytes, address: str) -> str:
    """The hand-made HMAC token of earlier versions."""
    mac = hmac.new(key, address.lower().encode(), hashlib.sha256).digest()
    b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()  # noqa: E731
    return f"{b64(address.encode())}.{b64(mac)[:32]}"
