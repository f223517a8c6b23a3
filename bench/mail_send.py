"""Benchmark: the daily email to 10,000 subscribers over one reused SMTP connection.

Run: .venv/bin/python bench/mail_send.py [--subscribers 10000] [--baseline 1000]

Stores a real day (../shared/fixtures/real/page-daily-2024-08-01.html), adds N
subscribers with 1-5 of 8 topics each, and runs `send_digests` (render each email,
deliver it, commit the ledger row) to an aiosmtpd server running in its own process.
The baseline sends a sample the way most digest scripts do: one SMTP connection per
message (connect, EHLO, MAIL/RCPT/DATA, QUIT), same messages, same server. Prints
messages per second for both, their ratio, and the peak memory of this process.

Both are run twice: with the server requiring STARTTLS (a throwaway self-signed
certificate, trusted through smtp.ca_file), which is our default `smtp.security` and what
real relays ask for, and with plain SMTP on loopback. The targets are judged on the first:
a TLS handshake per message is what one-connection-per-message scripts really pay.

"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import random
import resource
import smtplib
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from digest.clock import now_utc
from digest.config import Config, SmtpConfig, TopicConfig
from digest.deliver.digest import Render, send_digests
from digest.jobs import ingest_file
from digest.models import Subscriber
from digest.store import Store

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT.parent / "shared" / "fixtures" / "real" / "page-daily-2024-08-01.html"
TOPICS = [
    TopicConfig(name="agents", keywords=["agent*", "tool use", "web navigation"]),
    TopicConfig(name="llm", keywords=["llm*", "language model*", "instruction tuning"]),
    TopicConfig(name="vision", keywords=["image*", "video*", "visual", "segmentation"]),
    TopicConfig(name="diffusion", keywords=["diffusion", "text-to-image", "generative"]),
    TopicConfig(name="reasoning", keywords=["reasoning", "math*", "chain-of-thought"]),
    TopicConfig(name="speech", keywords=["speech", "audio", "tts", "asr"]),
    TopicConfig(name="robotics", keywords=["robot*", "embodied", "manipulation"]),
    TopicConfig(name="efficiency", keywords=["quantization", "pruning", "distillation", "sparse"]),
]


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A throwaway certificate and key in `folder`, made as the tests make theirs."""
    # tests/ is not installed: the checkout's folder goes on the path for this one import.
    sys.path.insert(0, str(ROOT))
    from tests.support.smtpserver import self_signed as make

    return make(folder)


def start_server(
    cert: Path | None = None, key: Path | None = None
) -> tuple[subprocess.Popen[str], int]:
    tls = ["--starttls", str(cert), str(key)] if cert and key else []
    # PIPELINING offered, as relays do (Postfix, SES): the one session sends a message's
    # MAIL, RCPT and DATA with the previous one's final "." (before 2026-12-06 the server
    # here did not offer it, and each message waited for four replies in turn).
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.smtpserver", "--pipelining", *tls],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    if not line or line[0] != "ready":
        raise SystemExit(f"the SMTP server did not start: {line}")
    return proc, int(line[1])


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU time of this process (or of `pid`), from /proc."""
    fields = Path(f"/proc/{pid or 'self'}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_count(proc: subprocess.Popen[str]) -> int:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("count\n")
    proc.stdin.flush()
    return int(proc.stdout.readline())


def run(security: str, subscribers: int, baseline: int, folder: Path) -> tuple[float, float]:
    """Send to `subscribers` readers with smtp.security = `security`, then the baseline;
    print the figures and return (messages/s, baseline messages/s)."""
    cert = key = None
    if security == "starttls":
        cert, key = self_signed(folder)
    proc, port = start_server(cert, key)
    try:
        config = Config(
            topics=TOPICS,
            smtp=SmtpConfig(
                host="127.0.0.1",
                port=port,
                security=security,
                ca_file=str(cert) if cert else "",
                rate_per_minute=0,  # no rate limit: we measure the machinery
                # One reused session against one connection per message, as measured
                # before smtp.connections (bench/mail_latency.py measures several).
                connections=1,
                sender="digest@example.org",
            ),
        )
        store = Store.open(folder / f"bench-{security}.db")
        ingest_file(store, PAGE)
        day = now_utc().date()  # papers_of_day goes by first-seen day: today
        papers = store.papers_of_day(day)
        rng = random.Random(4)
        stamp = now_utc().isoformat()
        rows = [
            (
                f"reader{i}@example.org",
                json.dumps(rng.sample([t.name for t in TOPICS], rng.randint(1, 5))),
                stamp,
                stamp,
            )
            for i in range(subscribers)
        ]
        with store.transaction() as conn:  # setup, not measured
            conn.executemany(
                "INSERT INTO subscribers (email, topics, status, created, updated) "
                "VALUES (?, ?, 'active', ?, ?)",
                rows,
            )
        renderer = importlib.import_module("digest.render.email").DigestRenderer
        render: Render = renderer(config, papers, day).render
        offered = (
            "STARTTLS required (self-signed certificate, trusted via smtp.ca_file)"
            if cert
            else "plain SMTP"
        )
        print(f"\n-- smtp.security = {security!r}: the server offers {offered}")
        print(f"day {day}: {len(papers)} papers, {subscribers} subscribers, 8 topics")

        before = server_count(proc)
        cpu0, server0 = cpu_seconds(), cpu_seconds(proc.pid)
        t0 = time.perf_counter()
        report = send_digests(config, store, day, render=render)
        elapsed = time.perf_counter() - t0
        cpu, server_cpu = cpu_seconds() - cpu0, cpu_seconds(proc.pid) - server0
        arrived = server_count(proc) - before
        sent = len(report.sent)
        rate = sent / elapsed
        print(report.summary())
        print(
            f"reused connection: {sent} messages in {elapsed:.2f} s = {rate:.0f} messages/s "
            f"(render + SMTP + ledger commit each; {report.connections} connection(s); "
            f"server counted {arrived})"
        )
        print(
            f"  CPU per message: sender {1000 * cpu / sent:.2f} ms, "
            f"aiosmtpd server {1000 * server_cpu / sent:.2f} ms (2 cores here)"
        )

        # Baseline: same renderer, server and security, one connection per message
        # (connect, EHLO, STARTTLS when asked, MAIL/RCPT/DATA, QUIT), no ledger.
        context = ssl.create_default_context(cafile=str(cert)) if cert else None
        subs = [Subscriber(r[0], tuple(json.loads(r[1]))) for r in rows[:baseline]]
        before = server_count(proc)
        t0 = time.perf_counter()
        n = 0
        for sub in subs:
            msg = render(sub)
            if msg is None:
                continue
            with smtplib.SMTP("127.0.0.1", port) as conn:
                if context is not None:
                    conn.starttls(context=context)
                conn.send_message(msg, config.smtp.sender, [sub.email])
            n += 1
        base_elapsed = time.perf_counter() - t0
        base_rate = n / base_elapsed
        arrived = server_count(proc) - before
        print(
            f"baseline, one connection per message: {n} messages in {base_elapsed:.2f} s = "
            f"{base_rate:.0f} messages/s (server counted {arrived})"
        )
        print(f"ratio: {rate / base_rate:.1f}x the baseline")
        store.close()
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=10)
    return rate, base_rate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--baseline", type=int, default=1_000)
    parser.add_argument(
        "--security",
        choices=["starttls", "none", "both"],
        default="both",
        help="starttls: our default config and what relays require (the targets are "
        "judged on it); none: plain SMTP on loopback, for comparison.",
    )
    args = parser.parse_args()
    modes = ["starttls", "none"] if args.security == "both" else [args.security]
    with tempfile.TemporaryDirectory() as tmp:
        results = {m: run(m, args.subscribers, args.baseline, Path(tmp)) for m in modes}
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak memory (max RSS of this process): {peak_mb:.0f} MB")
    judged = "starttls" if "starttls" in results else modes[0]
    rate, base_rate = results[judged]
    targets = rate >= 300 and rate / base_rate >= 3 and peak_mb < 300
    print(
        f"targets on smtp.security = {judged!r} (>= 300/s, >= 3x, < 300 MB): "
        f"{rate:.0f}/s, {rate / base_rate:.1f}x, {peak_mb:.0f} MB: "
        f"{'met' if targets else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
