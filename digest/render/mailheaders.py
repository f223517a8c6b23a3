"""Headers of the mails we send, written the way mail clients read them.

Python's `email` folds a long unstructured header by turning it into RFC 2047
encoded-words (`=?utf-8?q?=3Cmailto...?=`). Python decodes that back, but RFC 2369 list
headers are read raw by clients (mutt, Gmail's unsubscribe button): an encoded URI is no
URI. So List-Unsubscribe, List-Unsubscribe-Post and List-Id are set here as plain ASCII,
folded only between URIs, and messages use WIRE_POLICY, which never refolds a header set
raw (lines may pass 78 characters; RFC 5322's hard limit is 998, far above any URI here).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from email.header import Header
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import EmailPolicy
from email.policy import default as _default
from email.utils import parseaddr
from urllib.parse import quote

from digest.config import Config

WIRE_POLICY: EmailPolicy[EmailMessage] = _default.clone(refold_source="none")
FOLD_AT = 78  # RFC 5322's "SHOULD" line length; folding happens only between tokens
# RFC 5322 atext plus the space between words: a phrase of these needs no quotes.
_ATOM_PHRASE = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~ -]+$")


def one_line(text: str) -> str:
    """Return `text` with every run of whitespace, CR and LF too, made one space."""
    return " ".join(text.split())


def new_message() -> EmailMessage:
    """An empty message that keeps raw headers as they were set (see WIRE_POLICY)."""
    return EmailMessage(policy=WIRE_POLICY)


def sender_address(config: Config) -> str:
    """Return the bare address of `smtp.sender` (which may be "Name <addr>")."""
    return parseaddr(config.smtp.sender)[1] or config.smtp.sender.strip()


def from_address(config: Config) -> Address:
    """Return the From: `email.from_name` (else the name in `smtp.sender`, else the feed
    title) and the sender's address. The name is one line; quoting, and encoded-words
    for non-ASCII, are left to the email package, which never touches the addr-spec."""
    name = config.email.from_name or parseaddr(config.smtp.sender)[0] or config.feeds.title
    address = sender_address(config)
    local, _, domain = address.rpartition("@")
    return Address(display_name=one_line(name), username=local or address, domain=domain)


def phrase(text: str) -> str:
    """Return `text` as an RFC 5322 phrase: as is when only atoms, else a quoted string;
    non-ASCII text as RFC 2047 encoded-words (allowed in a phrase)."""
    text = one_line(text)
    if not text.isascii():
        return Header(text, "utf-8").encode(maxlinelen=FOLD_AT - 10)
    if _ATOM_PHRASE.match(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def fold_list(items: list[str], name: str, sep: str = "") -> str:
    """Return `items` joined by `sep` + space on one line, or one per line (folded with
    a leading space) when the one line would pass FOLD_AT; never breaking an item."""
    line = f"{sep} ".join(items)
    if len(name) + 2 + len(line) <= FOLD_AT:
        return line
    return f"{sep}\n ".join(items)


def set_list_headers(
    message: EmailMessage,
    *,
    list_id: tuple[str, str] | None = None,
    unsubscribe: Sequence[str] = (),
) -> None:
    """Set List-Id (title, id) and List-Unsubscribe (URIs, in order of preference; empty
    ones left out) with List-Unsubscribe-Post (RFC 8058 one-click), all plain ASCII, as
    RFC 2369/2919 say.

    The mailto: URI is unsubscribe+<tag>@domain (Subscriber.unsubscribe_mailto), which
    `digest bounces` reads from the IMAP mailbox; with no mailbox configured it is empty
    and left out, rather than promise a mailbox nobody reads."""
    if list_id is not None:
        title, ident = list_id
        value = fold_list([phrase(title), f"<{ident}>"], "List-Id")
        _set_raw(message, "List-Id", value)
    if unsubscribe:
        uris = [f"<{_uri(u)}>" for u in unsubscribe if u]  # "" left out (no mailbox)
        _set_raw(message, "List-Unsubscribe", fold_list(uris, "List-Unsubscribe", ","))
        _set_raw(message, "List-Unsubscribe-Post", "List-Unsubscribe=One-Click")


def _uri(uri: str) -> str:
    # RFC 2369: a URI in the header is ASCII with no spaces or angle brackets; anything
    # else (a non-ASCII SMTPUTF8 sender) is percent-encoded as UTF-8 (RFC 3986, 6068).
    return quote(uri, safe="!#$%&'()*+,-./:;=?@[]^_`{|}~")


def _set_raw(message: EmailMessage, name: str, value: str) -> None:
    del message[name]
    message.set_raw(name, value)
