"""One base exception for the project; each subclass carries the facts a user needs.

The CLI catches `DigestError` once, prints `str(error)` and exits non-zero, so every
message here must name the file, key, URL or address involved.
"""

from __future__ import annotations

from pathlib import Path


class DigestError(Exception):
    """Base class: anything the user can act on."""


class ConfigError(DigestError):
    """A config file or environment variable is wrong; names the key and where."""

    def __init__(
        self,
        message: str,
        *,
        path: Path | str | None = None,
        key: str | None = None,
        line: int | None = None,
    ) -> None:
        self.path = str(path) if path is not None else None
        self.key = key
        self.line = line
        where = self.path or "config"
        if line is not None:
            where += f", line {line}"
        if key:
            where += f", {key}"
        super().__init__(f"{where}: {message}")


class FetchError(DigestError):
    """The network or the server failed us (after retries where retrying makes sense)."""

    def __init__(self, url: str, reason: str, *, status: int | None = None) -> None:
        self.url = url
        self.reason = reason
        self.status = status
        super().__init__(f"{url}: {reason}")


class PageFormatError(DigestError):
    """A page or API response whose structure we do not recognise.

    Never to be confused with a well-formed empty list: this one means "we could not
    read it", so nothing is stored and nobody is told "no new papers".
    """

    def __init__(self, url: str, what: str) -> None:
        self.url = url
        self.what = what
        super().__init__(f"{url}: {what}")


class DeliveryError(DigestError):
    """SMTP trouble that stops a whole send (not one failed address): `server` as we name
    it (host:port), `reply` its answer or what broke."""

    def __init__(self, server: str, reply: str) -> None:
        self.server = server
        self.reply = reply
        super().__init__(f"{server}: {reply}")


class TemporaryFailure(DigestError):
    """The server said "try later" (4xx) or the connection broke, for one message;
    `reply` says which."""

    def __init__(self, reply: str, server: str = "") -> None:
        self.reply = reply
        self.server = server
        self.attempts = 1  # set by Mailer.deliver to the attempts it made
        super().__init__(reply)


class PermanentFailure(DigestError):
    """The server refused this message for good (5xx); `reply` is its answer.

    `sender_refused`: the refusal came to MAIL FROM, so it is about our sender (a relay
    that does not take our domain, a policy), not about the reader's address: it must
    never count as the reader's bounce."""

    def __init__(self, reply: str, server: str = "", *, sender_refused: bool = False) -> None:
        self.reply = reply
        self.server = server
        self.sender_refused = sender_refused
        self.attempts = 1  # set by Mailer.deliver to the attempts it made
        super().__init__(reply)


class Uncertain(DigestError):
    """The final "." went out and no reply came back (a timeout or a dropped connection):
    the server may or may not have taken the message. Never retried automatically.

    A DigestError, so a caller that sends one notice (a confirmation) reports it in one
    line like any other SMTP trouble."""

    def __init__(self, reply: str, where: str = "SMTP server") -> None:
        self.reply = reply
        self.server = where
        self.attempts = 1  # set by Mailer.deliver to the attempts it made
        super().__init__(f"{where}: {reply} (it may have been delivered)")


class LockBusy(DigestError):
    """Another process (or thread) holds the run lock; names the lock file and the holder."""

    def __init__(self, path: str, holder: str) -> None:
        self.path = path
        self.holder = holder
        super().__init__(f"{path}: a run is already in progress ({holder or 'holder unknown'})")


class SubscriberError(DigestError):
    """An address or a topic we cannot accept; the message names it."""


class KeywordsError(DigestError):
    """Free keywords (a topic typed on the command line or the subscribe form) that cannot
    be read: `text` as typed, `problem` what is wrong. The message names the value; the
    caller says where it came from (the CLI its flag, the web its field)."""

    def __init__(self, text: str, problem: str) -> None:
        self.text = text
        self.problem = problem
        super().__init__(f"{text!r}: {problem}")
