"""Benchmark: the variants of like-topic scoring tried for issue 15, on the labelled set.

Run: .venv/bin/python bench/relevance_tried.py

What bench/relevance.py measures, for scorings the product does NOT use, so the next person
can see (and re-run) what was tried before trying it again. Same set, same seeds, same
evaluation days, same (a) keyword topics; for each variant, per interest and as a mean:
(b) P@10 of the like-topic's ranking, (c) P@10 of similarity + 0.1 when the keyword topic
matched (bench/relevance.py's (c)), and (c)'s precision at (a)'s recall over (a)'s
precision. The first row is the product's scoring and must agree with bench/relevance.py.

Every figure here was read on the evaluation days, so picking the best row would be tuning
on them: bench/README.md says which (if any) the product took, and why.

Variants:
  - vectors: sublinear tf (the product) against BM25 tf saturation (k1 1.2) or binary tf;
    idf smoothed +1 (the product) against plain, squared and BM25 idf; without word pairs;
    title counted once or three times; 128 or all terms kept a vector; min_df 3;
  - topic: centroid cut to 64 terms (the product), 128 or uncut; the mean of the top-k
    seeds' cosines (k = 1, 2, 3); the seeds plus the seed-day papers the keyword topic
    matches (so "(b)" there uses the keywords); the seeds plus the 5 or 20 papers of
    earlier days nearest the seeds (self-training, no keywords); the seeds plus the last
    10, 20 or 50 papers of earlier days that the keyword topic matched (online, so it is a
    way to combine (a) and (b), not a like-topic alone);
  - (c) fusion: bonus 0.05, 0.2, 1 (keyword matches first); reciprocal-rank fusion of (a)'s
    and (b)'s ranks (k 60 and 10); 0.05 a distinct matched term; similarity x2 if matched.
"""

from __future__ import annotations

import itertools
import math
import statistics
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from relevance import (  # noqa: E402
    SEED_DAYS_END,
    SEEDS,
    keyword_topics,
    load,
    load_labels,
    p_at,
    precision_at_recall,
)

from digest.models import Paper  # noqa: E402
from digest.relevance import STOP_WORDS  # noqa: E402
from digest.terms import words  # noqa: E402
from digest.topics import Matcher  # noqa: E402

Vec = dict[str, float]
Scores = dict[str, float]
KW = dict[str, tuple[int, int]]

PAPERS, DAY = load()
LABELS = load_labels()
TOPICS = keyword_topics()


def terms(paper: Paper, pairs: bool = True, title: int = 2) -> Counter[str]:
    """digest.relevance._terms with its choices as arguments."""
    counts: Counter[str] = Counter()

    def add(text: str, times: int) -> None:
        toks = [w for w in words(text) if w not in STOP_WORDS and not w.isdigit()]
        for _ in range(times):
            counts.update(toks)
            if pairs:
                counts.update(f"{a} {b}" for a, b in itertools.pairwise(toks))

    add(paper.title, title)
    add(paper.abstract, 1)
    for kw in paper.ai_keywords:
        add(kw, 1)
        phrase = " ".join(words(kw))
        if phrase.count(" ") >= 2:
            counts[phrase] += 1
    return counts


def vectors(
    tf: str = "log",
    idf: str = "smooth",
    max_terms: int = 64,
    min_df: int = 2,
    pairs: bool = True,
    title: int = 2,
) -> dict[str, Vec]:
    """Every paper's vector as Vocabulary.vector makes it, with its choices as arguments."""
    raw = {p.id: terms(p, pairs, title) for p in PAPERS}
    df: Counter[str] = Counter()
    for c in raw.values():
        df.update(c.keys())
    n_docs = len(PAPERS)
    out = {}
    for pid, c in raw.items():
        ws = []
        for t, n in c.items():
            d = df[t]
            if d < min_df:
                continue
            i = {
                "smooth": math.log((1 + n_docs) / (1 + d)) + 1,
                "plain": math.log((1 + n_docs) / (1 + d)),
                "squared": (math.log((1 + n_docs) / (1 + d)) + 1) ** 2,
                "bm25": math.log(1 + (n_docs - d + 0.5) / (d + 0.5)),
            }[idf]
            f = {"log": 1 + math.log(n), "bm25": n * 2.2 / (n + 1.2), "binary": 1.0}[tf]
            ws.append((t, f * i))
        ws.sort(key=lambda tw: -tw[1])
        ws = ws[:max_terms] if max_terms else ws
        norm = math.sqrt(sum(w * w for _, w in ws)) or 1.0
        out[pid] = {t: w / norm for t, w in ws}
    return out


def cos(a: Vec, b: Vec) -> float:
    if len(a) > len(b):
        a, b = b, a
    return sum(w * b.get(t, 0.0) for t, w in a.items())


def centroid(vs: list[Vec], cut: int = 64) -> Vec:
    acc: Counter[str] = Counter()
    for v in vs:
        for t, w in v.items():
            acc[t] += w
    top = dict(acc.most_common(cut)) if cut else dict(acc)
    norm = math.sqrt(sum(w * w for w in top.values())) or 1.0
    return {t: w / norm for t, w in top.items()}


class Case:
    """One interest: its seeds, evaluation papers, relevant ids, keyword matches."""

    def __init__(self, interest: str) -> None:
        relevant = LABELS[interest]
        self.seeds = [p for p in PAPERS if p.id in relevant][:SEEDS]
        start = max(max(DAY[p.id] for p in self.seeds), SEED_DAYS_END)
        self.evaluation = [p for p in PAPERS if DAY[p.id] > start]
        self.relevant = {p.id for p in self.evaluation if p.id in relevant}
        matcher = Matcher([TOPICS[interest]])
        matched = {p.id: matcher.match(p) for p in PAPERS}
        self.kw: KW = {
            p.id: (len(set(matched[p.id][0].terms)), p.upvotes)
            for p in self.evaluation
            if matched[p.id]
        }
        self.kw_papers = [p for p in PAPERS if matched[p.id] and p not in self.seeds]
        self.seed_day_kw = [p for p in self.kw_papers if DAY[p.id] <= start]


CASES = {i: Case(i) for i in TOPICS}
Scoring = Callable[[Case, dict[str, Vec]], Scores]
Fusion = Callable[[Scores, KW], Scores]


def by_centroid(cut: int = 64) -> Scoring:
    def f(case: Case, v: dict[str, Vec]) -> Scores:
        c = centroid([v[s.id] for s in case.seeds], cut)
        return {p.id: cos(v[p.id], c) for p in case.evaluation}

    return f


def by_top_seeds(k: int) -> Scoring:
    def f(case: Case, v: dict[str, Vec]) -> Scores:
        out = {}
        for p in case.evaluation:
            sims = sorted((cos(v[p.id], v[s.id]) for s in case.seeds), reverse=True)
            out[p.id] = sum(sims[:k]) / k
        return out

    return f


def with_seed_day_keyword_matches(case: Case, v: dict[str, Vec]) -> Scores:
    c = centroid([v[p.id] for p in case.seeds + case.seed_day_kw])
    return {p.id: cos(v[p.id], c) for p in case.evaluation}


def day_by_day(extra: Callable[[Case, dict[str, Vec], str], list[Paper]]) -> Scoring:
    """Each evaluation day scored by the centroid of the seeds and `extra` papers of
    earlier days (what a send on that day could know)."""

    def f(case: Case, v: dict[str, Vec]) -> Scores:
        out = {}
        for d in sorted({DAY[p.id] for p in case.evaluation}):
            c = centroid([v[p.id] for p in case.seeds + extra(case, v, d)])
            out.update({p.id: cos(v[p.id], c) for p in case.evaluation if DAY[p.id] == d})
        return out

    return f


def earlier_nearest(n: int) -> Scoring:
    def extra(case: Case, v: dict[str, Vec], d: str) -> list[Paper]:
        c = centroid([v[s.id] for s in case.seeds])
        prior = [p for p in PAPERS if DAY[p.id] < d and p not in case.seeds]
        return sorted(prior, key=lambda p: -cos(v[p.id], c))[:n]

    return day_by_day(extra)


def earlier_keyword_matches(n: int) -> Scoring:
    def extra(case: Case, v: dict[str, Vec], d: str) -> list[Paper]:
        return [p for p in case.kw_papers if DAY[p.id] < d][-n:]

    return day_by_day(extra)


def bonus(b: float = 0.1) -> Fusion:
    return lambda sim, kw: {i: s + (b if i in kw else 0.0) for i, s in sim.items()}


def rrf(k: int) -> Fusion:
    def f(sim: Scores, kw: KW) -> Scores:
        ra = {i: r for r, i in enumerate(sorted(kw, key=lambda i: kw[i], reverse=True), 1)}
        rb = {i: r for r, i in enumerate(sorted(sim, key=lambda i: sim[i], reverse=True), 1)}
        return {i: 1 / (k + rb[i]) + (1 / (k + ra[i]) if i in ra else 0.0) for i in sim}

    return f


def evaluate(name: str, v: dict[str, Vec], scoring: Scoring, fusion: Fusion) -> None:
    rows = []
    for case in CASES.values():
        rel, kw = case.relevant, case.kw
        a_rank = sorted(kw, key=lambda i: kw[i], reverse=True)
        a_found = sum(1 for i in kw if i in rel)
        sim = scoring(case, v)
        c = fusion(sim, kw)
        b_rank = sorted(sim, key=lambda i: sim[i], reverse=True)
        c_rank = sorted(c, key=lambda i: c[i], reverse=True)
        c_at, _ = precision_at_recall(c_rank, rel, a_found)
        rows.append(
            (p_at(a_rank, rel), p_at(b_rank, rel), p_at(c_rank, rel), a_found / len(kw), c_at)
        )
    _a, b, c, a_prec, c_at = (statistics.mean(r[k] for r in rows) for k in range(5))
    per = " | ".join(f"{r[1]:.1f} / {r[2]:.1f} / {r[4] / r[3]:.2f}x" for r in rows)
    print(f"| {name} | {b:.2f} | {c:.2f} | {c_at / a_prec:.2f}x | {per} |")


def main() -> None:
    print("| variant | (b) P@10 | (c) P@10 | (c)/(a) at (a)'s recall | " + " | ".join(CASES) + " |")
    print("| --- " * (4 + len(CASES)) + "|")
    base = vectors()
    product = by_centroid()
    plus = bonus()
    evaluate("the product: centroid of 64 terms, (c) bonus 0.1", base, product, plus)
    for name, kwargs in [
        ("tf BM25 (k1 1.2)", {"tf": "bm25"}),
        ("tf binary", {"tf": "binary"}),
        ("idf plain", {"idf": "plain"}),
        ("idf squared", {"idf": "squared"}),
        ("idf BM25", {"idf": "bm25"}),
        ("tf and idf BM25", {"tf": "bm25", "idf": "bm25"}),
        ("no word pairs", {"pairs": False}),
        ("title x1", {"title": 1}),
        ("title x3", {"title": 3}),
        ("vectors of 128 terms", {"max_terms": 128}),
        ("vectors uncut", {"max_terms": 0}),
        ("min_df 3", {"min_df": 3}),
    ]:
        evaluate(name, vectors(**kwargs), product, plus)  # type: ignore[arg-type]
    for name, scoring in [
        ("centroid of 128 terms", by_centroid(128)),
        ("centroid uncut", by_centroid(0)),
        ("nearest seed", by_top_seeds(1)),
        ("mean of the 2 nearest seeds", by_top_seeds(2)),
        ("mean of the 3 nearest seeds", by_top_seeds(3)),
        ("+ seed-day keyword matches as seeds", with_seed_day_keyword_matches),
        ("+ 5 nearest papers of earlier days", earlier_nearest(5)),
        ("+ 20 nearest papers of earlier days", earlier_nearest(20)),
        ("+ last 10 keyword matches of earlier days", earlier_keyword_matches(10)),
        ("+ last 20 keyword matches of earlier days", earlier_keyword_matches(20)),
        ("+ last 50 keyword matches of earlier days", earlier_keyword_matches(50)),
    ]:
        evaluate(name, base, scoring, plus)
    for name, fusion in [
        ("(c) bonus 0.05", bonus(0.05)),
        ("(c) bonus 0.2", bonus(0.2)),
        ("(c) keyword matches first", bonus(1.0)),
        ("(c) reciprocal-rank fusion, k 60", rrf(60)),
        ("(c) reciprocal-rank fusion, k 10", rrf(10)),
        (
            "(c) 0.05 a distinct matched term",
            lambda sim, kw: {i: s + (0.05 * kw[i][0] if i in kw else 0.0) for i, s in sim.items()},
        ),
        (
            "(c) similarity x2 if matched",
            lambda sim, kw: {i: s * (2 if i in kw else 1) for i, s in sim.items()},
        ),
    ]:
        evaluate(name, base, product, fusion)


if __name__ == "__main__":
    main()
