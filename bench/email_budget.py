"""Benchmark: the budgeted email on three heavy real cases, against the unbudgeted email in
the same process.

Run: .venv/bin/python bench/email_budget.py [--readers 200]

The cases are built from the real API captures in ../shared/fixtures/real (read, never
edited), each paper re-dated onto the day it would have come out:

- heaviest day: the captured day with the most text (2025-10-03, 39 papers);
- 7-day first edition: the seven fullest captured days, as seven days in a row (195);
- 41-day backlog: every captured API day, one a day (625 papers).

For each case, two readers: one with no topics (every paper) and one with three broad
topics (language models, agents, vision). Figures per email: the HTML part's size, the
whole message's size (as it goes over SMTP, quoted-printable), and the render time: the
first reader's (which renders the papers' fragments) and the mean of `--readers` more
readers (distinct addresses and tokens, the same topics), who reuse them.

The baseline is the same renderer with no budget (every paper in full, `max_full` past
the paper count), as the email was before: the ratio says how much smaller the email is.
Each timed call starts after a full garbage collection with the collector paused.

`--many N` (default 0: skipped) then renders the heaviest day for N readers who follow 1-5
of 100 topics (two of 20 common words each, drawn with a fixed seed: thousands of distinct
topic sets, issue 17's case) and reports the time per reader, the fragments kept and the
peak RSS of the process.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import random
import resource
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from digest.config import Config, EmailConfig, FeedsConfig, SmtpConfig, TopicConfig
from digest.deliver.smtp import flatten
from digest.models import Paper, StoredPaper, Subscriber
from digest.render.email import DigestRenderer
from digest.source.parse import parse_api

ROOT = Path(__file__).resolve().parent.parent
REAL = ROOT.parent / "shared" / "fixtures" / "real"
DAY = date(2026, 12, 1)
TOPICS = [
    TopicConfig(name="llm", title="Language models", keywords=["LLM*", "language model*"]),
    TopicConfig(name="agents", title="Agents", keywords=["agent*"]),
    TopicConfig(name="vision", title="Vision", keywords=["image*", "video*", "visual"]),
]
READERS = {"no topics": (), "three topics": ("llm", "agents", "vision")}


def captured_days() -> list[list[Paper]]:
    out: list[list[Paper]] = []
    seen: set[str] = set()
    for path in sorted(REAL.glob("api-daily_papers-*.json")):
        papers = [p for p in parse_api(path.read_bytes(), path.name).papers if p.id not in seen]
        seen.update(p.id for p in papers)
        out.append(papers)
    return out


def dated(days: list[list[Paper]]) -> list[StoredPaper]:
    out: list[StoredPaper] = []
    for back, papers in enumerate(reversed(days)):
        day = DAY - timedelta(days=back)
        seen = datetime(day.year, day.month, day.day, 7, tzinfo=UTC)
        out += [StoredPaper(dataclasses.replace(p, daily_date=day), seen) for p in papers]
    return out


def cases() -> dict[str, list[StoredPaper]]:
    days = captured_days()
    heaviest = max(days, key=lambda ps: sum(len(p.abstract) + len(p.title) for p in ps))
    return {
        "heaviest day": dated([heaviest]),
        "7-day first edition": dated(sorted(days, key=len, reverse=True)[:7]),
        "41-day backlog": dated(days),
    }


def config(**email: int) -> Config:
    return Config(
        topics=TOPICS,
        feeds=FeedsConfig(base_url="https://papers.example.org"),
        smtp=SmtpConfig(sender="Daily Papers <digest@papers.example.org>"),
        email=dataclasses.replace(EmailConfig(), **email),  # type: ignore[arg-type]
    )


def timed(fn):  # type: ignore[no-untyped-def]
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        value = fn()
        return value, time.perf_counter() - start
    finally:
        gc.enable()


def measure(cfg: Config, papers: list[StoredPaper], topics: tuple[str, ...], readers: int):  # type: ignore[no-untyped-def]
    renderer = DigestRenderer(cfg, papers, DAY)
    first, first_s = timed(lambda: renderer.render(Subscriber("r@example.net", topics, "tok0")))
    assert first is not None
    html = first.get_body(("html",))
    assert html is not None
    html_bytes = len(html.get_content().encode("utf-8"))
    total = len(flatten(first))
    subs = [Subscriber(f"r{i}@example.net", topics, f"tok{i}") for i in range(readers)]
    _, rest_s = timed(lambda: [renderer.render(s) for s in subs])
    return html_bytes, total, first_s * 1000, rest_s * 1000 / readers


WORDS = [
    "agent", "video", "image", "reason", "language", "model", "diffusion", "robot", "speech",
    "audio", "graph", "math", "code", "3d", "benchmark", "dataset", "attention",
    "transformer", "vision", "learning",
]  # fmt: skip


def many(papers: list[StoredPaper], readers: int) -> None:
    rng = random.Random(7)
    topics = [TopicConfig(name=f"t{i}", keywords=rng.sample(WORDS, 2)) for i in range(100)]
    cfg = dataclasses.replace(config(), topics=topics)
    names = [t.name for t in topics]
    subs = [
        Subscriber(f"r{i}@example.net", tuple(rng.sample(names, rng.randint(1, 5))), f"t{i}")
        for i in range(readers)
    ]
    sets = len({tuple(sorted(s.topics)) for s in subs})
    renderer = DigestRenderer(cfg, papers, DAY)
    # Each message dropped once made, as the send does after its "250"; the collector
    # runs as in a send (a message's parts refer to each other: cycles).
    start = time.perf_counter()
    made = sum(renderer.render(s) is not None for s in subs)
    took = time.perf_counter() - start
    assert made == readers
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{readers} readers x 100 topics ({sets} distinct topic sets), heaviest day: "
        f"{took * 1000 / readers:.2f} ms a reader, {len(renderer._fragments)} fragments, "
        f"{len(renderer._chips)} why-lines kept, peak RSS {peak:.0f} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readers", type=int, default=200, help="readers timed after the first")
    parser.add_argument("--many", type=int, default=0, help="readers of 100 topics (0: skip)")
    args = parser.parse_args()
    if args.many:
        many(cases()["heaviest day"], args.many)
        return
    budgeted = config()
    print(
        f"budget: max_full {budgeted.email.max_full}, max_listed {budgeted.email.max_listed}; "
        "baseline: every paper in full"
    )
    print(
        f"{'case':<20} {'reader':<13} {'papers':>6} {'HTML KB':>8} {'total KB':>9} "
        f"{'first ms':>9} {'next ms':>8} | {'base HTML KB':>12} {'base next ms':>12} "
        f"{'HTML ratio':>10}"
    )
    for name, papers in cases().items():
        for reader, topics in READERS.items():
            html, total, first, rest = measure(budgeted, papers, topics, args.readers)
            unbudgeted = config(max_full=len(papers), max_listed=0)
            b_html, _, _, b_rest = measure(unbudgeted, papers, topics, max(args.readers // 10, 5))
            print(
                f"{name:<20} {reader:<13} {len(papers):>6} {html / 1024:>8.1f} "
                f"{total / 1024:>9.1f} {first:>9.1f} {rest:>8.2f} | {b_html / 1024:>12.1f} "
                f"{b_rest:>12.2f} {b_html / html:>9.1f}x"
            )


if __name__ == "__main__":
    main()
