"""Every link we write answers 200 from a real `digest serve`.

The service fetches a real capture from a stand-in Hugging Face, writes its feeds, and a
real `digest send` mails a digest to a real aiosmtpd; a sign-up through the form brings a
confirmation mail. Links are read from the digest (HTML, text, List-Unsubscribe), the
confirmation mail, every feed (RSS, Atom, JSON Feed, OPML) and every page reachable from
`/`; each link on our base URL is fetched and must answer 200. Links elsewhere (arXiv,
Hugging Face, GitHub) are only checked for form: there is no internet here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import feedparser
import httpx
from selectolax.lexbor import LexborHTMLParser as HTMLParser

from tests.support.hfserver import HFServer, Reply
from tests.support.net import free_port
from tests.support.paths import PAGE_2024_08_01, ROOT
from tests.support.serve import start_serve, stop
from tests.support.smtpserver import SmtpServer
from tests.support.waiting import wait_until

READER = "reader@example.org"
URL = re.compile(r"https?://[^\s<>\"')\]]+")


def html_links(page: str, base: str) -> set[str]:
    tree = HTMLParser(page)
    out = {urljoin(base, a.attributes.get("href") or "") for a in tree.css("a[href], link[href]")}
    out |= {urljoin(base, i.attributes.get("src") or "") for i in tree.css("img[src]")}
    return {u.split("#", 1)[0] for u in out if not u.startswith("mailto:")}


def feed_links(name: str, body: bytes) -> set[str]:
    if name.endswith(".json"):
        data = json.loads(body)
        out = {data.get("home_page_url"), data.get("feed_url")}
        for item in data["items"]:
            out |= {item.get("url"), item.get("external_url"), item.get("image")}
        return {u for u in out if u}
    if name.endswith(".opml"):
        return {u.decode() for u in re.findall(rb'(?:xmlUrl|htmlUrl)="([^"]+)"', body)}
    parsed = feedparser.parse(body)
    out = {link["href"] for link in parsed.feed.get("links", [])}
    for entry in parsed.entries:
        out |= {link["href"] for link in entry.get("links", [])}
    return out


def test_every_link_we_write_answers_200(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with HFServer() as hf, SmtpServer() as smtp:
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
[[topics]]
name = "agents"
title = "LLM agents"
keywords = ["agent*", "language model*"]
[[subscribers]]
email = "{READER}"
"""
        )
        proc = start_serve(config, port, tmp_path)
        try:

            def fetched() -> bool:
                try:
                    return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
                except httpx.TransportError:
                    return False

            wait_until(fetched, 30, "the catch-up fetch did not succeed")
            # A real send (it waits for the service's run lock if a catch-up send runs).
            sent = subprocess.run(
                [sys.executable, "-m", "digest", "--config", str(config), "send"],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=60,
                env=os.environ | {"PYTHONPATH": str(ROOT)},
            )
            assert sent.returncode == 0, sent.stdout + sent.stderr
            with httpx.Client() as client:  # a sign-up, for the confirmation mail
                page = client.get(f"{base}/")
                csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
                assert csrf
                answer = client.post(
                    f"{base}/subscribe", data={"csrf": csrf.group(1), "email": "new@example.org"}
                )
                assert answer.status_code == 200
            wait_until(lambda: "new@example.org" in smtp.received_by(), 20, "no confirmation mail")

            links: dict[str, str] = {}  # link -> where we found it
            digest = next(m.message() for m in smtp.messages if READER in m.recipients)
            confirmation = next(
                m.message() for m in smtp.messages if "new@example.org" in m.recipients
            )
            html_part = digest.get_body(("html",)).get_content()
            for url in html_links(html_part, base):
                links.setdefault(url, "digest (HTML)")
            for message, where in ((digest, "digest (text)"), (confirmation, "confirmation")):
                for url in URL.findall(message.get_body(("plain",)).get_content()):
                    links.setdefault(url.rstrip(".,"), where)
            for url in URL.findall(str(digest["List-Unsubscribe"])):
                links.setdefault(url, "List-Unsubscribe")
            for name in sorted(os.listdir(tmp_path / "feeds")):
                body = (tmp_path / "feeds" / name).read_bytes()
                for url in feed_links(name, body):
                    links.setdefault(url, f"feed {name}")
            # Every page reachable from / (and from the links above) on our base URL.
            queue = [f"{base}/", *[u for u in links if u.startswith(base)]]
            seen: set[str] = set()
            while queue:
                url = queue.pop()
                if url in seen or not url.startswith(base):
                    continue
                seen.add(url)
                answer = httpx.get(url, timeout=10)
                links.setdefault(url, "crawl")
                if answer.headers.get("content-type", "").startswith("text/html"):
                    for found in html_links(answer.text, url):
                        links.setdefault(found, f"page {urlsplit(url).path}")
                        queue.append(found)
            ours = sorted(u for u in links if u.startswith(base))
            broken = [
                f"{u} ({links[u]}): {httpx.get(u, timeout=10).status_code}"
                for u in ours
                if httpx.get(u, timeout=10).status_code != 200
            ]
        finally:
            code, _ = stop(proc)
    assert broken == []
    assert len(ours) >= 12  # 16 when written: pages, feeds, archive days, mail links
    assert code == 0
    paths = {urlsplit(u).path for u in ours}
    # The links the issue named, and one of each kind, were among those checked.
    for must in ("/", "/feeds/", "/archive", "/feeds/all.xml", "/feeds/feeds.opml"):
        assert must in paths, must
    for prefix in ("/unsubscribe/", "/preferences/", "/confirm/", "/archive/"):
        assert any(p.startswith(prefix) for p in paths), prefix
    others = [u for u in links if not u.startswith(base)]
    assert others, "the digest links papers on arXiv and Hugging Face"
    for url in others:
        parts = urlsplit(url)
        assert parts.scheme == "https" and "." in parts.netloc and " " not in url, url
    assert any(urlsplit(u).netloc == "arxiv.org" for u in others)
    assert any(urlsplit(u).netloc == "huggingface.co" for u in others)
