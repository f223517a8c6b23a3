"""Like-topics and paper vectors at the service's edges (issue 15): keeping every stored
paper's vector current, fetching seed papers once, and the like-matches a send, the feeds
and `digest topics test` add to the keyword matches.

The order of work: a fetch stores papers, then `refresh_vectors` gives the new ones a
vector of the current vocabulary (building the first vocabulary when there is none, and a
new one when the archive has doubled since); a backfill ends with `rebuild_vocabulary`.
`fetch_seeds` is the one place a seed not in the archive is read from the API
(`digest topics like`, `digest check`); `like_matches_for` only reads the database, so a
send never goes to the network.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from digest.config import Config
from digest.errors import DigestError
from digest.models import Paper, TopicMatch
from digest.relevance import (
    Choice,
    ReaderModel,
    SendTerms,
    SimilarityIndex,
    Vector,
    Vocabulary,
    learn,
    like_matches,
    like_topics,
)
from digest.source.fetch import Fetcher
from digest.source.parse import parse_items
from digest.store import Store
from digest.store import vectors as stored

log = logging.getLogger("digest.likes")

REBUILD_GROWTH = 2  # a vocabulary is rebuilt when the archive is this many times its corpus


def rebuild_vocabulary(store: Store) -> int:
    """Build the vocabulary from every stored paper and re-make every vector with it, in
    one transaction; return how many vectors were made."""
    papers = [sp.paper for sp in store.papers()]
    vocab = Vocabulary.build(papers)
    vectors = {p.id: vocab.vector(p).to_bytes() for p in papers}
    stored.replace_vocabulary(store, vocab.to_bytes(), vectors)
    return len(vectors)


def current_vocabulary(store: Store) -> tuple[int, Vocabulary] | None:
    """Return (version, vocabulary) kept in the store, or None before the first."""
    kept = stored.vocabulary(store)
    if kept is None:
        return None
    return kept[0], Vocabulary.from_bytes(kept[1])


def refresh_vectors(store: Store) -> int:
    """Give every stored paper without one a vector of the current vocabulary (building a
    vocabulary first when there is none or the archive has doubled); return how many."""
    kept = current_vocabulary(store)
    if kept is None or store.count_papers() >= REBUILD_GROWTH * max(kept[1].documents, 1):
        return rebuild_vocabulary(store)
    version, vocab = kept
    missing = stored.ids_without_vector(store, version)
    if not missing:
        return 0
    papers = store.papers(ids=missing)
    stored.save_vectors(
        store, version, {sp.paper.id: vocab.vector(sp.paper).to_bytes() for sp in papers}
    )
    return len(papers)


def seed_ids(config: Config) -> list[str]:
    """Every seed the config's like-topics name, once, in config order."""
    return list(dict.fromkeys(s for t in config.topics for s in t.like))


def missing_seeds(config: Config, store: Store) -> list[str]:
    """The seeds neither in the archive nor fetched yet (a like-topic cannot use them)."""
    ids = seed_ids(config)
    known = {sp.paper.id for sp in store.papers(ids=ids)} if ids else set()
    known |= set(stored.seed_papers(store, ids))
    return [s for s in ids if s not in known]


def paper_api_url(config: Config, paper_id: str) -> str:
    """The API's page of one paper: /api/papers/<id> beside the configured list API."""
    base = config.source.api_url.rstrip("/").rsplit("/", 1)[0]
    return f"{base}/papers/{paper_id}"


def fetch_seeds(config: Config, store: Store, fetcher: Fetcher, ids: Iterable[str]) -> list[str]:
    """Fetch the seeds of `ids` not in the archive nor fetched before, once each, and keep
    them; return one problem line per seed that could not be fetched (naming it)."""
    wanted = list(dict.fromkeys(ids))
    known = {sp.paper.id for sp in store.papers(ids=wanted)} if wanted else set()
    known |= set(stored.seed_papers(store, wanted))
    problems: list[str] = []
    for paper_id in wanted:
        if paper_id in known:
            continue
        url = paper_api_url(config, paper_id)
        try:
            body, final = fetcher.get(url)
            item = json.loads(body)
            papers = parse_items([item], final)
        except (DigestError, ValueError) as e:
            problems.append(f"seed paper {paper_id}: cannot fetch {url}: {e}")
            continue
        stored.save_seed(store, papers[0])
    return problems


def like_matches_for(
    config: Config, store: Store, papers: Sequence[Paper]
) -> dict[str, list[TopicMatch]]:
    """Return paper id -> the config's like-topics keeping it (with the why), reading
    only the database: stored vectors for `papers` and the seeds in the archive, the
    fetched seeds vectorised with the current vocabulary. {} when no topic names seeds
    or there is no vocabulary yet."""
    ids = seed_ids(config)
    if not ids or not papers:
        return {}
    kept = current_vocabulary(store)
    if kept is None:
        return {}
    version, vocab = kept
    raw = stored.vectors_of(store, version, {p.id for p in papers} | set(ids))
    vectors = {pid: Vector.from_bytes(b) for pid, b in raw.items()}
    index = _index(config, store, vocab, vectors)
    return like_matches(index, papers, vectors, config.topics)


def like_index_for(
    config: Config, store: Store, paper_ids: Iterable[str]
) -> tuple[SimilarityIndex, dict[str, Vector]] | None:
    """Return the like-topics' index and the vectors of `paper_ids` and the seeds (for
    `digest topics test`, which also shows the scores under the threshold), or None
    without a vocabulary or seeds."""
    ids = seed_ids(config)
    kept = current_vocabulary(store)
    if kept is None or not ids:
        return None
    version, vocab = kept
    raw = stored.vectors_of(store, version, set(paper_ids) | set(ids))
    vectors = {pid: Vector.from_bytes(b) for pid, b in raw.items()}
    return _index(config, store, vocab, vectors), vectors


def _index(
    config: Config, store: Store, vocab: Vocabulary, vectors: dict[str, Vector]
) -> SimilarityIndex:
    """The like-topics' index: seeds in the archive use their stored vectors (in
    `vectors`), fetched seeds are vectorised now (and added to `vectors`)."""
    ids = seed_ids(config)
    seed_papers = {sp.paper.id: sp.paper for sp in store.papers(ids=ids)}
    for pid, paper in stored.seed_papers(store, ids).items():
        if pid not in seed_papers:
            seed_papers[pid] = paper
            vectors[pid] = vocab.vector(paper)
    seeds = {pid: (p, vectors[pid]) for pid, p in seed_papers.items() if pid in vectors}
    return SimilarityIndex(like_topics(config.topics, seeds))


# -- readers' learned models (issue 15 item 3) -----------------------------------------

BACKGROUND_PAPERS = 200  # newest stored papers a reader did not choose: weak negatives
MODEL_BATCH = 500  # readers whose stored models are read (and cut) at a time


@dataclass(frozen=True)
class Learned:
    """What a send needs to rank by readers' choices: each choosing reader's model (by
    address key) and the vectors of the send's papers, both over the send's own
    numbering of its terms (relevance.SendTerms)."""

    models: dict[str, ReaderModel]
    vectors: dict[str, Vector]


def learned_for(store: Store, readers: Iterable[str], paper_ids: Iterable[str]) -> Learned | None:
    """Return the models of `readers` (address keys) who made choices, re-learned only for
    those who chose since their model was kept (then kept again), with the vectors of
    `paper_ids`; None when no reader chose (every reader gets today's ranking).

    Each model is made over the terms of `paper_ids`' vectors as soon as it is read or
    learned (SendTerms: the same scores for those papers, a dense array each), and the
    vectors are given in that numbering; readers are read a batch at a time, so a send
    of 10,000 choosing readers holds tens of MB of models, not the GBs their full
    weights are (bench/README.md)."""
    choices = stored.choices_of(store, readers)
    kept = current_vocabulary(store)
    if not choices or kept is None:
        return None
    version, _vocab = kept
    raw = stored.vectors_of(store, version, paper_ids)
    send = SendTerms({pid: Vector.from_bytes(b) for pid, b in raw.items()})
    models: dict[str, ReaderModel] = {}
    background: list[tuple[str, Vector]] | None = None  # read once, when a model is stale
    readers_chose = list(choices)
    for i in range(0, len(readers_chose), MODEL_BATCH):
        batch = readers_chose[i : i + MODEL_BATCH]
        cached = stored.reader_models(store, batch)
        stale = []
        for reader in batch:
            row = cached.pop(reader, None)
            if row is None or row[1] != choices[reader][-1][2]:
                stale.append(reader)
                continue
            try:
                models[reader] = send.model(ReaderModel.from_bytes(row[0]))
            except ValueError:  # a model of another layout: learn it again
                stale.append(reader)
        if not stale:
            continue
        if background is None:  # enough that each reader has 200 once theirs are left out
            most = max(len(cs) for cs in choices.values())
            newest = [sp.paper.id for sp in store.papers(limit=BACKGROUND_PAPERS + most)]
            got = stored.vectors_of(store, version, newest)
            background = [(pid, Vector.from_bytes(got[pid])) for pid in newest if pid in got]
        chosen = {pid for r in stale for pid, _, _ in choices[r]}
        got = stored.vectors_of(store, version, chosen)
        chosen_vectors = {pid: Vector.from_bytes(b) for pid, b in got.items()}
        fresh: dict[str, tuple[bytes, str]] = {}
        for reader in stale:
            cs = choices[reader]
            mine = {pid for pid, _, _ in cs}
            model = learn(
                [Choice(chosen_vectors[pid], more) for pid, more, _ in cs if pid in chosen_vectors],
                [v for pid, v in background if pid not in mine][:BACKGROUND_PAPERS],
            )
            if model is not None:
                fresh[reader] = (model.to_bytes(), cs[-1][2])
                models[reader] = send.model(model)
        stored.save_reader_models(store, fresh)
    if not models:
        return None
    return Learned(models, send.vectors)
