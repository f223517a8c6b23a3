"""Email addresses: the normal form we store and send to, and the key two spellings of one
mailbox share (as SQLite's NOCASE compares them)."""

from __future__ import annotations

import string

import email_validator

from digest.errors import SubscriberError


def normalize_address(address: str) -> str:
    """Return the address in normal form: domain lower-cased, and an internationalised
    domain in its ASCII (punycode) form when the local part is ASCII, so that
    "user@bücher.de" and "user@xn--bcher-kva.de" are one subscriber and the message
    goes through relays without SMTPUTF8. A non-ASCII local part stays as written.

    Raises SubscriberError naming the address when its syntax is wrong. Syntax only:
    no DNS lookups, so this works offline and in tests.
    """
    try:
        info = email_validator.validate_email(address.strip(), check_deliverability=False)
    except email_validator.EmailNotValidError as e:
        raise SubscriberError(f"{address!r} is not a valid email address: {e}") from None
    return str(info.ascii_email or info.normalized)


_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def address_key(address: str) -> str:
    """Return the form in which two addresses are the same subscriber: ASCII letters
    lowered, as SQLite's NOCASE compares the email column, and nothing else folded.
    (`casefold` would make "straße@" and "strasse@", two mailboxes, one.)"""
    return address.translate(_ASCII_LOWER)
