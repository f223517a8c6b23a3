"""DKIM signatures (RFC 6376) on outgoing mail, optional: `smtp.dkim_key_file` and
`smtp.dkim_selector`. Done by dkimpy on the bytes that go on the wire, after the last
change to them, so what the receiver checks is what was signed.
"""

from __future__ import annotations

from collections.abc import Callable
from email.utils import parseaddr
from pathlib import Path

import dkim

from digest.config import SmtpConfig
from digest.errors import ConfigError

Signer = Callable[[bytes], bytes]


def dkim_signer(smtp: SmtpConfig) -> Signer | None:
    """Return a function that returns a message's bytes with a DKIM-Signature header in
    front (d= the sender's domain, s= smtp.dkim_selector), or None when DKIM is off.

    Raises ConfigError naming smtp.dkim_key_file when the key cannot be read.
    """
    if not (smtp.dkim_key_file and smtp.dkim_selector):
        return None
    try:
        key = Path(smtp.dkim_key_file).read_bytes()
    except OSError as e:
        raise ConfigError(
            f"{smtp.dkim_key_file}: cannot read: {e}", key="smtp.dkim_key_file"
        ) from None
    address = parseaddr(smtp.sender)[1] or smtp.sender
    domain = address.rpartition("@")[2].encode("idna")
    selector = smtp.dkim_selector.encode()
    try:  # a key that is no private key fails here, before any mail goes out
        dkim.sign(b"From: a@b\r\n\r\n", selector, domain, key)
    except dkim.DKIMException as e:
        raise ConfigError(
            f"{smtp.dkim_key_file}: not a usable DKIM private key: {e}", key="smtp.dkim_key_file"
        ) from None

    def sign(payload: bytes) -> bytes:
        # relaxed/relaxed: a relay that re-folds a header or a trailing space does not
        # break the signature; the default header set (From, To, Subject, Date,
        # Message-ID, List-*, MIME-Version, Content-Type...) is signed.
        header = dkim.sign(payload, selector, domain, key, canonicalize=(b"relaxed", b"relaxed"))
        return bytes(header) + payload

    return sign
