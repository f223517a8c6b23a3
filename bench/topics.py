"""Benchmark: 1,000 keyword topics against 100 real papers, one pass vs the naive loop.

Run: .venv/bin/python bench/topics.py [--topics 1000] [--papers 100] [--repeats 7]

Papers come from the real captures in ../shared/fixtures/real. Topics are generated
deterministically (seeded) from words of those captures (not the generic ones found in
more than a fifth of the papers, see --max-share): 5-20 terms each, a mix of
single words, `prefix*` terms and phrases taken from the papers' AI keywords, plus 0-2
exclusions. `digest.topics.Matcher` (compiled once, then one pass per paper) is timed
against the naive loop most scripts write: for each topic, for each term, `re.search`
with a precompiled word-boundary regex over each paper's fields. Both run here, in the
same process, on the same papers; the script checks they pick the same (paper, topic)
pairs and prints the median of each, their ratio, and whether the targets are met
(>= 10x faster than naive, under 50 ms). Each timed run starts after a full collection
with the collector paused, as `timeit` does; the matcher is also timed with it running.
"""

from __future__ import annotations

import argparse
import gc
import random
import re
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from digest.config import TopicConfig  # noqa: E402
from digest.models import Paper  # noqa: E402
from digest.source.parse import parse_api  # noqa: E402
from digest.topics import Matcher, term_words  # noqa: E402

REAL = ROOT.parent / "shared" / "fixtures" / "real"
FIELDS = ("title", "abstract", "ai_keywords")  # the topics' default fields
_WORD = re.compile(r"[a-z][a-z0-9]{3,}")


def load_papers() -> list[Paper]:
    """The distinct papers of the real API captures, oldest capture first."""
    papers: dict[str, Paper] = {}
    for path in sorted(REAL.glob("api-daily_papers-*.json")):
        for p in parse_api(path.read_bytes(), str(path)).papers:
            papers.setdefault(p.id, p)
    return list(papers.values())


def make_topics(
    papers: list[Paper], n: int, seed: int = 7, max_share: float = 0.2
) -> list[TopicConfig]:
    """`n` topics of 5-20 terms built from the papers' own words, the same for a seed."""
    vocab: set[str] = set()
    phrases: set[str] = set()
    df: Counter[str] = Counter()  # in how many papers each word appears
    for p in papers:
        df.update(set(_WORD.findall(f"{p.title} {p.abstract}".lower())))
        vocab.update(w for w in _WORD.findall(p.title.lower()) if w.isascii())
        for kw in p.ai_keywords:
            vocab.update(w for w in _WORD.findall(kw.lower()) if w.isascii())
            parts = kw.split()
            if 2 <= len(parts) <= 3 and kw.isascii():
                phrases.add(kw.lower())
    # Nobody follows "that", "with" or "performance": leave out words found in more than
    # a fifth of the papers (75 of them), or every paper would land in a third of the topics.
    generic = {w for w, c in df.items() if c > max_share * len(papers)}
    words, multi = sorted(vocab - generic), sorted(phrases)
    rng = random.Random(seed)
    topics = []
    for i in range(n):
        keywords: list[str] = []
        phrase_terms: list[str] = []
        for _ in range(rng.randint(5, 20)):
            roll = rng.random()
            if roll < 0.6:
                keywords.append(rng.choice(words))
            elif roll < 0.8:
                w = rng.choice(words)
                keywords.append(w[: max(4, len(w) - 3)] + "*")
            else:
                phrase_terms.append(rng.choice(multi))
        exclude = [rng.choice(words) for _ in range(rng.choice((0, 0, 1, 2)))]
        topics.append(
            TopicConfig(name=f"t{i}", keywords=keywords, phrases=phrase_terms, exclude=exclude)
        )
    return topics


# -- the naive loop ----------------------------------------------------------------------


def _regex(term: str) -> re.Pattern[str]:
    """A word-boundary regex for one term: words in a row, any separators but a newline."""
    tokens, prefix = term_words(term)
    body = r"(?:[^\w\n]|_)+".join(re.escape(t) for t in tokens)
    end = r"[^\W_]*" if prefix else r"(?![^\W_])"
    return re.compile(rf"(?<![^\W_]){body}{end}", re.IGNORECASE)


def naive_compile(topics: list[TopicConfig]) -> list[tuple[str, list, list]]:
    return [
        (
            t.name,
            [(s, _regex(s)) for s in [*t.keywords, *t.phrases]],
            [_regex(s) for s in t.exclude],
        )
        for t in topics
    ]


def naive_match(compiled: list[tuple[str, list, list]], papers: list[Paper]) -> set[tuple]:
    out = set()
    for p in papers:
        # One line per field part, so no phrase spans a title and an abstract, or two
        # AI keywords (the regexes never cross a newline).
        text = "\n".join([p.title, p.abstract, *p.ai_keywords])
        for name, terms, excludes in compiled:
            hits = [s for s, rx in terms if rx.search(text)]
            if hits and not any(rx.search(text) for rx in excludes):
                out.add((p.id, name))
    return out


def fast_match(matcher: Matcher, papers: list[Paper]) -> set[tuple]:
    return {(p.id, m.topic) for p in papers for m in matcher.match(p)}


def timed(fn, repeats: int, *, paused_gc: bool = True) -> tuple[float, object]:
    """Median time of `fn` and its last result. By default the garbage collector is
    paused while `fn` runs (and run in between), as `timeit` does: otherwise whether a
    full collection over this process's heap (the papers, both compiled topic sets)
    lands inside a run adds 10-15 ms of noise to a 45 ms figure."""
    times = []
    result = None
    for _ in range(repeats):
        gc.collect()
        if paused_gc:
            gc.disable()
        try:
            t0 = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - t0)
        finally:
            gc.enable()
    return statistics.median(times), result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--topics", type=int, default=1000)
    ap.add_argument("--papers", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--naive-repeats", type=int, default=3)
    ap.add_argument(
        "--max-share",
        type=float,
        default=0.2,
        help="Leave out words found in more than this share of papers (1 keeps them all).",
    )
    args = ap.parse_args()

    everything = load_papers()
    if len(everything) < args.papers:
        raise SystemExit(f"only {len(everything)} papers in {REAL}, asked for {args.papers}")
    # The newest papers: they carry AI keywords, as today's lists do.
    papers = everything[-args.papers :]
    topics = make_topics(everything, args.topics, max_share=args.max_share)
    n_terms = sum(len(t.keywords) + len(t.phrases) + len(t.exclude) for t in topics)
    n_prefix = sum(k.endswith("*") for t in topics for k in t.keywords)
    n_phrases = sum(len(t.phrases) for t in topics)
    print(
        f"{len(topics)} topics, {n_terms} terms ({n_prefix} prefix, {n_phrases} phrases, "
        f"{sum(len(t.exclude) for t in topics)} exclusions) x {len(papers)} real papers"
    )

    t0 = time.perf_counter()
    matcher = Matcher(topics)
    compile_ms = (time.perf_counter() - t0) * 1000
    fast_s, fast = timed(lambda: fast_match(matcher, papers), args.repeats)
    fast_gc_s, _ = timed(lambda: fast_match(matcher, papers), args.repeats, paused_gc=False)

    t0 = time.perf_counter()
    compiled = naive_compile(topics)
    naive_compile_ms = (time.perf_counter() - t0) * 1000
    naive_s, naive = timed(lambda: naive_match(compiled, papers), args.naive_repeats)

    assert isinstance(fast, set) and isinstance(naive, set)
    same = fast == naive
    print(f"matches: {len(fast)} (paper, topic) pairs; naive loop agrees: {same}")
    if not same:
        print(f"  only one-pass: {sorted(fast - naive)[:10]}")
        print(f"  only naive:    {sorted(naive - fast)[:10]}")
    ratio = naive_s / fast_s
    print(
        f"one-pass matcher: compile {compile_ms:.1f} ms, match median {fast_s * 1000:.1f} ms "
        f"over {args.repeats} runs, collector paused ({fast_gc_s * 1000:.1f} ms with it running)"
    )
    print(
        f"naive loop:       compile {naive_compile_ms:.1f} ms, match median "
        f"{naive_s * 1000:.0f} ms over {args.naive_repeats} runs"
    )
    print(
        f"speed-up: {ratio:.0f}x  (target >= 10x: {'met' if ratio >= 10 else 'MISSED'}; "
        f"under 50 ms: {'met' if fast_s < 0.05 else 'MISSED'})"
    )
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
