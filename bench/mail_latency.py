"""Benchmark: the daily send to 10,000 readers through a relay 0, 50 and 100 ms away.

Run: .venv/bin/python bench/mail_latency.py [--readers 10000] [--sessions 8]
                                            [--rtt 0,50,100] [--baseline 1000,150,100]

A real relay (SES, Postmark, a provider's smarthost) is tens of milliseconds away; on
loopback a round trip costs nothing. Each aiosmtpd server (its own process) sits behind
a TCP proxy (tests/support/latency.py, its own process) that delivers every chunk half
the round trip late, each way (`tc netem` needs privileges this machine does not give).

For each round trip, in the same run, on the same stored real day (13 papers) and
readers with 1-5 of 8 topics each, rendered by today's DigestRenderer:

- baseline, today's way before issue 17: the real `send_digests`, one session, no
  PIPELINING (the server does not offer it), on a sample of the readers (at 50 ms a
  full send would take 38 minutes);
- the new sender: `send_digests` with `smtp.connections` sessions against a server that
  offers PIPELINING, all the readers (render, send, ledger claim and outcome each);
- pre-built: the same sessions sending already-flattened messages with no rendering and
  no ledger (each its own `Mailer`, pipelined the same way): what the receiver takes
  through that link, the ceiling the sender is judged against.

Prints messages per second for each, the ratios, and the new sender's CPU per message:
the sender's (all but making the readers' bodies: the readers, MIME, SMTP, ledger,
threads; see bench/bodies.py) and in all (its every thread, bodies included), with the
servers' CPU for comparison; and its CPU once more with every message rendered before
the clock starts (the `--prebuilt` first readers, same sessions): what the sessions and
the ledger cost with no message made in the send at all.
Targets: >= 100 msg/s at 50 ms with at most 8 sessions, >= 300 msg/s at 0 ms, >= 70% of
pre-built over the same sessions, sender CPU < 1.5 ms a message.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from email.message import EmailMessage
from pathlib import Path

from bodies import time_bodies  # bench/bodies.py

from digest.clock import now_utc
from digest.config import Config, SmtpConfig, TopicConfig
from digest.deliver.digest import Render, send_digests
from digest.deliver.smtp import Mailer, Outgoing
from digest.jobs import ingest_file
from digest.models import Paper, Subscriber
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


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU time of this process (or of `pid`), from /proc."""
    fields = Path(f"/proc/{pid or 'self'}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start(module: str, *args: str) -> tuple[subprocess.Popen[str], int]:
    """Start `python -m module args` (a test server or proxy); return it and its port."""
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    if not line or line[0] != "ready":
        raise SystemExit(f"{module} did not start: {line}")
    return proc, int(line[1])


def stop(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(timeout=10)


def readers(n: int) -> list[tuple[str, list[str]]]:
    rng = random.Random(4)
    names = [t.name for t in TOPICS]
    return [(f"reader{i}@example.org", rng.sample(names, rng.randint(1, 5))) for i in range(n)]


def make_store(path: Path, who: list[tuple[str, list[str]]]) -> tuple[Store, date]:
    store = Store.open(path)
    ingest_file(store, PAGE)
    stamp = now_utc().isoformat()
    with store.transaction() as conn:  # setup, not measured
        conn.executemany(
            "INSERT INTO subscribers (email, topics, status, created, updated) "
            "VALUES (?, ?, 'active', ?, ?)",
            [(a, json.dumps(t), stamp, stamp) for a, t in who],
        )
    return store, now_utc().date()  # papers_of_day goes by first-seen day: today


def config_for(port: int, sessions: int) -> Config:
    smtp = SmtpConfig(
        host="127.0.0.1",
        port=port,
        security="none",
        rate_per_minute=0,
        connections=sessions,
        sender="digest@example.org",
        timeout=30.0,
    )
    return Config(topics=TOPICS, smtp=smtp)


def timed_send(
    port: int,
    sessions: int,
    who: list[tuple[str, list[str]]],
    db: Path,
    server_pid: int,
    rendered_ahead: bool = False,
) -> tuple[float, float, float, float]:
    """send_digests to `who`; return (messages/s, sender CPU ms/message in all, of it
    the bodies', the server's). `rendered_ahead`: every message rendered before the
    clock starts, so the figures are the sessions' and the ledger's alone."""
    store, day = make_store(db, who)
    config = config_for(port, sessions)
    papers: list[Paper] = store.papers_of_day(day)
    renderer = importlib.import_module("digest.render.email").DigestRenderer(config, papers, day)
    render: Render = renderer.render
    if rendered_ahead:
        from digest.store.readers import active_subscribers

        ready = {s.email: renderer.render(s) for s in active_subscribers(config, store)}
        render = lambda sub: ready[sub.email]  # noqa: E731
    bodies = time_bodies()
    bodies[0] = 0.0
    cpu0, server0 = cpu_seconds(), cpu_seconds(server_pid)
    t0 = time.perf_counter()
    report = send_digests(config, store, day, render=render, today=day)
    elapsed = time.perf_counter() - t0
    cpu, server_cpu = cpu_seconds() - cpu0, cpu_seconds(server_pid) - server0
    store.close()
    sent = len(report.sent)
    if sent + len(report.skipped) != len(who) or not report.ok:  # skipped: nothing matched
        raise SystemExit(f"the send did not go through: {report.summary()}")
    return sent / elapsed, 1000 * cpu / sent, 1000 * bodies[0] / sent, 1000 * server_cpu / sent


def prebuilt(port: int, sessions: int, messages: list[Outgoing]) -> float:
    """Send `messages` (already flattened) over `sessions` pipelined sessions, no ledger;
    return messages/s."""
    config = config_for(port, sessions)
    queue = list(reversed(messages))
    lock = threading.Lock()

    def take() -> Outgoing | None:
        with lock:
            return queue.pop() if queue else None

    def session() -> None:
        with Mailer(config.smtp) as mailer:
            out = take()
            while out is not None:
                following = take()
                mailer.send(out, follow=following)
                out = following

    threads = [threading.Thread(target=session) for _ in range(sessions)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(messages) / (time.perf_counter() - t0)


def sample_messages(n: int, folder: Path) -> list[Outgoing]:
    who = readers(n)
    store, day = make_store(folder / "prebuilt.db", who)
    config = config_for(25, 1)
    render = (
        importlib.import_module("digest.render.email")
        .DigestRenderer(config, store.papers_of_day(day), day)
        .render
    )
    mailer = Mailer(config.smtp)
    out: list[Outgoing] = []
    for address, topics in who:
        message: EmailMessage | None = render(Subscriber(address, tuple(topics)))
        if message is not None:
            out.append(mailer.prepare(message, address))
    store.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--readers", type=int, default=10_000)
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--rtt", default="0,50,100", help="round trips to test, in ms")
    parser.add_argument(
        "--baseline", default="1000,150,100", help="readers of the baseline, per round trip"
    )
    parser.add_argument("--prebuilt", type=int, default=3000, help="pre-built messages sent")
    args = parser.parse_args()
    rtts = [int(x) for x in args.rtt.split(",")]
    samples = [int(x) for x in args.baseline.split(",")]
    who = readers(args.readers)
    print(
        f"{args.readers} readers, 1-5 of 8 topics each, a real day of 13 papers; "
        f"new sender: {args.sessions} sessions with PIPELINING; baseline: 1 session without"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        built = sample_messages(args.prebuilt, folder)
        plain, plain_port = start("tests.support.smtpserver")
        piped, piped_port = start("tests.support.smtpserver", "--pipelining")
        try:
            for rtt, sample in zip(rtts, samples, strict=False):
                one_way = str(rtt / 2000)
                proxy_plain, pp = start("tests.support.latency", str(plain_port), one_way)
                proxy_piped, pq = start("tests.support.latency", str(piped_port), one_way)
                try:
                    base, base_cpu, _, _ = timed_send(
                        pp, 1, who[:sample], folder / f"base-{rtt}.db", plain.pid
                    )
                    new, new_cpu, new_bodies, server_cpu = timed_send(
                        pq, args.sessions, who, folder / f"new-{rtt}.db", piped.pid
                    )
                    ceiling = prebuilt(pq, args.sessions, built)
                    _, ahead_cpu, _, _ = timed_send(
                        pq,
                        args.sessions,
                        who[: args.prebuilt],
                        folder / f"ahead-{rtt}.db",
                        piped.pid,
                        rendered_ahead=True,
                    )
                finally:
                    stop(proxy_plain)
                    stop(proxy_piped)
                rows.append((rtt, base, new, ceiling, new_cpu - new_bodies, new_cpu, ahead_cpu))
                print(
                    f"{rtt:>3} ms round trip: baseline {base:.1f} msg/s ({sample} readers, "
                    f"CPU {base_cpu:.2f} ms/msg); new {new:.0f} msg/s ({new / base:.1f}x, "
                    f"{args.readers} readers in {args.readers / new:.0f} s); pre-built "
                    f"{ceiling:.0f} msg/s (new = {100 * new / ceiling:.0f}%); sender CPU "
                    f"{new_cpu - new_bodies:.2f} ms/msg ({new_cpu:.2f} with the bodies, "
                    f"{ahead_cpu:.2f} rendered ahead), aiosmtpd {server_cpu:.2f} ms/msg",
                    flush=True,
                )
        finally:
            stop(plain)
            stop(piped)
    print(
        "\n| round trip | baseline | new sender | ratio | pre-built | new/pre-built "
        "| sender CPU/msg | with the bodies | rendered ahead |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for rtt, base, new, ceiling, cpu, total, ahead in rows:
        print(
            f"| {rtt} ms | {base:.1f} msg/s | {new:.0f} msg/s | {new / base:.1f}x | "
            f"{ceiling:.0f} msg/s | {100 * new / ceiling:.0f}% | {cpu:.2f} ms | {total:.2f} ms "
            f"| {ahead:.2f} ms |"
        )
    verdicts = []
    for rtt, _base, new, ceiling, cpu, _total, _ahead in rows:
        wanted = 300 if rtt == 0 else 100 if rtt == 50 else 0
        ok = new >= wanted and new >= 0.7 * ceiling and cpu < 1.5
        verdicts.append(f"{rtt} ms: {'met' if ok else 'NOT met'}")
    print(
        f"targets (>= 300/s at 0 ms, >= 100/s at 50 ms, >= 70% of pre-built, < 1.5 ms "
        f"CPU): {'; '.join(verdicts)}"
    )


if __name__ == "__main__":
    main()
