"""Tables `paper_vectors`, `seed_papers`, `choices`, `reader_models` and the vocabulary's
meta rows: the stored side of digest.relevance (issue 15).

Only bytes and plain values go in and out: what the bytes mean (tf-idf vectors, the
vocabulary, a reader's model) is digest.relevance's, so the store stays free of it.
Vectors are kept with the version of the vocabulary that made them; a rebuilt
vocabulary replaces every vector in the same transaction (term ids change between
vocabularies, so a vector of another version is never read back).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime

from digest.clock import now_utc
from digest.models import Paper
from digest.store import Store, _iso


def vocabulary(store: Store) -> tuple[int, bytes] | None:
    """Return (version, the vocabulary's bytes), or None before the first is built."""
    rows = dict(
        store.db.execute(
            "SELECT key, value FROM meta WHERE key IN ('vocabulary', 'vocabulary_version')"
        ).fetchall()
    )
    if "vocabulary" not in rows:
        return None
    return int(rows.get("vocabulary_version", 1)), str(rows["vocabulary"]).encode("utf-8")


def replace_vocabulary(store: Store, data: bytes, vectors: Mapping[str, bytes]) -> int:
    """Keep a new vocabulary and every paper's vector it made, in one transaction; return
    its version (one more than the last)."""
    with store.transaction() as conn:
        row = conn.execute("SELECT value FROM meta WHERE key = 'vocabulary_version'").fetchone()
        version = int(row[0]) + 1 if row else 1
        conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('vocabulary', ?)",
            (data.decode("utf-8"),),
        )
        conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('vocabulary_version', ?)",
            (str(version),),
        )
        conn.execute("DELETE FROM paper_vectors")
        conn.executemany(
            "INSERT INTO paper_vectors (paper_id, vocab, vector) VALUES (?, ?, ?)",
            ((pid, version, v) for pid, v in vectors.items()),
        )
    return version


def save_vectors(store: Store, version: int, vectors: Mapping[str, bytes]) -> None:
    """Keep papers' vectors made by vocabulary `version` (replacing older ones)."""
    if not vectors:
        return
    with store.transaction() as conn:
        conn.executemany(
            "INSERT OR REPLACE INTO paper_vectors (paper_id, vocab, vector) VALUES (?, ?, ?)",
            ((pid, version, v) for pid, v in vectors.items()),
        )


def vectors_of(store: Store, version: int, ids: Iterable[str] | None = None) -> dict[str, bytes]:
    """Return paper id -> vector bytes made by vocabulary `version` (all, or `ids`)."""
    if ids is None:
        rows = store.db.execute(
            "SELECT paper_id, vector FROM paper_vectors WHERE vocab = ?", (version,)
        )
        return {r[0]: bytes(r[1]) for r in rows}
    out: dict[str, bytes] = {}
    wanted = list(ids)
    for i in range(0, len(wanted), 500):  # SQLite's host-parameter limit
        chunk = wanted[i : i + 500]
        rows = store.db.execute(
            f"SELECT paper_id, vector FROM paper_vectors WHERE vocab = ? "
            f"AND paper_id IN ({','.join('?' * len(chunk))})",
            (version, *chunk),
        )
        out.update((r[0], bytes(r[1])) for r in rows)
    return out


def ids_without_vector(store: Store, version: int) -> list[str]:
    """Return the stored papers that have no vector of vocabulary `version`."""
    rows = store.db.execute(
        "SELECT id FROM papers WHERE id NOT IN "
        "(SELECT paper_id FROM paper_vectors WHERE vocab = ?)",
        (version,),
    )
    return [r[0] for r in rows]


def save_seed(store: Store, paper: Paper, fetched: datetime | None = None) -> None:
    """Keep a like-topic's seed paper that is not in the archive (fetched from the API)."""
    with store.transaction() as conn:
        conn.execute(
            "INSERT OR REPLACE INTO seed_papers (id, title, abstract, ai_keywords, fetched) "
            "VALUES (?, ?, ?, ?, ?)",
            (
                paper.id,
                paper.title,
                paper.abstract,
                json.dumps(list(paper.ai_keywords), ensure_ascii=False),
                _iso(fetched or now_utc()),
            ),
        )


def seed_papers(store: Store, ids: Iterable[str] | None = None) -> dict[str, Paper]:
    """Return the kept seed papers (all, or those of `ids`) by id."""
    rows = store.db.execute("SELECT id, title, abstract, ai_keywords FROM seed_papers")
    wanted = None if ids is None else set(ids)
    return {
        r[0]: Paper(r[0], r[1], abstract=r[2], ai_keywords=tuple(json.loads(r[3])))
        for r in rows
        if wanted is None or r[0] in wanted
    }


# -- readers' choices and their learned models ---------------------------------------


def record_choice(store: Store, reader: str, paper_id: str, more: bool, at: datetime) -> None:
    """Keep a reader's "more" (True) or "fewer" (False) on a paper (a later one on the
    same paper replaces it). `reader` is the address key (digest.addresses.address_key)."""
    with store.transaction() as conn:
        conn.execute(
            "INSERT OR REPLACE INTO choices (reader, paper_id, more, at) VALUES (?, ?, ?, ?)",
            (reader, paper_id, int(more), _iso(at)),
        )


def undo_choice(store: Store, reader: str, paper_id: str) -> bool:
    """Forget a reader's choice on a paper; True when there was one. The model learned
    from it is dropped too, so the next send learns again (or, with no choice left, the
    reader gets today's ranking)."""
    with store.transaction() as conn:
        gone = conn.execute(
            "DELETE FROM choices WHERE reader = ? AND paper_id = ?", (reader, paper_id)
        ).rowcount
        if gone:
            conn.execute("DELETE FROM reader_models WHERE reader = ?", (reader,))
    return bool(gone)


def choices_of(store: Store, readers: Iterable[str]) -> dict[str, list[tuple[str, bool, str]]]:
    """Return reader -> their choices (paper id, more, when), oldest first."""
    wanted = list(dict.fromkeys(readers))
    out: dict[str, list[tuple[str, bool, str]]] = {}
    for i in range(0, len(wanted), 500):
        chunk = wanted[i : i + 500]
        rows = store.db.execute(
            "SELECT reader, paper_id, more, at FROM choices "
            f"WHERE reader IN ({','.join('?' * len(chunk))}) ORDER BY at, paper_id",
            chunk,
        )
        for reader, paper_id, more, at in rows:
            out.setdefault(reader, []).append((paper_id, bool(more), at))
    return out


def reader_models(store: Store, readers: Iterable[str]) -> dict[str, tuple[bytes, str]]:
    """Return reader -> (their model's bytes, the time of the newest choice it learned)."""
    wanted = list(dict.fromkeys(readers))
    out: dict[str, tuple[bytes, str]] = {}
    for i in range(0, len(wanted), 500):
        chunk = wanted[i : i + 500]
        rows = store.db.execute(
            "SELECT reader, model, learned_at FROM reader_models "
            f"WHERE reader IN ({','.join('?' * len(chunk))})",
            chunk,
        )
        out.update((r[0], (bytes(r[1]), r[2])) for r in rows)
    return out


def save_reader_models(store: Store, models: Mapping[str, tuple[bytes, str]]) -> None:
    """Keep readers' models with the time of the newest choice each learned from."""
    if not models:
        return
    with store.transaction() as conn:
        conn.executemany(
            "INSERT OR REPLACE INTO reader_models (reader, model, learned_at) VALUES (?, ?, ?)",
            ((r, m, at) for r, (m, at) in models.items()),
        )
