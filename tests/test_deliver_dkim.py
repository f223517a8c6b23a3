"""DKIM: a real digest, signed with a throwaway key (openssl), as aiosmtpd took it off
the wire, verified by dkimpy against the public key served as the selector's TXT record;
a changed byte fails, and a broken key is refused before any mail goes out."""

from __future__ import annotations

import base64
import dataclasses
import re
import subprocess
from pathlib import Path
from typing import Any

import dkim
import pytest

from digest.config import ConfigProblems, load_config
from digest.deliver.digest import send_digests
from digest.deliver.dkim import dkim_signer
from digest.deliver.smtp import Mailer
from digest.errors import ConfigError
from digest.store import Store
from tests.support.config import write_config
from tests.support.mail import READER, config_for, real_day
from tests.support.smtpserver import SmtpServer

SELECTOR = "digest2026"
DOMAIN = "papers.example.org"


def make_key(folder: Path) -> tuple[Path, bytes]:
    """A 2048-bit RSA key in PEM, and the TXT record that publishes it."""
    key = folder / "dkim.pem"
    subprocess.run(
        [
            "openssl",
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            str(key),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    der = subprocess.run(
        ["openssl", "pkey", "-in", str(key), "-pubout", "-outform", "DER"],
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout
    return key, b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)


def test_a_sent_digest_verifies_against_the_public_key(store: Store, tmp_path: Path) -> None:
    key, record = make_key(tmp_path)
    asked: list[bytes] = []

    def txt(name: bytes, **_: Any) -> bytes | None:
        asked.append(name)
        return record if name == f"{SELECTOR}._domainkey.{DOMAIN}.".encode() else None

    _, day = real_day(store)
    with SmtpServer() as server:
        config = config_for(server.port)
        smtp = dataclasses.replace(config.smtp, dkim_key_file=str(key), dkim_selector=SELECTOR)
        report = send_digests(dataclasses.replace(config, smtp=smtp), store, day, today=day)
        assert report.sent == [READER], report.summary()
    [received] = server.messages
    data = received.data
    head = data.split(b"\r\n\r\n", 1)[0]
    assert head.startswith(b"DKIM-Signature:")
    unfolded = re.sub(r"\r\n[ \t]+", " ", head.decode())
    tags = dict(
        t.strip().split("=", 1)
        for t in unfolded.split("\r\n")[0].split(":", 1)[1].split(";")
        if "=" in t
    )
    assert (tags["d"], tags["s"], tags["c"]) == (DOMAIN, SELECTOR, "relaxed/relaxed")
    signed = {h.strip().lower() for h in tags["h"].split(":")}
    assert {"from", "to", "subject", "date", "message-id", "list-unsubscribe"} <= signed
    assert dkim.verify(data, dnsfunc=txt)
    assert asked == [f"{SELECTOR}._domainkey.{DOMAIN}.".encode()]
    # One changed byte in the body, or in a signed header, and it no longer verifies.
    body_at = data.index(b"\r\n\r\n") + 200
    tampered = data[:body_at] + bytes([data[body_at] ^ 1]) + data[body_at + 1 :]
    assert not dkim.verify(tampered, dnsfunc=txt)
    assert not dkim.verify(data.replace(b"Subject: ", b"Subject: Re: ", 1), dnsfunc=txt)


def test_without_dkim_there_is_no_signature(store: Store) -> None:
    _, day = real_day(store)
    with SmtpServer() as server:
        report = send_digests(config_for(server.port), store, day, today=day)
        assert report.sent == [READER]
    assert b"DKIM-Signature" not in server.messages[0].data


def test_a_broken_key_is_refused_before_sending(tmp_path: Path) -> None:
    bad = tmp_path / "not-a-key.pem"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    smtp = dataclasses.replace(config_for(1).smtp, dkim_key_file=str(bad), dkim_selector=SELECTOR)
    with pytest.raises(ConfigError, match=r"not-a-key\.pem: not a usable DKIM private key"):
        dkim_signer(smtp)
    with pytest.raises(ConfigError, match="not-a-key"):
        Mailer(smtp)


def test_dkim_needs_both_keys(tmp_path: Path) -> None:
    key, _ = make_key(tmp_path)
    path = write_config(tmp_path, smtp={"dkim_key_file": str(key)})
    with pytest.raises(ConfigProblems, match=r"smtp\.dkim_selector: DKIM needs both"):
        load_config(path, env={})
    path = write_config(tmp_path, smtp={"dkim_key_file": str(key), "dkim_selector": "a b"})
    with pytest.raises(ConfigProblems, match=r"'a b' is not a DKIM selector"):
        load_config(path, env={})
    config = load_config(
        write_config(tmp_path, smtp={"dkim_key_file": str(key), "dkim_selector": SELECTOR}),
        env={},
    )
    assert dkim_signer(config.smtp) is not None
