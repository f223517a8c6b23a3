"""digest.relevance on the real captures, and the labelled set in tests/data/relevance."""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from functools import cache

import pytest

from digest.config import TopicConfig
from digest.models import Paper
from digest.relevance import (
    Choice,
    LikeTopic,
    ReaderModel,
    Seed,
    SendTerms,
    SimilarityIndex,
    Vector,
    Vocabulary,
    centroid,
    learn,
    like_topic,
    rerank,
    similarity,
)
from digest.source.parse import parse_api
from digest.topics import Matcher
from tests.support.paths import DATA, real_api_captures

LABELS = DATA / "relevance"
SEED_DAYS_END = "2024-04-04"


@cache
def corpus() -> tuple[dict[str, Paper], dict[str, str]]:
    """Every distinct real paper by id (capture order), and the day of its first capture."""
    papers: dict[str, Paper] = {}
    day: dict[str, str] = {}
    for path in real_api_captures():
        for p in parse_api(path.read_bytes(), str(path)).papers:
            if p.id not in papers:
                papers[p.id] = p
                day[p.id] = path.name.removeprefix("api-daily_papers-")[:10]
    return papers, day


@cache
def vocabulary() -> Vocabulary:
    return Vocabulary.build(corpus()[0].values())


@cache
def labels() -> dict[str, dict[str, int]]:
    """interest -> paper id -> 0/1."""
    out: dict[str, dict[str, int]] = {}
    with (LABELS / "labels.tsv").open(encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            out.setdefault(row["interest"], {})[row["paper_id"]] = int(row["relevant"])
    return out


def vec(pid: str) -> Vector:
    return vocabulary().vector(corpus()[0][pid])


# --- the labelled set --------------------------------------------------------------------


def test_labelled_set_covers_every_real_paper_once_per_interest() -> None:
    papers, day = corpus()
    seen: Counter[tuple[str, str]] = Counter()
    with (LABELS / "labels.tsv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    for row in rows:
        assert row["paper_id"] in papers, f"{row['paper_id']} is in no real capture"
        assert row["day"] == day[row["paper_id"]], row
        assert row["relevant"] in ("0", "1"), row
        seen[(row["paper_id"], row["interest"])] += 1
    interests = {i for _, i in seen}
    assert len(interests) >= 4
    assert set(seen.values()) == {1}, "a (paper, interest) pair is judged twice"
    assert len(seen) == len(papers) * len(interests), "a paper is missing an interest"


def test_every_interest_has_both_classes_seeds_and_a_keyword_topic() -> None:
    _, day = corpus()
    topics = json.loads((LABELS / "keyword_topics.json").read_text(encoding="utf-8"))["topics"]
    assert set(topics) == set(labels())
    for interest, judged in labels().items():
        positives = [pid for pid, r in judged.items() if r]
        assert 0 < len(positives) < len(judged), interest
        # 5 seeds, and relevant papers left to find on the evaluation days.
        assert len(positives) >= 5 + 10, interest
        assert any(day[pid] > SEED_DAYS_END for pid in positives), interest
        Matcher([TopicConfig(name=interest, **topics[interest])])  # a valid keyword topic
    # A parser capture folder holds expected.json; this one must not look like one.
    assert not (LABELS / "expected.json").exists()


def test_the_readme_table_counts_what_labels_tsv_holds() -> None:
    _, day = corpus()
    readme = (LABELS / "README.md").read_text(encoding="utf-8")
    assert f"to {SEED_DAYS_END}" in readme
    for interest, judged in labels().items():
        seed = [r for pid, r in judged.items() if day[pid] <= SEED_DAYS_END]
        later = [r for pid, r in judged.items() if day[pid] > SEED_DAYS_END]
        row = f"| {interest} | {sum(seed)} / {len(seed)} | {sum(later)} / {len(later)} |"
        assert row in readme


# --- vectors ------------------------------------------------------------------------------


def test_vectors_round_trip_through_bytes_exactly() -> None:
    papers, _ = corpus()
    for pid in papers:
        v = vec(pid)
        data = v.to_bytes()
        assert Vector.from_bytes(data) == v
        assert len(data) == 5 + 8 * len(v.ids)
        assert math.isclose(sum(w * w for w in v.weights), 1.0, rel_tol=1e-4)
        assert list(v.ids) == sorted(set(v.ids))


def test_vocabulary_round_trips_and_gives_the_same_vectors() -> None:
    again = Vocabulary.from_bytes(vocabulary().to_bytes())
    assert len(again) == len(vocabulary())
    for p in list(corpus()[0].values())[:50]:
        assert again.vector(p) == vocabulary().vector(p)


@pytest.mark.parametrize(
    "data",
    [b"", b"\x02\x00\x00\x00\x00", Vector((1, 2), (0.6, 0.8)).to_bytes()[:-1]],
    ids=["empty", "other format", "cut short"],
)
def test_bytes_of_another_shape_are_refused_by_name(data: bytes) -> None:
    with pytest.raises(ValueError, match="relevance vector"):
        Vector.from_bytes(data)


def test_a_broken_vocabulary_is_refused() -> None:
    with pytest.raises(ValueError, match="not a relevance vocabulary"):
        Vocabulary.from_bytes(b'{"format": 9}')


# --- similarity and like-topics -----------------------------------------------------------


def test_papers_on_one_subject_are_more_alike_than_across_subjects() -> None:
    # WavLLM (speech LLM) against a speech-recognition paper and a 3D-generation paper.
    wavllm, asr, v3d = vec("2404.00656"), vec("2405.15216"), vec("2403.06738")
    assert similarity(wavllm, asr) > similarity(wavllm, v3d)
    assert similarity(wavllm, wavllm) == pytest.approx(1.0, abs=1e-5)
    assert similarity(wavllm, asr) == similarity(asr, wavllm)


def test_a_like_topic_of_five_speech_seeds_ranks_speech_papers_first() -> None:
    papers, day = corpus()
    judged = labels()["speech-audio"]
    seeds = [p for p in papers.values() if judged[p.id]][:5]
    index = SimilarityIndex([like_topic("speech", [(s, vec(s.id)) for s in seeds])])
    later = [p for p in papers.values() if day[p.id] > max(day[s.id] for s in seeds)]
    scored = sorted(
        later,
        key=lambda p: -index.best(vec(p.id), floor=-1).get("speech", _zero).similarity,
    )
    top = [p.id for p in scored[:5]]
    assert all(judged[pid] for pid in top), [papers[i].title for i in top]
    # ... and the topic's threshold keeps mostly speech papers among the later days.
    kept = [p.id for p in later if index.match(vec(p.id))]
    assert kept and sum(judged[i] for i in kept) / len(kept) >= 0.8


class _Zero:
    similarity = 0.0


_zero = _Zero()


def test_the_why_names_the_nearest_seed_and_how_much() -> None:
    papers, _ = corpus()
    seeds = [papers[i] for i in ("2404.00656", "2403.10493", "2403.17694")]  # speech, music, audio
    topic = like_topic("audio", [(s, vec(s.id)) for s in seeds], min_similarity=0.0)
    paper = vec("2405.15216")  # speech recognition
    (like,) = SimilarityIndex([topic]).match(paper)
    by_hand = {s.id: similarity(paper, vec(s.id)) for s in seeds}
    assert like.seed_id == max(by_hand, key=by_hand.__getitem__)
    assert like.seed_similarity == pytest.approx(by_hand[like.seed_id], abs=1e-4)
    assert like.similarity == pytest.approx(
        similarity(paper, centroid(vec(s.id) for s in seeds)), abs=1e-4
    )
    # The README shows this very line.
    assert like.describe() == 'like "WavLLM: Towards Robust and Adaptive Spe…" 0.04'


def test_the_index_scores_every_topic_as_its_centroid_does() -> None:
    papers, _ = corpus()
    ids = list(papers)
    topics = [
        like_topic(f"t{i}", [(papers[j], vec(j)) for j in ids[i * 5 : i * 5 + 5]], 0.05)
        for i in range(40)
    ]
    index = SimilarityIndex(topics)
    for pid in ids[-30:]:
        v = vec(pid)
        want = {t.name: similarity(v, centroid(s.vector for s in t.seeds)) for t in topics}
        got = {lk.topic: lk.similarity for lk in index.match(v)}
        assert got == {n: pytest.approx(s, abs=1e-4) for n, s in want.items() if s >= 0.05}
        assert [lk.similarity for lk in index.match(v)] == sorted(got.values(), reverse=True)
        assert index.keep(v) == [(lk.topic, lk.similarity) for lk in index.match(v)]


def test_the_index_orders_ties_by_name_and_names_the_nearest_seed_of_each_topic() -> None:
    # Shared seeds, topics equal but for their names, and thresholds that differ: what a
    # server of many like-topics has, and what the index's shortcuts must get right.
    papers, _ = corpus()
    ids = list(papers)[:60]
    topics = []
    for i in range(30):
        seeds = [(papers[j], vec(j)) for j in ids[i : i + 5]]  # neighbours share 4 seeds
        topics.append(like_topic(f"t{i:02}", seeds, 0.02 * (i % 4)))
        topics.append(like_topic(f"twin{i:02}", seeds, 0.02 * (i % 4)))
    index = SimilarityIndex(topics)
    for pid in list(papers)[-20:]:
        v = vec(pid)
        want = []
        for t in topics:
            s = similarity(v, centroid(seed.vector for seed in t.seeds))
            if s >= t.min_similarity and s > 0:
                near = max(t.seeds, key=lambda seed: similarity(v, seed.vector))
                want.append((round(s, 4), t.name, near.id))
        want.sort(key=lambda w: (-w[0], w[1]))
        got = index.match(v)
        assert [(lk.topic, lk.seed_id) for lk in got] == [(n, near) for _, n, near in want]
        assert [lk.similarity for lk in got] == pytest.approx([s for s, _, _ in want], abs=1e-4)
        assert index.keep(v) == [(lk.topic, lk.similarity) for lk in got]


def test_min_similarity_is_the_threshold() -> None:
    p = corpus()[0]["2404.00656"]
    strict = like_topic("strict", [(p, vec(p.id))], min_similarity=0.999)
    index = SimilarityIndex([strict])
    assert index.match(vec("2405.15216")) == []  # a speech paper, but not this one
    # The paper itself is as like its only seed as float32 allows: kept, naming itself.
    (same,) = index.match(vec(p.id))
    assert same.seed_id == p.id and same.similarity == pytest.approx(1.0, abs=1e-4)
    loose = SimilarityIndex([like_topic("loose", [(p, vec(p.id))], min_similarity=0.0)])
    assert loose.match(vec("2405.15216"))  # any shared term is enough at 0
    with pytest.raises(ValueError, match=r"'bad': min_similarity 1\.5"):
        SimilarityIndex([LikeTopic("bad", strict.seeds, 1.5)])


# --- the learned reader model -------------------------------------------------------------


def test_choices_move_the_ranking_and_no_choices_keep_it() -> None:
    papers, day = corpus()
    speech = labels()["speech-audio"]
    pool = [p for p in papers.values() if day[p.id] <= SEED_DAYS_END]
    later = [p for p in papers.values() if day[p.id] > "2024-06-13"]
    # Today's ranking puts the later days' speech papers last, below 40 others.
    wanted = [p for p in later if speech[p.id]]
    others = [p for p in later if not speech[p.id]][:40]
    today = [p.id for p in others + wanted]
    items = [(pid, vec(pid)) for pid in today]
    assert rerank(items, None) == today
    assert rerank(items, learn([])) == today
    # The reader said "more" on the seed days' speech papers, "fewer" on a few others.
    liked = [Choice(vec(p.id), True) for p in pool if speech[p.id]]
    fewer = [Choice(vec(p.id), False) for p in pool[:8] if not speech[p.id]]
    model = learn(liked + fewer, [vec(p.id) for p in pool[10:40]])
    assert model is not None
    ranked = rerank(items, model)
    assert sorted(ranked) == sorted(today)
    want = {p.id for p in wanted}

    def mean_rank(order: list[str]) -> float:
        return sum(order.index(i) for i in want) / len(want)

    assert mean_rank(ranked) < mean_rank(today) / 2
    assert sum(1 for i in ranked[:10] if i in want) >= 7
    # "fewer like this" on a paper pushes it down from where "more" put it.
    target = next(i for i in ranked if i in want)
    pushed = rerank(items, learn([*liked, Choice(vec(target), False), *fewer]))
    assert pushed.index(target) > ranked.index(target)


def test_a_model_has_weights_for_the_chosen_papers_words_only() -> None:
    # What keeps a send's models small (README: "weights for the words of the papers
    # they chose"): 200 background papers add no word of their own, only evidence on
    # the chosen papers' words.
    papers = list(corpus()[0])
    chosen = papers[:3]
    choices = [Choice(vec(pid), i != 1) for i, pid in enumerate(chosen)]
    background = [vec(pid) for pid in papers[3:203]]
    model = learn(choices, background)
    alone = learn(choices)
    assert model is not None and alone is not None
    words = {t for pid in chosen for t in vec(pid).ids}
    assert set(model.weights) <= words
    background_words = {t for v in background for t in v.ids}
    assert len(background_words - words) > 1000  # many words the model does not take
    # The background still counts: it moves the weights of the words it shares.
    shared = [t for t in model.weights if t in background_words]
    assert shared and any(model.weights[t] != alone.weights[t] for t in shared)


def test_learning_is_deterministic_and_the_model_round_trips() -> None:
    choices = [Choice(vec("2404.00656"), True), Choice(vec("2403.06738"), False)]
    model = learn(choices)
    assert model is not None and model == learn(choices)
    again = ReaderModel.from_bytes(model.to_bytes())
    assert again.bias == model.bias and again.weights.keys() == model.weights.keys()
    for pid in ("2405.15216", "2403.06738", "2509.22622"):
        assert again.score(vec(pid)) == pytest.approx(model.score(vec(pid)), abs=1e-5)
    with pytest.raises(ValueError, match="not a reader model"):
        ReaderModel.from_bytes(b"\x00")
    data = model.to_bytes()
    assert again.to_bytes() == data  # read back packed, written again the same
    assert len(again.weights) == len(model.weights) and list(again.weights) == sorted(model.weights)
    some = sorted(model.weights)[::7]
    assert [again.weights[t] for t in some] == pytest.approx([model.weights[t] for t in some])
    for missing in (max(model.weights) + 1, 0xFFFFFFFF):
        assert missing not in again.weights and again.weights.get(missing) is None
    # Scores as a dict of the same float32 weights gives them, to the last bit.
    same = ReaderModel(dict(again.weights.items()), again.bias)
    for pid in list(corpus()[0])[:100]:
        assert again.score(vec(pid)) == same.score(vec(pid))
    with pytest.raises(ValueError, match="format byte"):  # a later layout: learned again
        ReaderModel.from_bytes(data[:8] + b"\x09" + data[9:])
    with pytest.raises(ValueError, match=r"needs \d+ bytes, got \d+"):
        ReaderModel.from_bytes(data[:-1])


def test_a_model_over_the_sends_terms_scores_its_papers_the_same() -> None:
    # What a send keeps per choosing reader: a dense array over its papers' terms.
    papers = list(corpus()[0])
    choices = [Choice(vec(pid), i % 3 == 0) for i, pid in enumerate(papers[:12])]
    learned = learn(choices, [vec(pid) for pid in papers[12:60]])
    assert learned is not None
    stored = ReaderModel.from_bytes(learned.to_bytes())
    ids = papers[200:240]
    send = SendTerms({pid: vec(pid) for pid in ids})
    assert len(send) == len({t for pid in ids for t in vec(pid).ids})
    for model in (stored, learned):  # read back (packed) and just learned (a dict)
        dense = send.model(model)
        assert len(dense.weights) == len(send)
        for pid in ids:  # float32 weights, as stored: the read-back model's scores exactly
            assert dense.score(send.vectors[pid]) == stored.score(vec(pid))
        with pytest.raises(TypeError):
            dense.to_bytes()  # positions, not term ids: never stored
        with pytest.raises(TypeError):
            send.model(dense)
    empty = send.model(ReaderModel({}, 0.25))
    assert empty.score(send.vectors[ids[0]]) == 0.25


# --- empty inputs ---------------------------------------------------------------------------


def test_empty_inputs() -> None:
    empty = Vocabulary.build([])
    assert len(empty) == 0 and empty.documents == 0
    assert not empty.vector(corpus()[0]["2404.00656"])
    nothing = vocabulary().vector(Paper(id="0000.00000", title="???"))
    assert not nothing and nothing.to_bytes() == Vector.from_bytes(nothing.to_bytes()).to_bytes()
    assert similarity(nothing, vec("2404.00656")) == 0.0
    assert SimilarityIndex([]).match(vec("2404.00656")) == []
    assert SimilarityIndex([]).best(nothing) == {}
    assert learn([]) is None
    assert learn([Choice(nothing, True)]) is None
    assert rerank([], learn([Choice(vec("2404.00656"), True)])) == []
    with pytest.raises(ValueError, match="'none': none of its seed papers has a vector"):
        like_topic("none", [(Paper(id="0000.00000", title="???"), nothing)])
    assert centroid([]) == Vector()
    assert LikeTopic("x", (Seed("1", "t", nothing),)).min_similarity > 0
    with pytest.raises(ValueError, match="min_df"):
        Vocabulary.build([], min_df=0)


def test_the_module_needs_nothing_beyond_the_standard_library() -> None:
    # README: "with the standard library only (the image does not grow)".
    import ast
    import sys
    from pathlib import Path

    import digest.relevance

    tree = ast.parse(Path(digest.relevance.__file__).read_text(encoding="utf-8"))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            roots.add(node.module.split(".")[0])
    assert "digest" in roots, "no imports found: the check would pass vacuously"
    assert roots - {"digest", "__future__"} <= sys.stdlib_module_names, roots
