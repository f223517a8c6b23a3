"""Benchmark: a send's rendering for 10,000 readers with like-topics, learned models and
feedback links on, against the same send with them off, in the same process.

Run: .venv/bin/python bench/relevance_send.py [--readers 10000]

Issue 15's bound: a send for 10,000 readers must not get more than 2x slower. Both runs
render the heaviest captured day (2025-10-03, 39 papers, as bench/email_budget.py picks
it) for the same readers, who follow 1-5 of 100 keyword topics (bench/email_budget.py's
`--many` readers, same seed):

- baseline: `DigestRenderer(config, papers, day)`, as the send was before issue 15;
- on: 20 like-topics more (5 seed papers each, drawn from the other captured days with a
  fixed seed), every reader following one of them too; EVERY reader with a learned model
  (the worst case: a real send has models only for readers who chose; 1,000 distinct
  models learned from 1-20 choices each, every reader holding one as their own bytes),
  read back as the send reads them; feedback links signed per (reader, card). The
  like-matches (`relevance.like_matches` over the papers' vectors) and the models' bytes
  read back are timed as part of the send.

Not timed as part of the send: building the vocabulary and the papers' vectors (done when
papers are stored) and learning the models (done once per new choice, then kept); both
are reported on their own lines. Vectors come from a vocabulary of every captured paper.
No SMTP: bench/mail_send.py measures the sending; this is the rendering a send adds to.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import time

from email_budget import DAY, WORDS, captured_days, cases, config

from digest.addresses import address_key
from digest.config import TopicConfig
from digest.models import Subscriber
from digest.relevance import (
    Choice,
    ReaderModel,
    SendTerms,
    SimilarityIndex,
    Vocabulary,
    learn,
    like_matches,
    like_topics,
)
from digest.render.email import DigestRenderer

# Models learned for the run (each reader gets one of them as their own bytes): learning
# 10,000 takes minutes and is not part of a send; reading them back and ranking by them is.
DISTINCT_MODELS = 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readers", type=int, default=10_000)
    args = parser.parse_args()
    rng = random.Random(7)
    papers = cases()["heaviest day"]
    pool_ids = {sp.paper.id for sp in papers}
    everything = [p for day in captured_days() for p in day]
    others = [p for p in everything if p.id not in pool_ids]

    start = time.perf_counter()
    vocab = Vocabulary.build(everything)
    vectors = {p.id: vocab.vector(p) for p in everything}
    made = time.perf_counter() - start

    topics = [TopicConfig(name=f"t{i}", keywords=rng.sample(WORDS, 2)) for i in range(100)]
    likes_cfg = [
        TopicConfig(name=f"like{i}", like=[p.id for p in rng.sample(others, 5)]) for i in range(20)
    ]
    names = [t.name for t in topics]
    subs = [
        Subscriber(f"r{i}@example.net", tuple(rng.sample(names, rng.randint(1, 5))), f"t{i}")
        for i in range(args.readers)
    ]
    base_cfg = dataclasses.replace(config(), topics=topics)
    on_cfg = dataclasses.replace(config(), topics=topics + likes_cfg)
    on_subs = [
        dataclasses.replace(s, topics=(*s.topics, f"like{i % 20}")) for i, s in enumerate(subs)
    ]

    # Each reader's model, learned from 1-20 choices among the other days' papers.
    start = time.perf_counter()
    kept: dict[str, bytes] = {}
    background = [vectors[p.id] for p in others[:200]]
    learned: list[bytes] = []
    for _ in range(min(len(subs), DISTINCT_MODELS)):
        chosen = rng.sample(others, rng.randint(1, 20))
        model = learn([Choice(vectors[p.id], rng.random() < 0.7) for p in chosen], background)
        assert model is not None
        learned.append(model.to_bytes())
    learning = time.perf_counter() - start
    for i, s in enumerate(subs):  # each reader's own copy, read back as the send reads it
        kept[address_key(s.email)] = bytes(learned[i % len(learned)])

    start = time.perf_counter()
    renderer = DigestRenderer(base_cfg, papers, DAY)
    assert all(renderer.render(s) is not None for s in subs)
    baseline = time.perf_counter() - start

    start = time.perf_counter()
    seeds = {p.id: (p, vectors[p.id]) for p in others}
    index = SimilarityIndex(like_topics(on_cfg.topics, seeds))
    liked = like_matches(index, [sp.paper for sp in papers], vectors, on_cfg.topics)
    # As deliver.likes.learned_for reads them: each model over the send's papers' terms.
    send = SendTerms({pid: vectors[pid] for pid in pool_ids})
    read = time.perf_counter()
    models = {r: send.model(ReaderModel.from_bytes(b)) for r, b in kept.items()}
    reading = time.perf_counter() - read
    on = DigestRenderer(
        on_cfg,
        papers,
        DAY,
        likes=liked,
        models=models,
        vectors=send.vectors,
        feedback_key=b"k" * 32,
    )
    # Each message dropped once made, as the baseline's are (and a send's, once sent):
    # keeping 10,000 of them made the collector walk them all, again and again.
    first = on.render(on_subs[0])
    assert all(on.render(s) is not None for s in on_subs[1:])
    with_relevance = time.perf_counter() - start
    assert first is not None
    body = first.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "/feedback/" in body

    # The parts, each alone over the same readers (not in the ratio): like-topics only;
    # and like-topics with the models, without feedback links.
    start = time.perf_counter()
    likes_only = DigestRenderer(on_cfg, papers, DAY, likes=liked)
    assert all(likes_only.render(s) is not None for s in on_subs)
    t_likes = time.perf_counter() - start
    start = time.perf_counter()
    no_links = DigestRenderer(on_cfg, papers, DAY, likes=liked, models=models, vectors=send.vectors)
    assert all(no_links.render(s) is not None for s in on_subs)
    t_models = time.perf_counter() - start

    n = args.readers
    kept_papers = sum(1 for ms in liked.values())
    print(
        f"{n} readers, heaviest day ({len(papers)} papers), 100 keyword topics + 20 like-topics "
        f"({kept_papers} papers kept by a like-topic)"
    )
    print(f"baseline (issue 14's send): {baseline:.1f} s, {baseline * 1000 / n:.2f} ms a reader")
    print(
        f"like-topics + learned models (every reader) + feedback links: {with_relevance:.1f} s, "
        f"{with_relevance * 1000 / n:.2f} ms a reader: "
        f"{with_relevance / baseline:.2f}x the baseline"
    )
    print(
        f"  of which reading {len(models)} models back: {reading:.1f} s; alone, same readers: "
        f"like-topics only {t_likes:.1f} s, like-topics + models without feedback links "
        f"{t_models:.1f} s (+ reading the models)"
    )
    full = sum(len(b) - 13 for b in kept.values()) / 1e6  # 8 bytes a term as stored
    held = sum(4 * len(m.weights) for m in models.values()) / 1e6
    print(
        f"models held during the send: {held:.1f} MB of weights ({len(send)} terms in the "
        f"send's papers, 4 bytes each), {full:.1f} MB as stored (8 bytes a term)"
    )
    print(
        f"not in the send: vocabulary + {len(vectors)} vectors {made:.1f} s (when stored); "
        f"learning {len(learned)} models {learning:.1f} s (once per new choice)"
    )


if __name__ == "__main__":
    main()
