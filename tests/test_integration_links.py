"""Issue 14's ranked, budgeted email against issue 16's real `digest serve` front.

tests/test_links.py checks an unbudgeted email. Here the budget is small, so the email
has "N more on the web" links (per topic, with ?topic=, and in the header), overview
anchors, a weekly reader's multi-day email, topic pages, feeds, preferences and
unsubscribe. Every link on our base URL in the sent emails answers 200; every #fragment
has its target; and the papers a "N more on TOPIC" link promises are on the page it opens.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import date
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
from selectolax.lexbor import LexborHTMLParser as HTMLParser

from digest.config import WEEKDAYS
from tests.support.hfserver import HFServer, Reply
from tests.support.net import free_port
from tests.support.paths import PAGE_2024_08_01, ROOT
from tests.support.serve import start_serve, stop
from tests.support.smtpserver import SmtpServer
from tests.support.waiting import wait_until
from tests.test_links import URL

DAILY = "daily@example.org"
WEEKLY = "weekly@example.org"
EVERYTHING = "everything@example.org"
HF = re.compile(r"https://huggingface\.co/papers/([0-9]{4}\.[0-9]{4,5})")


def hrefs(page: str) -> list[str]:
    return [a.attributes.get("href") or "" for a in HTMLParser(page).css("a[href]")]


def ids_in(page: str) -> set[str]:
    return set(HF.findall(page))


def test_every_link_of_a_budgeted_email_answers_from_digest_serve(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    today = date.today()
    with HFServer() as hf, SmtpServer(pipelining=True) as smtp:
        hf.route("/papers", Reply(PAGE_2024_08_01.read_bytes()))
        config = tmp_path / "config.toml"
        config.write_text(
            f"""
[source]
list = "{hf.url("/papers")}"
retries = 0
[store]
database = "{tmp_path / "data" / "digest.db"}"
[feeds]
dir = "{tmp_path / "feeds"}"
base_url = "{base}"
[smtp]
host = "127.0.0.1"
port = {smtp.port}
security = "none"
sender = "digest@example.org"
[email]
max_full = 2
max_listed = 2
[schedule]
timezone = "UTC"
weekly_day = "{WEEKDAYS[today.weekday()]}"
[[topics]]
name = "video"
title = "Video"
keywords = ["video*"]
[[topics]]
name = "gen"
title = "Generation"
keywords = ["diffusion", "generation", "generat*"]
[[subscribers]]
email = "{DAILY}"
topics = ["video", "gen"]
[[subscribers]]
email = "{WEEKLY}"
topics = ["video", "gen"]
frequency = "weekly"
[[subscribers]]
email = "{EVERYTHING}"
"""
        )
        proc = start_serve(config, port, tmp_path)
        try:

            def fetched() -> bool:
                try:
                    answer = httpx.get(f"{base}/healthz", timeout=2)
                    return answer.status_code == 200 and answer.json().get("papers", 0) > 0
                except (httpx.TransportError, ValueError):
                    return False

            wait_until(fetched, 30, "the catch-up fetch did not succeed")
            sent = subprocess.run(
                [sys.executable, "-m", "digest", "--config", str(config), "send"],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=60,
                env=os.environ | {"PYTHONPATH": str(ROOT)},
            )
            assert sent.returncode == 0, sent.stdout + sent.stderr
            wait_until(lambda: len(smtp.messages) >= 3, 20, "not every reader was mailed")
            mails = {m.recipients[0]: m.message() for m in smtp.messages}
            assert set(mails) == {DAILY, WEEKLY, EVERYTHING}

            links: dict[str, str] = {}
            fragments: list[tuple[str, str, str]] = []  # (page url, fragment, where)
            more: list[tuple[str, int, str]] = []  # (url, N, who)
            for who, msg in mails.items():
                page = msg.get_body(("html",)).get_content()
                ids_on = {el.attributes.get("id") for el in HTMLParser(page).css("[id]")}
                for href in hrefs(page):
                    if href.startswith("#"):
                        assert href[1:] in ids_on, f"{who}: {href} has no target in the email"
                    elif href.startswith(base):
                        url, _, frag = href.partition("#")
                        links.setdefault(url, who)
                        if frag:
                            fragments.append((url, frag, who))
                for a in HTMLParser(page).css("a[href]"):
                    m = re.match(r"(\d+) more", a.text(strip=True))
                    if m:
                        more.append((a.attributes["href"] or "", int(m.group(1)), who))
                for url in URL.findall(msg.get_body(("plain",)).get_content()):
                    if url.startswith(base):
                        links.setdefault(url.rstrip(".,"), f"{who} (text)")
                for url in URL.findall(str(msg["List-Unsubscribe"])):
                    links.setdefault(url, f"{who} List-Unsubscribe")

            assert more, "the budget left no 'N more on the web' link"
            paths = {urlsplit(u).path for u in links}
            # The weekly reader's email covers several days: its header's more link is
            # /archive, and a topic's opens that topic's page (its last 14 days), where
            # the papers are, not the list of days.
            weekly_more = sorted(urlsplit(u).path for u, _, w in more if w == WEEKLY)
            assert weekly_more[0] == "/archive" and len(weekly_more) >= 2, weekly_more
            assert set(weekly_more[1:]) <= {"/topics/video", "/topics/gen"}, weekly_more
            assert any(w == DAILY and "topic=" in u for u, _, w in more), more
            assert f"/archive/{today.isoformat()}" in paths
            assert any("topic=" in u for u in links)
            for prefix in ("/unsubscribe/", "/preferences/"):
                assert any(p.startswith(prefix) for p in paths), prefix

            answers = {u: httpx.get(u, timeout=10) for u in sorted(links)}
            broken = [
                f"{u} ({links[u]}): {a.status_code}"
                for u, a in answers.items()
                if a.status_code != 200
            ]
            assert broken == []
            for url, frag, who in fragments:
                tree = HTMLParser(answers[url].text)
                ids_on = {el.attributes.get("id") for el in tree.css("[id]")}
                assert frag in ids_on, f"{who}: {url}#{frag} has no target"

            # "N more on TOPIC on the web" (a daily email): the day's page for that topic
            # shows those N papers, besides the ones the email holds.
            daily_ids = ids_in(mails[DAILY].get_body(("html",)).get_content())
            for url, n, who in more:
                page = answers[url.partition("#")[0]].text
                on_web = ids_in(page)
                if urlsplit(url).path == "/archive":
                    continue  # the header's link of a weekly email: the list of days
                topic = parse_qs(urlsplit(url).query).get("topic", [""])[0]
                email_ids = ids_in(mails[who].get_body(("html",)).get_content())
                assert len(on_web - email_ids) >= n, (who, topic, n, len(on_web), len(email_ids))
            assert daily_ids
            day_page = answers[f"{base}/archive/{today.isoformat()}"].text
            assert daily_ids <= ids_in(day_page), "a paper of the email is not on its day's page"
        finally:
            code, _ = stop(proc)
    assert code == 0
