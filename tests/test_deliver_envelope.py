"""The envelope's addresses: `quoteaddr` skips smtplib's parsing for plain addresses and
must answer what smtplib.quoteaddr answers, for those and for odd ones; `unsendable`'s
fast path must not let a control character through."""

from __future__ import annotations

import random
import smtplib
import string

from digest.deliver.smtp import quoteaddr, unsendable

ATEXT = string.ascii_letters + string.digits + "!#$%&'*+/=?^_`{|}~-"


def test_quoteaddr_is_smtplibs() -> None:
    rng = random.Random(3)
    odd = ' .@<>()[]:;,"\\\t'
    samples = [
        "reader@example.net",
        "first.last+tag@mail.example.co.uk",
        "o'brien@example.ie",
        "a..b@example.net",
        ".a@example.net",
        "a.@example.net",
        "a@b",
        "a@-b.example",
        '"odd local"@example.net',
        "Name <reader@example.net>",
        "reader@[192.0.2.1]",
        "jörg@exämple.net",
        "",
        "@",
        "no-at-sign",
    ]
    for _ in range(3000):
        local = "".join(rng.choice(ATEXT + (odd if rng.random() < 0.2 else ".")) for _ in range(8))
        domain = "".join(rng.choice(string.ascii_lowercase + ".-") for _ in range(8))
        samples.append(f"{local}@{domain}")
    fast = 0
    for address in samples:
        assert quoteaddr(address) == smtplib.quoteaddr(address), address
        fast += quoteaddr.__globals__["_DOT_ATOM_ADDRESS"].fullmatch(address) is not None
    assert fast > 1000  # the fast path was taken, and agreed


def test_unsendable_finds_every_control_character() -> None:
    for code in [*range(32), 127]:
        address = f"a{chr(code)}b@example.net"
        assert unsendable(address), repr(address)
    for address in ("reader@example.net", "jörg@exämple.net", '"a b"@example.net'):
        assert unsendable(address) == ""
    # not printable, but no control character: sendable, as before
    assert unsendable("a\u2028b@example.net") == ""
    assert unsendable("a\x85b@example.net") == ""
