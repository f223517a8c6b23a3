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
from typing import Any
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
    for name, value in unsubscribe_headers(unsubscribe):
        _set_raw(message, name, value)


def unsubscribe_headers(unsubscribe: Sequence[str]) -> list[tuple[str, str]]:
    """Return List-Unsubscribe (the URIs, empty ones left out, folded between URIs) and
    List-Unsubscribe-Post, as raw (name, value) pairs; none when there are no URIs."""
    if not unsubscribe:
        return []
    uris = [f"<{_uri(u)}>" for u in unsubscribe if u]  # "" left out (no mailbox)
    return [
        ("List-Unsubscribe", fold_list(uris, "List-Unsubscribe", ",")),
        ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
    ]


# Printable ASCII words with single spaces, no encoded word: what the email package
# writes as it is when it fits on a line (see `wire_value`).
_PLAIN_VALUE = re.compile(r"[!-~]+(?: [!-~]+)*")
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+")
_CRLF_POLICY = WIRE_POLICY.clone(linesep="\r\n")


def wire_header(name: str, value: str) -> tuple[Any, bytes]:
    """Return (what to `message.set_raw(name, ...)`, the header's bytes on the wire) for a
    7-bit message; flattening the message writes exactly those bytes.

    Plain ASCII words (an unstructured header, or a bare address or message id) are
    written as they are when they fit in FOLD_AT, and an unstructured one is folded
    between words when not (the email package's own folder parses every header: 0.4 ms
    for a long Subject); anything else (non-ASCII, an encoded-word look-alike, a word
    too long for a line, a long structured header) is parsed and folded by the email
    package, as `message[name] = value` would have it.
    """
    plain = "=?" not in value and _PLAIN_VALUE.fullmatch(value) is not None
    if plain and len(name) + 2 + len(value) <= FOLD_AT:
        if name.lower() not in _ADDRESS_HEADERS or _PLAIN_ADDRESS.fullmatch(value):
            return value, f"{name}: {value}\r\n".encode("ascii")
    elif plain and name.lower() not in _STRUCTURED:
        words = value.split(" ")
        if 1 + len(value) <= FOLD_AT:  # fits on a line of its own: the email package's way
            return _Folded(name, value), f"{name}:\r\n {value}\r\n".encode("ascii")
        if max(map(len, words)) <= FOLD_AT - len(name) - 3:
            lines: list[str] = []
            line = words[0]
            width = len(name) + 2 + len(line)
            for word in words[1:]:
                if width + 1 + len(word) <= FOLD_AT:
                    line += " " + word
                    width += 1 + len(word)
                else:
                    lines.append(line)
                    line, width = " " + word, 1 + len(word)
            lines.append(line)
            folded = "\n".join(lines)
            wire = f"{name}: {folded}".replace("\n", "\r\n") + "\r\n"
            return folded, wire.encode("ascii")
    header = _CRLF_POLICY.header_store_parse(name, value)[1]
    return header, _CRLF_POLICY.fold_binary(name, header)


class _Folded(str):
    """A header value set raw that folds onto a line of its own ("Name:", then the value
    on the next line), as the email package folds one too long for the first line; a
    raw str cannot say that ("Name: " would keep a trailing space)."""

    name: str

    def __new__(cls, name: str, value: str) -> _Folded:
        self = super().__new__(cls, value)
        self.name = name
        return self

    def fold(self, *, policy: EmailPolicy) -> str:
        return f"{self.name}:{policy.linesep} {self}{policy.linesep}"


_ADDRESS_HEADERS = {"to", "from", "cc", "bcc", "reply-to", "sender"}
# Headers with a grammar of their own: folded by the email package when too long.
_STRUCTURED = _ADDRESS_HEADERS | {"message-id", "date", "content-type", "list-id"}


def _uri(uri: str) -> str:
    # RFC 2369: a URI in the header is ASCII with no spaces or angle brackets; anything
    # else (a non-ASCII SMTPUTF8 sender) is percent-encoded as UTF-8 (RFC 3986, 6068).
    return quote(uri, safe="!#$%&'()*+,-./:;=?@[]^_`{|}~")


def _set_raw(message: EmailMessage, name: str, value: str) -> None:
    del message[name]
    message.set_raw(name, value)


class WireMessage(EmailMessage):
    """An EmailMessage that carries its own SMTP DATA bytes (7-bit, CRLF), assembled by
    the renderer from pieces flattened once per send, so the sender need not parse and
    re-fold every reader's headers (it was most of the sender's CPU).

    The bytes are those the email package writes for this message as it was built; any
    change to the message afterwards (a header, a part, a payload) makes `wire()` return
    None, and the message is flattened as any other.
    """

    _wire: tuple[object, bytes] | None = None
    message_id = ""  # its Message-ID header's value, as set

    def keep_wire(self, data: bytes, message_id: str) -> None:
        """Remember `data` as this message's bytes, as it is now, and its Message-ID."""
        self._wire = (_state(self), data)
        self.message_id = message_id

    def wire(self) -> bytes | None:
        """Return the kept bytes, or None when there are none or the message changed."""
        if self._wire is None:
            return None
        state, data = self._wire
        return data if state == _state(self) else None


def _state(message: EmailMessage) -> object:
    # What flattening reads: headers, payloads (parts in turn), preamble and epilogue,
    # and the policy. Unchanged objects compare by identity, so this check is cheap.
    payload: object = message._payload  # type: ignore[attr-defined]
    if isinstance(payload, list):
        payload = tuple(_state(part) for part in payload)
    return (
        message.policy,
        tuple(message._headers),  # type: ignore[attr-defined]
        payload,
        message.preamble,
        message.epilogue,
    )
