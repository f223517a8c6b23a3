"""The digest as mail clients see it: raw bytes taken off a real aiosmtpd, read without
Python's decoding, and by mutt itself.

Python's `email` (policy=default) decodes RFC 2047 encoded-words in any header, so a
List-Unsubscribe written as `=?utf-8?q?=3Cmailto...?=` reads back fine there and nowhere
else. These tests read the header lines as bytes (and with policy=compat32, which keeps
them raw) and check them against the RFCs' grammar.
"""

from __future__ import annotations

import email
import os
import pty
import re
import select
import shutil
import subprocess
import time
from email.message import Message
from email.policy import compat32
from email.policy import default as default_policy
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from digest.config import BouncesConfig
from digest.store import Store
from digest.store.meta import secret_key
from digest.tokens import BOUNCE_TAG, UNSUBSCRIBE_TAG, address_tag, verify_token
from tests.support.mail import READER, SENDER, config_for, send_one, send_one_received
from tests.support.smtpserver import SmtpServer

DOMAIN = "papers.example.org"  # SENDER's
MAILBOX = BouncesConfig(imap_host="127.0.0.1", imap_user="bounces")
# RFC 2369: a comma-separated list of <URI>s; a URI has no spaces or angle brackets.
URI = r"<[\x21-\x3b\x3d\x3f-\x7e]+>"
RFC2369 = re.compile(rf"^\s*{URI}(\s*,\s*{URI})*\s*$")
# RFC 2919: [phrase] "<" dot-atom-text ">"
ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
RFC2919 = re.compile(rf"^(?P<phrase>.*?)\s*<(?P<id>{ATEXT}+(\.{ATEXT}+)+)>$")


def raw_headers(data: bytes) -> dict[str, list[str]]:
    """Header name (lower case) -> values, as the bytes say: unfolded (RFC 5322 2.2.3:
    CRLF before a space or tab removed), nothing decoded."""
    head = data.split(b"\r\n\r\n", 1)[0]
    assert head.isascii(), "a header line holds 8-bit bytes"
    out: dict[str, list[str]] = {}
    for line in re.sub(rb"\r\n(?=[ \t])", b"", head).decode("ascii").split("\r\n"):
        name, _, value = line.partition(":")
        out.setdefault(name.lower(), []).append(value.strip())
    return out


def test_list_headers_are_plain_ascii_on_the_wire(store: Store) -> None:
    data = send_one(store)
    headers = raw_headers(data)
    [unsubscribe] = headers["list-unsubscribe"]
    assert "=?" not in unsubscribe
    assert RFC2369.match(unsubscribe), unsubscribe
    uris = re.findall(r"<([^>]+)>", unsubscribe)
    # No bounces mailbox configured: no mailto (nothing would read it), the https link
    # carries the reader's real token, the one the web app verifies.
    assert [urlsplit(u).scheme for u in uris] == ["https"]
    mail_token = uris[0].rsplit("/", 1)[1]
    assert verify_token(secret_key(store), mail_token) == READER
    assert uris[0] == f"https://papers.example.org/unsubscribe/{mail_token}"
    assert headers["list-unsubscribe-post"] == ["List-Unsubscribe=One-Click"]
    [list_id] = headers["list-id"]
    assert list_id == "Daily Papers <daily.papers.example.org>"
    assert RFC2919.match(list_id)
    # Folded, never longer than RFC 5322's hard limit; a URI is never broken.
    head = data.split(b"\r\n\r\n", 1)[0]
    assert max(len(line) for line in head.split(b"\r\n")) <= 998
    # compat32 does not decode encoded-words: a client's view of the raw header.
    msg = email.message_from_bytes(data, policy=compat32)
    assert isinstance(msg, Message)
    assert re.sub(r"\r?\n(?=[ \t])", "", str(msg["List-Unsubscribe"])) == unsubscribe


def test_mailbox_gives_the_unsubscribe_mailto_and_the_verp_sender(store: Store) -> None:
    # With a bounces mailbox, List-Unsubscribe's mailto is the reader's own
    # unsubscribe+<tag> address, and the envelope sender their bounces+<tag>.
    received = send_one_received(store, bounces=MAILBOX)
    [unsubscribe] = raw_headers(received.data)["list-unsubscribe"]
    assert RFC2369.match(unsubscribe), unsubscribe
    uris = re.findall(r"<([^>]+)>", unsubscribe)
    assert [urlsplit(u).scheme for u in uris] == ["mailto", "https"]
    mailto = urlsplit(uris[0])
    key = secret_key(store)
    assert mailto.path == f"unsubscribe+{address_tag(key, READER, UNSUBSCRIBE_TAG)}@{DOMAIN}"
    assert len(mailto.path.split("@")[0]) <= 64  # RFC 5321's limit on a local part
    assert received.sender == f"bounces+{address_tag(key, READER, BOUNCE_TAG)}@{DOMAIN}"
    # The two kinds of tag differ: a bounce address never unsubscribes anyone.
    assert address_tag(key, READER, BOUNCE_TAG) != address_tag(key, READER, UNSUBSCRIBE_TAG)


def test_without_a_mailbox_the_envelope_sender_is_the_sender(store: Store) -> None:
    assert send_one_received(store).sender == SENDER


def test_from_has_a_display_name(store: Store) -> None:
    # No from_name and a bare smtp.sender: the feed title is the name.
    data = send_one(store)
    [sender] = raw_headers(data)["from"]
    assert re.fullmatch(rf'"?Hugging Face Daily Papers"? <{re.escape(SENDER)}>', sender), sender
    msg = email.message_from_bytes(data, policy=default_policy)
    address = msg["From"].addresses[0]
    assert (address.display_name, address.addr_spec) == ("Hugging Face Daily Papers", SENDER)


@pytest.mark.parametrize(
    ("from_name", "shown"),
    [
        ('Ann "The Bot"\r\nBcc: victim@example.com', 'Ann "The Bot" Bcc: victim@example.com'),
        ("Tägliche Papers — été", "Tägliche Papers — été"),
        ("Papers, by <x@y.z>", "Papers, by <x@y.z>"),
    ],
)
def test_from_name_cannot_break_the_header(store: Store, from_name: str, shown: str) -> None:
    data = send_one(store, from_name=from_name)
    headers = raw_headers(data)
    assert "bcc" not in headers
    [sender] = headers["from"]
    # The addr-spec stays plain; a non-ASCII name may be an encoded-word (legal in a phrase).
    assert sender.endswith(f" <{SENDER}>"), sender
    if not from_name.isascii():
        assert re.fullmatch(r"(=\?utf-8\?[qb]\?\S+\?=\s*)+<\S+>", sender, re.IGNORECASE), sender
    msg = email.message_from_bytes(data, policy=default_policy)
    [address] = msg["From"].addresses
    assert (address.display_name, address.addr_spec) == (shown, SENDER)


def test_sender_name_and_odd_list_title(store: Store) -> None:
    # smtp.sender's own name is kept when from_name is unset; a title that is not all
    # atoms (a comma, non-ASCII) is quoted or encoded in List-Id, the id stays plain.
    data = send_one(store, sender=f"Papers Bot <{SENDER}>", subject_prefix="Papiers, été")
    headers = raw_headers(data)
    assert headers["from"] == [f"Papers Bot <{SENDER}>"]
    [list_id] = headers["list-id"]
    m = RFC2919.match(list_id)
    assert m and m.group("id") == "daily.papers.example.org", list_id
    assert m.group("phrase").lower().startswith("=?utf-8?")
    msg = email.message_from_bytes(data, policy=default_policy)
    assert str(msg["List-Id"]) == "Papiers, été <daily.papers.example.org>"


def test_list_title_with_specials_is_quoted(store: Store) -> None:
    data = send_one(store, subject_prefix='Papers, "daily"')
    assert raw_headers(data)["list-id"] == ['"Papers, \\"daily\\"" <daily.papers.example.org>']
    msg = email.message_from_bytes(data, policy=default_policy)
    assert str(msg["List-Id"]) == '"Papers, \\"daily\\"" <daily.papers.example.org>'


def test_signature_separator_has_its_space(store: Store) -> None:
    data = send_one(store)
    msg = email.message_from_bytes(data, policy=compat32)
    [text] = [p for p in msg.walk() if p.get_content_type() == "text/plain"]
    decoded = text.get_payload(decode=True)
    assert isinstance(decoded, bytes)
    lines = decoded.replace(b"\r\n", b"\n").split(b"\n")
    assert lines.count(b"-- ") == 1  # RFC 3676 4.3: dash, dash, space
    assert b"--" not in lines
    after = lines[lines.index(b"-- ") + 1 :]
    assert any(READER.encode() in line for line in after)  # the footer follows it


MUTTRC = """\
set sendmail="{capture}"
set from="{reader}"
set realname="Reader"
set hostname="example.net"
set folder="{home}"
set spoolfile="{mbox}"
set postponed="{home}/postponed"
set tmpdir="{home}"
set record=""
set editor="/bin/true"
set edit_headers=yes
set autoedit=yes
set abort_unmodified=no
set copy=no
set move=no
set quit=yes
set wait_key=no
set mail_check=0
"""


def mutt_list_unsubscribe(mbox: Path, home: Path) -> tuple[str, str | None]:
    """Open `mbox` in mutt (in a pseudo-terminal), pick "Unsubscribe" in its mailing list
    menu (<list-action>, RFC 2369) and send; return (the screen, what mutt handed to its
    sendmail, or None when it sent nothing)."""
    capture, sent = home / "capture.sh", home / "sent.eml"
    capture.write_text(f'#!/bin/sh\ncat > "{sent}"\n')
    capture.chmod(0o755)
    muttrc = home / "muttrc"
    muttrc.write_text(MUTTRC.format(capture=capture, reader=READER, home=home, mbox=mbox))
    keys = "push '<list-action><list-unsubscribe><send-message><exit><quit>'"
    env = {**os.environ, "TERM": "vt100", "HOME": str(home), "LC_ALL": "C.UTF-8"}
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        ["mutt", "-n", "-F", str(muttrc), "-R", "-f", str(mbox), "-e", keys],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
    )
    os.close(slave)
    screen = b""
    deadline = time.monotonic() + 20
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    screen += os.read(master, 65536)
                except OSError:  # the terminal closed: mutt is gone
                    break
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=5)
        os.close(master)
    text = re.sub(r"\x1b[\[()][0-9;?=]*[A-Za-z]?|[\x00-\x08\x0e-\x1f]", "", screen.decode())
    return text, sent.read_text() if sent.exists() else None


@pytest.mark.skipif(not shutil.which("mutt"), reason="mutt is not installed (apt install mutt)")
def test_mutt_finds_the_unsubscribe_action(store: Store, tmp_path: Path) -> None:
    data = send_one(store, bounces=MAILBOX)
    mbox = tmp_path / "inbox"
    body = data.replace(b"\r\n", b"\n")
    body = re.sub(rb"(?m)^(>*From )", rb">\1", body)  # mboxrd quoting
    mbox.write_bytes(b"From digest@papers.example.org Sat Jan  1 00:00:00 2000\n" + body + b"\n")
    screen, sent = mutt_list_unsubscribe(mbox, tmp_path)
    assert sent is not None, screen[-800:]
    mail = email.message_from_string(sent, policy=default_policy)
    # mutt writes the mail `digest bounces` reads: to the reader's unsubscribe address.
    tag = address_tag(secret_key(store), READER, UNSUBSCRIBE_TAG)
    assert mail["To"] == f"unsubscribe+{tag}@{DOMAIN}"
    assert str(mail["Subject"]) == "unsubscribe"


def test_notice_from_has_the_display_name_too() -> None:
    # Confirmation mails and notes to the operator share the digest's From.
    from digest.deliver.notices import send_notice

    with SmtpServer() as server:
        config = config_for(server.port, from_name="Papers Desk")
        send_notice(config, READER, "Confirm your subscription", "Click the link.\n")
    [received] = server.messages
    assert raw_headers(received.data)["from"] == [f"Papers Desk <{SENDER}>"]
