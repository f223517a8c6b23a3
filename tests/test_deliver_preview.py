"""`digest preview` shows what `digest send` sends: the same reader, edition and message.

Real `digest` processes on a real SQLite file; the send goes to a real aiosmtpd, and
each reader's preview .eml is compared with the message the server took for them.
"""

from __future__ import annotations

import email
import re
import subprocess
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path

from selectolax.lexbor import LexborHTMLParser as HTMLParser

from digest.clock import now_utc
from digest.config import load_config
from digest.store import Store
from digest.store.meta import secret_key
from digest.store.readers import add_subscriber
from digest.tokens import PREFERENCES, make_token
from digest.web.subscribe import check_choice, save_preferences
from tests.support.cli import run_digest
from tests.support.config import smtp_section, write_config
from tests.support.mail import real_day
from tests.support.smtpserver import SmtpServer

CONFIG_READER = "carol@example.net"  # in [[subscribers]], topics: robots
DB_READER = "frank@example.org"  # `digest subscribers add --topics video`
KEYWORDS_READER = "kim@example.org"  # preferences page: diffusion + own keywords
EVERYTHING_READER = "eve@example.org"  # database, no topics: every paper


def preview_config(tmp_path: Path, port: int) -> Path:
    return write_config(
        tmp_path,
        store={"database": tmp_path / "p.db"},
        feeds={"base_url": "https://papers.example.org", "dir": "feeds"},
        smtp=smtp_section(port, sender="digest@papers.example.org", timeout=5),
        schedule={"timezone": "UTC"},
        topics=[
            {"name": "video", "title": "Video", "keywords": ["video*"]},
            {"name": "diffusion", "title": "Diffusion", "keywords": ["diffusion"]},
            {"name": "robots", "title": "Robots", "keywords": ["humanoid", "robot*"]},
        ],
        subscribers=[{"email": CONFIG_READER, "topics": ["robots"]}],
    )


def digest(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_digest(config, *args)


def parse(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, policy=default_policy)
    assert isinstance(msg, EmailMessage)
    return msg


def what_the_reader_sees(msg: EmailMessage) -> dict[str, object]:
    """Everything of a digest but its Date and MIME boundary: headers, both bodies, and
    the arXiv ids in order (from the text and from the HTML links)."""
    text, page = msg.get_body(("plain",)), msg.get_body(("html",))
    assert text is not None and page is not None
    # Line ends are the transport's: CRLF on the wire, LF in the .eml file.
    text_body = text.get_content().replace("\r\n", "\n")
    html_body = page.get_content().replace("\r\n", "\n")
    hrefs = [
        a.attributes.get("href") or "" for a in HTMLParser(html_body).css("h3.title a, p.line a")
    ]
    return {
        "headers": {
            k: str(msg[k])
            for k in ("From", "To", "Subject", "Message-ID", "List-Id", "List-Unsubscribe")
        },
        # Every paper's Hugging Face link, once: a card's and a one-line entry's alike.
        "ids": re.findall(r"https://huggingface\.co/papers/(\S+)", text_body),
        "html_ids": [h.rsplit("/", 1)[-1] for h in hrefs],
        "topics": re.findall(r"^(?:Your topics: .*|You follow no topics.*)$", text_body, re.M),
        "text": text_body,
        "html": html_body,
    }


def test_preview_is_what_the_send_sends(tmp_path: Path) -> None:
    with SmtpServer() as server:
        config = preview_config(tmp_path, server.port)
        store = Store.open(tmp_path / "p.db")
        papers, day = real_day(store)
        settings = load_config(config)
        # A confirmed reader who then changed their choice on the preferences page: a topic
        # and keywords (only an active reader's preferences can be saved).
        add_subscriber(settings, store, KEYWORDS_READER)
        token = make_token(secret_key(store), KEYWORDS_READER, PREFERENCES)
        choice = check_choice(settings, ["diffusion"], "humanoid, agent*")
        assert save_preferences(settings, store, token, choice) == KEYWORDS_READER
        store.close()
        added = digest(config, "subscribers", "add", DB_READER, "--topics", "video")
        assert added.returncode == 0, added.stderr
        added = digest(config, "subscribers", "add", EVERYTHING_READER)
        assert added.returncode == 0, added.stderr
        readers = [CONFIG_READER, DB_READER, KEYWORDS_READER, EVERYTHING_READER]
        previews: dict[str, dict[str, object]] = {}
        for address in readers:
            out = tmp_path / "before"
            done = digest(config, "preview", "--to", address, "--out", str(out))
            assert done.returncode == 0, done.stderr
            eml = Path(done.stdout.split()[0])
            assert eml.name == f"digest-{day.isoformat()}-{address}.eml"
            previews[address] = what_the_reader_sees(parse(eml.read_bytes()))
        sent = digest(config, "send", "--date", day.isoformat())
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert f"sent {len(readers)}, failed 0" in sent.stdout
        received = {m.recipients[0]: parse(m.data) for m in server.messages}
        after = tmp_path / "after"
        for address in readers:
            got = what_the_reader_sees(received[address])
            assert previews[address] == got, address
            # And once sent, a preview of that day still shows that edition.
            done = digest(config, "preview", "--to", address, "--date", day.isoformat(),
                          "--out", str(after))  # fmt: skip
            assert done.returncode == 0, done.stderr
            assert what_the_reader_sees(parse(Path(done.stdout.split()[0]).read_bytes())) == got
    # The readers differ, so the comparison above could fail: frank's 'video' papers only.
    ids = {a: previews[a]["ids"] for a in readers}
    assert len(ids[EVERYTHING_READER]) == len(papers) == 13  # type: ignore[arg-type]
    assert 0 < len(ids[DB_READER]) < 13  # type: ignore[arg-type]
    assert previews[DB_READER]["topics"] == ["Your topics: Video."]
    assert previews[CONFIG_READER]["topics"] == ["Your topics: Robots."]
    assert previews[KEYWORDS_READER]["topics"] == [
        "Your topics: Diffusion, Your keywords: humanoid, agent*."
    ]
    assert len({str(v) for v in ids.values()}) == len(readers)
    assert now_utc().date() == day


def test_preview_of_someone_the_send_skips(tmp_path: Path) -> None:
    config = preview_config(tmp_path, 25)
    store = Store.open(tmp_path / "p.db")
    real_day(store)
    store.close()
    assert digest(config, "subscribers", "add", DB_READER).returncode == 0
    assert digest(config, "subscribers", "remove", DB_READER).returncode == 0
    assert (
        digest(config, "subscribers", "add", KEYWORDS_READER, "--topics", "diffusion").returncode
        == 0
    )
    # The operator drops the only topic that reader follows.
    text = config.read_text()
    config.write_text(text.replace('name = "diffusion"', 'name = "diffusion-models"'))
    for address, why in (
        (DB_READER, f"{DB_READER} is unsubscribed, so `digest send` mails them nothing"),
        ("stranger@example.net", "stranger@example.net is not a subscriber"),
        (KEYWORDS_READER, "their topics are no longer in the config (diffusion)"),
    ):
        done = digest(config, "preview", "--to", address, "--out", str(tmp_path))
        assert done.returncode == 1
        assert why in done.stderr and "Traceback" not in done.stderr
    assert not list(tmp_path.glob("*.eml"))
