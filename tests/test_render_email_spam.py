"""SpamAssassin (local tests only, no network) scores a real digest as clean."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from digest.deliver.smtp import flatten
from digest.models import Subscriber
from digest.render.email import DigestRenderer
from digest.store import Store
from tests.support.mail import make_config, real_day

SPAMASSASSIN = shutil.which("spamassassin") or "/usr/bin/spamassassin"
THRESHOLD = 1.0


def score(raw: bytes, home: Path) -> tuple[float, list[str]]:
    """Return (score, the lines of the rules that fired) from `spamassassin -L -t`."""
    # HOME: spamassassin writes user preferences there on first use.
    env = {**os.environ, "HOME": str(home)}
    out = subprocess.run(
        [SPAMASSASSIN, "-L", "-t"], input=raw, capture_output=True, timeout=120, env=env
    ).stdout.decode("utf-8", "replace")
    m = re.search(r"^X-Spam-Status: \w+, score=(-?[\d.]+)", out, re.MULTILINE)
    assert m, out[-2000:]
    details = out.split("Content analysis details:", 1)[-1]
    rules = [line for line in details.splitlines() if re.match(r"^\s*-?\d+\.\d+ \w", line)]
    return float(m.group(1)), rules


@pytest.mark.skipif(
    not Path(SPAMASSASSIN).exists(),
    reason="spamassassin is not installed (apt install spamassassin)",
)
def test_real_digest_is_not_spam(store: Store, tmp_path: Path) -> None:
    papers, day = real_day(store)
    renderer = DigestRenderer(make_config(), papers, day)
    message = renderer.render(Subscriber("reader@example.net", (), "dG9rZW4.c2lnbmVk"))
    assert message is not None
    raw = flatten(message).replace(b"\r\n", b"\n")
    value, rules = score(raw, tmp_path)
    print(f"SpamAssassin score {value}; rules that fired:")
    print("\n".join(rules))
    assert value <= THRESHOLD, rules


@pytest.mark.skipif(
    not Path(SPAMASSASSIN).exists(),
    reason="spamassassin is not installed (apt install spamassassin)",
)
def test_digest_as_received_is_not_spam(store: Store, tmp_path: Path) -> None:
    # The bytes a real send put on the wire: plain List-* headers, From with the
    # default display name (the feed title), a real signed token in the links.
    from tests.support.mail import send_one

    raw = send_one(store).replace(b"\r\n", b"\n")
    value, rules = score(raw, tmp_path)
    print(f"SpamAssassin score {value} (as received); rules that fired:")
    print("\n".join(rules))
    assert value <= THRESHOLD, rules
