"""Relevance beyond keywords: paper vectors, "more like these" similarity, a learned reader model.

Pure and offline: plain data in, plain data out, no network, no SQL, no new dependency.

- A `Vocabulary` is built from a corpus of papers (the archive): the document frequency of
  each term over title + abstract + AI keywords. It turns a paper into a `Vector`: sublinear
  tf-idf of its words and adjacent word pairs (title counted twice, AI keywords once more as
  whole phrases), stop words dropped, L2-normalised, and cut to its `MAX_TERMS` heaviest
  terms so vectors stay small (a few hundred bytes) and the index stays sparse. Words are
  normalised by `digest.terms.words`, as the keyword matcher does. A term the vocabulary has
  never seen is dropped until the vocabulary is rebuilt (a job, after backfill), so vectors
  of one vocabulary are comparable and never depend on the day they were made.
- `Vector.to_bytes` / `Vector.from_bytes` give a compact form to keep beside the paper in
  SQLite (little-endian uint32 term ids, float32 weights).
- A `LikeTopic` names seed papers. `SimilarityIndex` compiles every like-topic's centroid
  (the mean of its seeds' vectors) into one inverted index (term -> topics), so scoring a
  new paper costs its terms' postings, not topics x seeds. A paper is kept by a topic when
  its cosine similarity to the centroid reaches `min_similarity`; the `Likeness` also names
  the nearest seed and how like it the paper is (the "why").
- `learn` fits a reader's linear model (L2-regularised logistic regression by SGD, as
  arxiv-sanity-lite fits a linear SVM per user) from "more / fewer like this" choices over
  the same vectors; `rerank` orders a reader's papers by it; `ReaderModel.to_bytes` keeps
  it, so a send re-learns only the readers who chose since. No choices: no model, and
  `rerank` keeps the given order (the reader gets today's ranking).

Why a small tf-idf in the standard library (measured, bench/README.md): the container image
is 220 MB of a 300 MB budget, and scikit-learn with numpy and scipy installs about 270 MB
(numpy alone 73 MB); SQLite FTS5 bm25 ranked no better on tests/data/relevance (P@10 0.68
against 0.70) and would put SQL between a paper and its why. No model weights to fetch.
"""

from __future__ import annotations

import collections
import itertools
import json
import math
import struct
from array import array
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import compress, repeat
from operator import eq, ge, itemgetter, mul
from typing import NamedTuple, TypeVar

from digest.config import TopicConfig
from digest.models import Paper, TopicMatch
from digest.terms import words

MAX_TERMS = 64  # heaviest terms kept per vector: enough for an abstract's topic words
TITLE_WEIGHT = 2  # a title word counts as two abstract words
_FORMAT = 1  # first byte of Vector.to_bytes, so a later layout can be told apart

# Words too common in any English abstract to say what a paper is about; idf pushes down
# the field's own common words ("model", "language") by itself.
STOP_WORDS = frozenset(
    """a about above across after again against all almost also although among an and another
    any are as at be because been before being between both but by can could did do
    does doing done due during each either enable enables etc even ever every few for
    from further furthermore given has have having here however i if in into is it its
    itself just less like many may more moreover most much must new no nor not novel
    of off often on once one only or other others our ours out over own paper per
    propose proposed proposes rather same several should show shows significantly
    since so some such than that the their them then there these they this those
    through thus to too two under up upon us use used uses using various very via was
    we well were what when where whether which while who whose why will with within
    without work would yet you your""".split()  # noqa: SIM905
)

T = TypeVar("T")


def _terms(paper: Paper) -> Counter[str]:
    """Raw term counts of a paper: words and adjacent pairs, title twice, keywords as phrases."""
    counts: Counter[str] = Counter()

    def add(text: str, times: int) -> None:
        toks = [w for w in words(text) if w not in STOP_WORDS and not w.isdigit()]
        for _ in range(times):
            counts.update(toks)
            counts.update(f"{a} {b}" for a, b in itertools.pairwise(toks))

    add(paper.title, TITLE_WEIGHT)
    add(paper.abstract, 1)
    for kw in paper.ai_keywords:
        add(kw, 1)
        phrase = " ".join(words(kw))
        if phrase.count(" ") >= 2:  # 3+ words: the pairs miss the whole
            counts[phrase] += 1
    return counts


@dataclass(frozen=True)
class Vector:
    """A paper's L2-normalised tf-idf vector: term ids ascending, with their weights."""

    ids: tuple[int, ...] = ()
    weights: tuple[float, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.ids)

    def as_dict(self) -> dict[int, float]:
        """Return term id -> weight."""
        return dict(zip(self.ids, self.weights, strict=True))

    def to_bytes(self) -> bytes:
        """Return the stored form: a format byte, a count, uint32 ids, float32 weights."""
        ids = array("I", self.ids)
        ws = array("f", self.weights)
        if struct.pack("=I", 1) != struct.pack("<I", 1):  # stored little-endian everywhere
            ids.byteswap()
            ws.byteswap()
        return struct.pack("<BI", _FORMAT, len(ids)) + ids.tobytes() + ws.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> Vector:
        """Return the vector `to_bytes` made. Raises ValueError for bytes of another shape."""
        ids, ws = _arrays(data)
        return cls(tuple(ids), tuple(ws))


def _arrays(data: bytes, at: int = 0) -> tuple[array[int], array[float]]:
    """Return the ids and weights of the vector `Vector.to_bytes` made, from data[at:]."""
    if len(data) < at + 5 or data[at] != _FORMAT:
        found = data[at : at + 1]
        raise ValueError(f"not a relevance vector (format byte {found!r}, want {_FORMAT})")
    (n,) = struct.unpack_from("<I", data, at + 1)
    start = at + 5
    if len(data) != start + 8 * n:
        raise ValueError(
            f"relevance vector of {n} terms needs {5 + 8 * n} bytes, got {len(data) - at}"
        )
    ids = array("I")
    ids.frombytes(data[start : start + 4 * n])
    ws = array("f")
    ws.frombytes(data[start + 4 * n :])
    if struct.pack("=I", 1) != struct.pack("<I", 1):
        ids.byteswap()
        ws.byteswap()
    return ids, ws


def similarity(a: Vector, b: Vector) -> float:
    """Return the cosine similarity of two vectors of one vocabulary (0 when either is empty)."""
    small, big = (a, b) if len(a.ids) <= len(b.ids) else (b, a)
    other = big.as_dict()
    return sum(w * other.get(t, 0.0) for t, w in zip(small.ids, small.weights, strict=True))


class Vocabulary:
    """Terms and their document frequencies over a corpus; turns papers into vectors."""

    def __init__(self, terms: Sequence[str], df: Sequence[int], documents: int) -> None:
        if len(terms) != len(df):
            raise ValueError(f"vocabulary: {len(terms)} terms but {len(df)} frequencies")
        self.terms = list(terms)
        self.documents = documents
        self._ids = {t: i for i, t in enumerate(self.terms)}
        # Smoothed idf, as scikit-learn's TfidfVectorizer(smooth_idf=True) computes it.
        self._idf = [math.log((1 + documents) / (1 + d)) + 1.0 for d in df]
        self._df = list(df)

    @classmethod
    def build(cls, papers: Iterable[Paper], *, min_df: int = 2) -> Vocabulary:
        """Return the vocabulary of `papers`: terms found in at least `min_df` of them.

        A term seen in one paper only cannot make two papers alike, so min_df=2 drops it.
        """
        if min_df < 1:
            raise ValueError(f"vocabulary: min_df must be at least 1, got {min_df}")
        df: Counter[str] = Counter()
        n = 0
        for p in papers:
            n += 1
            df.update(_terms(p).keys())
        kept = sorted(t for t, d in df.items() if d >= min_df)
        return cls(kept, [df[t] for t in kept], n)

    def __len__(self) -> int:
        return len(self.terms)

    def vector(self, paper: Paper) -> Vector:
        """Return the paper's vector (empty when none of its terms is in the vocabulary)."""
        ids, idf = self._ids, self._idf
        weighted = [
            (i, (1.0 + math.log(c)) * idf[i])
            for t, c in _terms(paper).items()
            if (i := ids.get(t)) is not None
        ]
        if not weighted:
            return Vector()
        weighted.sort(key=lambda iw: -iw[1])
        top = sorted(weighted[:MAX_TERMS])
        norm = math.sqrt(sum(w * w for _, w in top))
        # Rounded to float32 now, so the stored form gives back exactly this vector.
        weights = array("f", (w / norm for _, w in top)).tolist()
        return Vector(tuple(i for i, _ in top), tuple(weights))

    def term(self, term_id: int) -> str:
        """Return the text of a term id (for a "why" that shows the shared words)."""
        return self.terms[term_id]

    def to_bytes(self) -> bytes:
        """Return the vocabulary as UTF-8 JSON, to keep beside the vectors it made."""
        doc = {"format": _FORMAT, "documents": self.documents, "terms": self.terms}
        doc["df"] = self._df
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> Vocabulary:
        """Return the vocabulary `to_bytes` made. Raises ValueError for anything else."""
        try:
            doc = json.loads(data.decode("utf-8"))
            if doc.get("format") != _FORMAT:
                raise ValueError(f"format {doc.get('format')!r}, want {_FORMAT}")
            return cls(doc["terms"], doc["df"], int(doc["documents"]))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"not a relevance vocabulary: {e}") from e


@dataclass(frozen=True)
class Seed:
    """One paper a like-topic is like: its id, title (for the why) and vector."""

    id: str
    title: str
    vector: Vector


# The best F1 on the seed days of tests/data/relevance (bench/README.md).
DEFAULT_MIN_SIMILARITY = 0.08


@dataclass(frozen=True)
class LikeTopic:
    """A topic defined by seed papers: keeps papers at least `min_similarity` like one."""

    name: str
    seeds: tuple[Seed, ...]
    min_similarity: float = DEFAULT_MIN_SIMILARITY


class Likeness(NamedTuple):
    """Why a paper is in a like-topic: how like the seeds it is, and its nearest seed.

    `similarity` (cosine to the seeds' centroid) is what `min_similarity` is compared with
    and what ranks papers; `seed_similarity` (cosine to the nearest seed) is what the reader
    is shown beside that seed's title. A named tuple, not a dataclass: a send makes one per
    kept (paper, topic) pair, and a tuple is several times cheaper to make.
    """

    similarity: float
    topic: str
    seed_id: str
    seed_title: str
    seed_similarity: float

    def describe(self, title_chars: int = 40) -> str:
        """Return the why as a reader sees it: `like "Llama 3 Herd" 0.42`."""
        title = self.seed_title
        if len(title) > title_chars:
            title = title[: title_chars - 1].rstrip() + "…"
        return f'like "{title}" {self.seed_similarity:.2f}'


CENTROID_TERMS = 64  # heaviest terms of a centroid kept in the index (128: 2x the work, P@10 +0.02)


def centroid(vectors: Iterable[Vector], terms: int | None = None) -> Vector:
    """Return the L2-normalised mean of `vectors`, cut to its `terms` heaviest terms.

    Its cosine with a paper ranks papers as the mean of their similarities to each seed
    does (measured on tests/data/relevance: P@10 0.72 against 0.54 for the nearest seed
    alone): a topic is what its seeds share, not any one of them.
    """
    acc: dict[int, float] = {}
    for v in vectors:
        for t, w in zip(v.ids, v.weights, strict=True):
            acc[t] = acc.get(t, 0.0) + w
    top = sorted(sorted(acc.items(), key=lambda tw: -tw[1])[: terms or CENTROID_TERMS])
    norm = math.sqrt(sum(w * w for _, w in top))
    if not norm:
        return Vector()
    return Vector(tuple(t for t, _ in top), tuple(w / norm for _, w in top))


_Postings = dict[int, tuple[list[int], list[float]]]


def _split(postings: dict[int, list[tuple[int, float]]]) -> _Postings:
    """Return term -> (indexes, weights) from term -> [(index, weight)]."""
    return {t: ([i for i, _ in ps], [w for _, w in ps]) for t, ps in postings.items()}


def _scatter(postings: _Postings, vector: Vector, n: int) -> list[float]:
    """Return the dot product of `vector` with each of the `n` indexed vectors."""
    acc = [0.0] * n  # a list, not a dict: the hot loop is this add
    get = postings.get
    for t, w in zip(vector.ids, vector.weights):  # noqa: B905 (one vector's two halves)
        p = get(t)
        if p is not None:
            idx, ws = p
            for i, x in zip(idx, ws):  # noqa: B905 (built together by _split)
                acc[i] += w * x
    return acc


class SimilarityIndex:
    """Every like-topic's centroid compiled once into one inverted index (term -> topics).

    Scoring a paper walks its terms' postings, so its cost grows with the topics that share
    its words, not with topics x seeds; the nearest seed (the why) is looked up only for
    the topics that keep the paper.
    """

    def __init__(self, topics: Sequence[LikeTopic]) -> None:
        self.topics = list(topics)
        postings: dict[int, list[tuple[int, float]]] = {}
        # The seeds too, once each, for the why: which seed a kept paper is most like.
        seen: dict[tuple[str, tuple[int, ...]], int] = {}
        self._seeds: list[Seed] = []
        self._seeds_of: list[list[int]] = []  # topic -> its seeds' indexes
        seed_postings: dict[int, list[tuple[int, float]]] = {}
        for ti, topic in enumerate(self.topics):
            if not 0.0 <= topic.min_similarity <= 1.0:
                raise ValueError(
                    f"like-topic {topic.name!r}: min_similarity {topic.min_similarity} "
                    "is not between 0 and 1"
                )
            c = centroid(seed.vector for seed in topic.seeds)
            for t, w in zip(c.ids, c.weights, strict=True):
                postings.setdefault(t, []).append((ti, w))
            seed_ids: list[int] = []
            for seed in topic.seeds:
                key = (seed.id, seed.vector.ids)
                si = seen.get(key)
                if si is None:  # a paper seeding many topics is scored once per paper
                    si = seen[key] = len(self._seeds)
                    self._seeds.append(seed)
                    for t, w in zip(seed.vector.ids, seed.vector.weights, strict=True):
                        seed_postings.setdefault(t, []).append((si, w))
                seed_ids.append(si)
            self._seeds_of.append(seed_ids)
        # Each posting list as two parallel lists (topic indexes, weights): zip over two
        # lists is the cheapest inner loop CPython has for this scatter-add (bench/README.md).
        self._postings = _split(postings)
        self._seed_postings = _split(seed_postings)
        self._min = [t.min_similarity for t in self.topics]
        self._one_min = self._min[0] if len(set(self._min)) == 1 else None
        self._range = range(len(self.topics))
        self._names = [t.name for t in self.topics]
        self._why = [(seed.id, seed.title) for seed in self._seeds]

    def _scores(self, vector: Vector) -> list[float]:
        """Cosine of `vector` with every topic's centroid, by topic index."""
        return _scatter(self._postings, vector, len(self.topics))

    def scores(self, vector: Vector) -> dict[int, float]:
        """Return topic index -> cosine of `vector` with the topic's centroid (when > 0)."""
        return {ti: s for ti, s in enumerate(self._scores(vector)) if s > 0.0}

    def _seed_scores(self, vector: Vector) -> list[float]:
        """Cosine of `vector` with every distinct seed, by seed index."""
        return _scatter(self._seed_postings, vector, len(self._seeds))

    def _likeness(self, ti: int, score: float, seeds: list[float]) -> Likeness:
        best = max(self._seeds_of[ti], key=seeds.__getitem__)
        seed = self._seeds[best]
        return Likeness(
            round(score, 4), self.topics[ti].name, seed.id, seed.title, round(seeds[best], 4)
        )

    def best(self, vector: Vector, *, floor: float = 0.0) -> dict[str, Likeness]:
        """Return, per topic scoring above `floor`, how like its seeds `vector` is
        (whatever the topic's min_similarity: for ranking and for tuning the threshold)."""
        kept = [(ti, s) for ti, s in self.scores(vector).items() if s > floor]
        if not kept:
            return {}
        seeds = self._seed_scores(vector)
        return {self.topics[ti].name: self._likeness(ti, s, seeds) for ti, s in kept}

    def _kept(self, vector: Vector) -> list[tuple[int, float]]:
        acc = self._scores(vector)
        if self._one_min is not None:  # the usual case: one threshold, a scan in C
            m = max(self._one_min, 1e-12)
            return [(ti, acc[ti]) for ti in compress(self._range, map(ge, acc, repeat(m)))]
        mins = self._min
        return [(ti, s) for ti, s in enumerate(acc) if s >= mins[ti] and s > 0.0]

    def keep(self, vector: Vector) -> list[tuple[str, float]]:
        """Return (topic, similarity) for the topics keeping a paper, best first, without the
        why: what a send needs to pick papers, before it shows any."""
        names = self._names
        out = [(names[ti], round(s, 4)) for ti, s in self._kept(vector)]
        out.sort(key=itemgetter(0))
        out.sort(key=itemgetter(1), reverse=True)
        return out

    def match(self, vector: Vector) -> list[Likeness]:
        """Return the topics keeping a paper (similarity >= min_similarity), best first,
        each with its why (the nearest seed)."""
        kept = self._kept(vector)
        if not kept:
            return []
        seeds = self._seed_scores(vector)  # only now: most papers are kept by few topics
        at = seeds.__getitem__
        names, seeds_of, why = self._names, self._seeds_of, self._why
        hits = []
        for ti, s in kept:
            best = max(seeds_of[ti], key=at)
            sid, title = why[best]
            hits.append(Likeness(round(s, 4), names[ti], sid, title, round(at(best), 4)))
        # Best first, ties by name: two stable sorts with keys in C, not one lambda a hit.
        hits.sort(key=itemgetter(1))
        hits.sort(key=itemgetter(0), reverse=True)
        return hits


def like_topic(
    name: str,
    seeds: Iterable[tuple[Paper, Vector]],
    min_similarity: float = DEFAULT_MIN_SIMILARITY,
) -> LikeTopic:
    """Return a like-topic from seed papers and their vectors (the papers' titles name them).

    Raises ValueError when no seed has a vector: such a topic could never keep a paper.
    """
    kept = tuple(Seed(p.id, p.title, v) for p, v in seeds if v)
    if not kept:
        raise ValueError(f"like-topic {name!r}: none of its seed papers has a vector")
    return LikeTopic(name, kept, min_similarity)


def like_topics(
    topics: Sequence[TopicConfig], seeds: Mapping[str, tuple[Paper, Vector]]
) -> list[LikeTopic]:
    """Return the like-topics of the config's topics that name seeds, from the seeds'
    papers and vectors (paper id -> both). A seed missing from `seeds` (never fetched,
    see `digest topics like`) is left out; a topic none of whose seeds is there is left
    out too (it keeps no paper until one is fetched; `digest check` says so)."""
    out: list[LikeTopic] = []
    for topic in topics:
        found = [seeds[s] for s in topic.like if s in seeds and seeds[s][1]]
        if found:
            out.append(like_topic(topic.name, found, topic.min_similarity))
    return out


def like_matches(
    index: SimilarityIndex,
    papers: Iterable[Paper],
    vectors: Mapping[str, Vector],
    topics: Sequence[TopicConfig],
) -> dict[str, list[TopicMatch]]:
    """Return paper id -> the like-topics keeping it, as TopicMatch whose one term is the
    why (`like "Llama 3 Herd" 0.42`), best first. A topic's has_code, min_upvotes and
    min_stars filter its like-matches as they filter its keyword matches (its `exclude`
    terms are the keyword matcher's and veto keyword hits only)."""
    filters = {t.name: (t.has_code, t.min_upvotes, t.min_stars) for t in topics}
    seeds = {t.name: set(t.like) for t in topics}
    out: dict[str, list[TopicMatch]] = {}
    if not index.topics:
        return out
    for paper in papers:
        vector = vectors.get(paper.id)
        if not vector:
            continue
        found = []
        for lk in index.match(vector):
            if paper.id in seeds.get(lk.topic, ()):
                continue  # a seed is a paper the reader has already: not news to them
            has_code, min_upvotes, min_stars = filters.get(lk.topic, (False, 0, 0))
            if has_code and not paper.github_repo:
                continue
            if paper.upvotes < min_upvotes or (paper.github_stars or 0) < min_stars:
                continue
            found.append(TopicMatch(lk.topic, (lk.describe(),)))
        if found:
            out[paper.id] = found
    return out


def merge_matches(keyword: list[TopicMatch], liked: list[TopicMatch] | None) -> list[TopicMatch]:
    """Return a paper's keyword matches with its like-matches added: a topic both take
    keeps its terms and gains the why, so each topic is in the list once."""
    if not liked:
        return keyword
    out = list(keyword)
    where = {m.topic: i for i, m in enumerate(out)}
    for m in liked:
        i = where.get(m.topic)
        if i is None:
            where[m.topic] = len(out)
            out.append(m)
        else:
            out[i] = TopicMatch(m.topic, out[i].terms + m.terms)
    return out


# --- the reader's learned model -------------------------------------------------------


@dataclass(frozen=True)
class Choice:
    """One "more like this" (more=True) or "fewer like this" (more=False) on a paper."""

    vector: Vector
    more: bool


_END = 0xFFFFFFFF  # past every term id: the sentinel that ends a packed model's ids


class _Packed(Mapping[int, float]):
    """A stored model's weights as they are stored: term ids ascending and their float32
    weights, in two arrays, looked up by bisection.

    A send reads one model per choosing reader, each of some thousands of terms (the 200
    background papers' words); as a dict of Python ints and floats that is about 650 KB a
    reader, 8.5 GB for 10,000, and the send spent its time in the allocator. Packed it is
    the stored size (8 bytes a term), and scoring a paper is one bisection a term, in C.
    """

    __slots__ = ("_ids", "_ws")

    def __init__(self, ids: array[int], ws: array[float]) -> None:
        ids.append(_END)  # so a bisection never runs off the end
        ws.append(0.0)
        self._ids = ids
        self._ws = ws

    def dot(self, vector: Vector) -> float:
        """Return the dot product with a vector (ids ascending, none of them _END)."""
        ids = self._ids
        at = list(map(bisect_left, repeat(ids), vector.ids))
        found = map(eq, map(ids.__getitem__, at), vector.ids)  # True/False: times 1 or 0
        return sum(map(mul, map(mul, vector.weights, map(self._ws.__getitem__, at)), found))

    def __getitem__(self, term: int) -> float:
        i = bisect_left(self._ids, term)
        if term == _END or self._ids[i] != term:
            raise KeyError(term)
        return self._ws[i]

    def __iter__(self) -> Iterator[int]:
        return iter(self._ids[:-1])

    @property
    def term_ids(self) -> array[int]:
        """The term ids, ascending (without the sentinel)."""
        return self._ids[:-1]

    @property
    def term_weights(self) -> array[float]:
        """The weights, in the order of `term_ids`."""
        return self._ws[:-1]

    def __len__(self) -> int:
        return len(self._ids) - 1


class _Dense(Mapping[int, float]):
    """A model's weights over one send's terms, by their position in SendTerms' numbering
    (0 for a term the model has no weight for): a score is one pass in C."""

    __slots__ = ("_ws",)

    def __init__(self, ws: array[float]) -> None:
        self._ws = ws

    def dot(self, vector: Vector) -> float:
        """Return the dot product with a vector of SendTerms.vectors."""
        return sum(map(mul, vector.weights, map(self._ws.__getitem__, vector.ids)))

    def __getitem__(self, position: int) -> float:
        if not 0 <= position < len(self._ws):
            raise KeyError(position)
        return self._ws[position]

    def __iter__(self) -> Iterator[int]:
        return iter(range(len(self._ws)))

    def __len__(self) -> int:
        return len(self._ws)


class SendTerms:
    """The terms of one send's papers, numbered 0..n-1, and the papers' vectors in that
    numbering (`vectors`): a reader's model over them (`model`) is a dense array of n
    float32, and scoring a paper is a lookup by position, in C.

    A send holds one model per reader who chose, for the whole send: a model as stored
    has a weight for every word of the reader's choices and background papers (some
    thousands, looked up by bisection), and the send's papers use a few hundred of them
    (bench/README.md).
    """

    def __init__(self, vectors: Mapping[str, Vector]) -> None:
        terms = sorted({t for v in vectors.values() for t in v.ids})
        self._position = {t: i for i, t in enumerate(terms)}
        at = self._position.__getitem__
        self.vectors = {pid: Vector(tuple(map(at, v.ids)), v.weights) for pid, v in vectors.items()}

    def __len__(self) -> int:
        return len(self._position)

    def model(self, model: ReaderModel) -> ReaderModel:
        """Return `model` over these terms: for each paper, the score of its vector in
        `vectors` is the score `model` gives its stored vector (weights as float32, as a
        model read back has them). Raises TypeError for a model over a send's terms."""
        w = model.weights
        if isinstance(w, _Packed):
            ids: Sequence[int] = w.term_ids
            weights: Sequence[float] = w.term_weights
        elif isinstance(w, _Dense):
            raise TypeError("this model is over one send's terms already")
        else:
            ids, weights = list(w), list(w.values())
        position = self._position
        keep = list(map(position.__contains__, ids))
        dense = array("f", bytes(4 * len(position)))
        # A scatter in C: dense[position[t]] = w for each term of the send.
        places = map(position.__getitem__, compress(ids, keep))
        collections.deque(map(dense.__setitem__, places, compress(weights, keep)), maxlen=0)
        return ReaderModel(_Dense(dense), model.bias)


@dataclass(frozen=True)
class ReaderModel:
    """A linear model over paper vectors: score = w . x + bias (higher = more wanted)."""

    weights: Mapping[int, float]  # a dict when learned, packed when read back
    bias: float = 0.0

    def score(self, vector: Vector) -> float:
        """Return the model's score of a paper's vector."""
        w = self.weights
        if isinstance(w, _Dense):  # a send's model and a vector of SendTerms.vectors
            return self.bias + w.dot(vector)
        if isinstance(w, _Packed):
            return self.bias + w.dot(vector)
        # map() in C, not a generator: a send scores every candidate paper of every
        # reader who has a model.
        return self.bias + sum(map(mul, vector.weights, map(w.get, vector.ids, _ZEROS)))

    def to_bytes(self) -> bytes:
        """Return the stored form: the bias as a float64, then the weights as a Vector's.
        Raises TypeError for a model over one send's numbering (SendTerms.model)."""
        if isinstance(self.weights, _Dense):
            raise TypeError("a model over one send's terms is not stored")
        ids = sorted(self.weights)
        return (
            struct.pack("<d", self.bias)
            + Vector(tuple(ids), tuple(self.weights[t] for t in ids)).to_bytes()
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> ReaderModel:
        """Return the model `to_bytes` made (weights as float32). Raises ValueError."""
        if len(data) < 8:
            raise ValueError(f"not a reader model ({len(data)} bytes)")
        (bias,) = struct.unpack_from("<d", data)
        # Kept packed, with no Vector or dict between: a send reads one model per choosing
        # reader, of some thousands of terms each (bench/README.md).
        return cls(_Packed(*_arrays(data, 8)), bias)


_ZEROS = itertools.repeat(0.0)  # dict.get's default for every term: map stops at the ids
BACKGROUND_WEIGHT = 0.3  # an unchosen paper is weak evidence of "not this", a click strong


def learn(
    choices: Sequence[Choice],
    background: Sequence[Vector] = (),
    *,
    epochs: int = 3,  # 3 and 5 rank the labelled set alike (bench/README.md); 3 is cheaper
    rate: float = 1.0,
    l2: float = 0.01,
) -> ReaderModel | None:
    """Return a reader's model learned from their choices, or None when they made none.

    Logistic regression by stochastic gradient descent with L2 shrinkage, sparse over the
    vectors' terms. "more" is the positive class, "fewer" the negative one, and
    `background` (papers the reader was shown and did not choose) are negatives of weight
    BACKGROUND_WEIGHT, as arxiv-sanity-lite takes every untagged paper as a negative: with
    only "more" clicks the model must still learn what the reader is not after.
    Deterministic: the same choices give the same model.
    """
    if not choices:
        return None
    examples = [
        (c.vector.ids, c.vector.weights, 1.0 if c.more else 0.0, 1.0) for c in choices if c.vector
    ]
    # The model's words are those of the papers the reader chose: a background paper
    # counts on those only ("how common are these words in papers I left alone"). Its
    # other words would add thousands of small weights that every send reads back for each
    # reader, and rank the labelled set no better (bench/README.md).
    chosen = {t for ids, _, _, _ in examples for t in ids}
    for unchosen in background:
        kept = [(t, x) for t, x in zip(unchosen.ids, unchosen.weights, strict=True) if t in chosen]
        if kept:
            examples.append(
                (tuple(t for t, _ in kept), tuple(x for _, x in kept), 0.0, BACKGROUND_WEIGHT)
            )
    if not examples:
        return None
    # A dense list over the term ids in play: indexing a list is the cheapest step Python
    # has, and this loop is all of a reader's cost at send time.
    w = [0.0] * (1 + max(max(ids) for ids, _, _, _ in examples))
    scale = 1.0  # the true weights are scale * w: L2 shrinkage without touching every term
    bias = 0.0
    shrink = 1.0 - rate * l2
    for _ in range(epochs):
        for ids, xs, y, c in examples:
            z = bias + scale * sum([v * w[t] for t, v in zip(ids, xs, strict=False)])
            p = 1.0 / (1.0 + math.exp(-z)) if z > -30 else 0.0
            g = (p - y) * c * rate
            scale *= shrink
            step = g / scale
            for t, v in zip(ids, xs, strict=False):
                w[t] -= step * v
            bias -= g * 0.1  # a slow bias: the classes are unbalanced by design
    touched = {t for ids, _, _, _ in examples for t in ids}
    return ReaderModel({t: w[t] * scale for t in sorted(touched) if w[t]}, bias)


def rerank(
    items: Sequence[tuple[T, Vector]], model: ReaderModel | None, *, weight: float = 2.0
) -> list[T]:
    """Return the items ordered by the reader's model blended with the order given.

    `items` come in today's ranking (best first). Both signals are put on one scale, the
    model's scores as z-scores over these items and the given order as positions spread
    evenly from +1 (first) to -1 (last), and `weight` says how much more the model counts:
    at 2 a paper the model puts two deviations above the rest climbs from the bottom to the
    top, while papers it cannot tell apart keep today's order. A reader with no model
    (None) gets the items exactly as given.
    """
    if model is None or not items:
        return [item for item, _ in items]
    n = len(items)
    raw = [model.score(v) for _, v in items]
    mean = sum(raw) / n
    sd = math.sqrt(sum((r - mean) ** 2 for r in raw) / n)
    if sd < 1e-12:
        return [item for item, _ in items]
    keyed = [
        (weight * (r - mean) / sd + (1.0 - 2.0 * i / (n - 1) if n > 1 else 0.0), -i, item)
        for i, ((item, _), r) in enumerate(zip(items, raw, strict=True))
    ]
    keyed.sort(key=lambda k: (k[0], k[1]), reverse=True)
    return [item for _, _, item in keyed]
