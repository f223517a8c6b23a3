"""Benchmark: the daily send of a real day to 10,000 readers of 100 topics, peak memory.

Run: .venv/bin/python bench/mail_daily.py [--readers 10000] [--topics 100]

The largest real API capture is stored as today's papers; 100 topics of 5-20 terms are
made from the captures' own words (bench/topics.py's generator, fixed seed); each reader
follows 1 to 5 of them, so nearly every reader has a topic set of their own. Then the
real `send_digests` runs as the daily job calls it (no `render`: it claims the day's
edition and renders with digest.render.email.DigestRenderer, today's renderer) against
aiosmtpd in its own process on 127.0.0.1.

Each variant runs in a fresh child process, so its peak memory (max RSS) is its own:

- new: the default `smtp.connections` (4) against a server offering PIPELINING;
- one session: `smtp.connections = 1`, a server without PIPELINING (the old way of
  sending; the ledger and MIME savings of this branch are in both);
- stock assembly: as new, but each reader's message is built header by header by the
  email package and flattened by the sender (`DigestRenderer.stock_message`, the way
  before the message carried its own SMTP bytes): the same-run baseline of that change;
- plain render: as new, but each email rendered the plain way (`DigestRenderer.reference`:
  the frame and the "why" chips rendered and CSS-inlined per email, each body encoded
  whole; the same bytes): the same-run baseline of issue 17's rendering shortcuts.

Prints messages/s, the process's CPU per message (all threads) split in two (see
bench/bodies.py), and peak memory, with the RSS before the send (store, readers, topics
loaded):

- bodies: making each reader's two bodies (their papers picked and ranked, the cards
  with their "why" lines and feedback links, the frame, both parts quoted-printable);
- sender: everything else of the send: listing the readers, the ledger (queue, claim,
  outcome), the message around the bodies (headers, MIME parts, its SMTP bytes), the
  sessions and the threads that feed them.

Targets: peak under 300 MB, sender CPU under 1.5 ms a message. Issue 17 measured its
3.5 ms with the bodies built apart (one per topic set, 6 ms each): the flattening,
header folding, ledger and SMTP of a message already made. So the target is read on the
sender column; the total, bodies included, is printed beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bodies import time_bodies  # bench/bodies.py
from topics import load_papers, make_topics  # bench/topics.py

from digest.clock import now_utc
from digest.config import Config, SmtpConfig, TopicConfig
from digest.deliver.digest import send_digests
from digest.jobs import ingest_file
from digest.source.parse import parse_api
from digest.store import Store

ROOT = Path(__file__).resolve().parent.parent
REAL = ROOT.parent / "shared" / "fixtures" / "real"


def largest_capture() -> tuple[Path, int]:
    """The API capture with the most papers, and how many."""
    sizes = [(len(parse_api(p.read_bytes(), str(p)).papers), p) for p in REAL.glob("api-*.json")]
    n, path = max(sizes)
    return path, n


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def child(variant: str, port: int, readers: int, n_topics: int, folder: Path) -> None:
    """One variant's send, in this (fresh) process; prints one JSON line of figures."""
    topics: list[TopicConfig] = make_topics(load_papers(), n_topics)
    bodies = time_bodies()
    sessions = 1 if variant == "one-session" else 4
    if variant == "stock-assembly":
        from digest.render.email import DigestRenderer

        DigestRenderer.assemble = DigestRenderer.stock_message  # type: ignore[method-assign]
    if variant == "plain-render":
        from digest.render.email import DigestRenderer

        made = DigestRenderer.__init__

        def plain(self: DigestRenderer, *args: Any, **kwargs: Any) -> None:
            made(self, *args, **kwargs)
            self.reference = True

        DigestRenderer.__init__ = plain  # type: ignore[method-assign]
    config = Config(
        topics=topics,
        smtp=SmtpConfig(
            host="127.0.0.1",
            port=port,
            security="none",
            sender="digest@example.org",
            rate_per_minute=0,
            connections=sessions,
        ),
    )
    store = Store.open(folder / f"{variant}.db")
    capture, papers = largest_capture()
    ingest_file(store, capture)
    rng = random.Random(11)
    names = [t.name for t in topics]
    stamp = now_utc().isoformat()
    with store.transaction() as conn:
        conn.executemany(
            "INSERT INTO subscribers (email, topics, status, created, updated) "
            "VALUES (?, ?, 'active', ?, ?)",
            [
                (
                    f"r{i}@example.org",
                    json.dumps(rng.sample(names, rng.randint(1, 5))),
                    stamp,
                    stamp,
                )
                for i in range(readers)
            ],
        )
    day = now_utc().date()
    before = rss_mb()
    bodies[0] = 0.0
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    report = send_digests(config, store, day, today=day)
    elapsed, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    sent = len(report.sent)
    print(
        json.dumps(
            {
                "variant": variant,
                "papers": papers,
                "capture": capture.name,
                "sent": sent,
                "skipped": len(report.skipped),
                "ok": report.ok,
                "seconds": elapsed,
                "rate": sent / elapsed if elapsed else 0.0,
                "cpu_ms": 1000 * cpu / max(sent, 1),
                "bodies_ms": 1000 * bodies[0] / max(sent, 1),
                "rss_before": before,
                "peak": peak,
            }
        ),
        flush=True,
    )


def server(*args: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.smtpserver", *args],
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--readers", type=int, default=10_000)
    parser.add_argument("--topics", type=int, default=100)
    parser.add_argument("--variants", default="new,plain-render,stock-assembly,one-session")
    parser.add_argument("--child", nargs=3, metavar=("VARIANT", "PORT", "FOLDER"))
    args = parser.parse_args()
    if args.child:
        variant, port, folder = args.child
        child(variant, int(port), args.readers, args.topics, Path(folder))
        return
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for variant in args.variants.split(","):
            proc, port = server() if variant == "one-session" else server("--pipelining")
            try:
                run = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--readers",
                        str(args.readers),
                        "--topics",
                        str(args.topics),
                        "--child",
                        variant,
                        str(port),
                        tmp,
                    ],
                    cwd=ROOT,
                    capture_output=True,
                    text=True,
                    timeout=1800,
                )
            finally:
                assert proc.stdin is not None
                proc.stdin.close()
                proc.wait(timeout=10)
            if run.returncode != 0:
                raise SystemExit(f"{variant}: {run.stderr[-3000:]}")
            figures = json.loads(run.stdout.strip().splitlines()[-1])
            results.append(figures)
            print(
                f"{variant}: {figures['sent']} sent ({figures['skipped']} skipped) in "
                f"{figures['seconds']:.1f} s = {figures['rate']:.0f} msg/s; CPU "
                f"{figures['cpu_ms']:.2f} ms/msg, of which the bodies "
                f"{figures['bodies_ms']:.2f} and the sender "
                f"{figures['cpu_ms'] - figures['bodies_ms']:.2f}; RSS "
                f"{figures['rss_before']:.0f} MB before the send, peak {figures['peak']:.0f} MB",
                flush=True,
            )
    first = results[0]
    print(
        f"\n{args.readers} readers, {args.topics} topics (1-5 each), {first['papers']} papers "
        f"({first['capture']}), today's renderer"
    )
    print(
        "| variant | msg/s | sender CPU / msg (all but the bodies) | bodies CPU / msg | "
        "CPU / msg, all | RSS before send | peak RSS |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for f in results:
        print(
            f"| {f['variant']} | {f['rate']:.0f} | {f['cpu_ms'] - f['bodies_ms']:.2f} ms | "
            f"{f['bodies_ms']:.2f} ms | {f['cpu_ms']:.2f} ms | "
            f"{f['rss_before']:.0f} MB | {f['peak']:.0f} MB |"
        )


if __name__ == "__main__":
    main()
