"""Benchmark: building each reader's MIME message and its SMTP bytes, old way and new.

Run: .venv/bin/python bench/mail_assembly.py [--readers 3000] [--topics 100]

The setup of bench/mail_daily.py (the largest real API capture as today's papers, 100
topics of the captures' words, each reader on 1 to 5 of them), without the SMTP server:
each reader's email is rendered once (frame, fragments, quoted-printable bodies), then
in the same process, on the same bodies, the message is assembled and made ready for the
wire two ways, each timed over every reader (best of --repeats runs):

- **baseline**: `DigestRenderer.stock_message` (each header set through the email
  package, which parses it) and `Mailer.prepare` flattening it (the send branch's
  generator, which re-folds what does not fit on a line);
- **new**: `DigestRenderer.assemble` (headers set raw, the SMTP bytes spliced from the
  send's skeleton) and `Mailer.prepare` taking the kept bytes.

Also prints the whole `render` per reader (frame, "why" lines, bodies: what the sender
pays on top, and what this benchmark does not change) and checks that both ways give the
same bytes (the Date frozen for the check by a fixed second: the one of the run).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

from mail_daily import largest_capture  # bench/mail_daily.py
from topics import load_papers, make_topics  # bench/topics.py

from digest.clock import now_utc
from digest.config import Config, SmtpConfig
from digest.deliver.smtp import Mailer
from digest.jobs import ingest_file
from digest.models import Subscriber
from digest.render.email import DigestRenderer
from digest.render.mailheaders import WireMessage
from digest.store import Store


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--readers", type=int, default=3000)
    parser.add_argument("--topics", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    topics = make_topics(load_papers(), args.topics)
    smtp = SmtpConfig(host="127.0.0.1", security="none", sender="digest@example.org")
    config = Config(topics=topics, smtp=smtp)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(Path(tmp) / "bench.db")
        capture, n_papers = largest_capture()
        ingest_file(store, capture)
        day = now_utc().date()
        papers = store.claim_digest(day, today=day)
        store.close()
    rng = random.Random(11)
    names = [t.name for t in topics]
    readers = [
        Subscriber(
            f"r{i}@example.org",
            tuple(rng.sample(names, rng.randint(1, 5))),
            token=f"{i}.token-of-a-usual-length-signed-by-the-service-key",
            preferences_token=f"{i}.another-token-of-a-usual-length-signed",
        )
        for i in range(args.readers)
    ]
    renderer = DigestRenderer(config, papers, day)
    mailer = Mailer(smtp)
    t0 = time.perf_counter()
    rendered = []
    for sub in readers:
        msg = renderer.render(sub)
        if msg is not None:
            text, page = (part.get_payload() for part in msg.get_payload())
            rendered.append((sub, str(msg["Subject"]), text, page))
    render_ms = 1000 * (time.perf_counter() - t0) / len(readers)

    def old() -> None:
        for sub, subject, text, page in rendered:
            mailer.prepare(renderer.stock_message(sub, subject, text, page), sub.email)

    def new() -> None:
        for sub, subject, text, page in rendered:
            mailer.prepare(renderer.assemble(sub, subject, text, page), sub.email)

    def best(run: object) -> float:
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            run()  # type: ignore[operator]
            times.append(time.perf_counter() - t)
        return 1000 * min(times) / len(rendered)

    baseline, fast = best(old), best(new)
    same = 0
    for sub, subject, text, page in rendered[:200]:
        for _ in range(3):  # both in one second of the clock (the Date header)
            second = int(time.time())
            a = mailer.prepare(renderer.stock_message(sub, subject, text, page), sub.email)
            b_msg = renderer.assemble(sub, subject, text, page)
            b = mailer.prepare(b_msg, sub.email)
            if int(time.time()) == second:
                break
        assert isinstance(b_msg, WireMessage) and b_msg.wire() is not None
        if a.payload != b.payload:
            sys.exit(f"{sub.email}: the two ways wrote different bytes")
        same += 1
    size = sum(len(t) + len(p) for _, _, t, p in rendered) / len(rendered) / 1024
    print(
        f"{len(rendered)} readers, {args.topics} topics, {n_papers} papers ({capture.name}), "
        f"bodies {size:.0f} KB a message; bytes identical on {same} of {same}"
    )
    print("| step | per message | baseline (same run) | ratio |")
    print("| --- | --- | --- | --- |")
    print(
        f"| assemble + prepare | {fast:.3f} ms | {baseline:.3f} ms "
        f"(stock_message + flatten) | {baseline / fast:.1f}x less |"
    )
    print(f"| render, whole, new assembly included (for scale) | {render_ms:.2f} ms | | |")


if __name__ == "__main__":
    main()
