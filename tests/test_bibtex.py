"""`digest topics like NAME --from library.bib`: arXiv ids from a Zotero-style export
(tests/data/bibtex/README.md says how the files were made), the seeds fetched once
from the HF test server, and the TOML line printed to paste."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from digest.bibtex import arxiv_id, arxiv_ids, entries
from digest.errors import DigestError
from digest.store import Store
from digest.store import vectors as stored
from tests.support.cli import cli
from tests.support.config import write_config
from tests.support.hfserver import HFServer, Reply
from tests.support.paths import DATA, REAL

BIB = DATA / "bibtex"


def test_a_zotero_export_gives_its_arxiv_ids_and_names_the_entries_without() -> None:
    ids, skipped = arxiv_ids(BIB / "zotero.bib")
    # url + doi, doi only, a versioned /pdf/ url; the duplicate once.
    assert ids == ["2404.00656", "2403.10493", "2403.17694"]
    assert len(skipped) == 2
    assert skipped[0].startswith(f"{BIB / 'zotero.bib'}:37: entry vaswani_attention_2017 ")
    assert "'Attention is all you need'" in skipped[0]
    assert skipped[1].startswith(f"{BIB / 'zotero.bib'}:46: entry sutton_reinforcement_2018 ")


def test_better_bibtex_eprints_with_their_prefix() -> None:
    assert arxiv_ids(BIB / "betterbibtex.bib") == (["2403.19887", "2403.09611"], [])
    # An eprint of another archive is not an arXiv id, whatever it looks like.
    assert arxiv_id({"eprint": "2403.19887", "archiveprefix": "PubMed"}) is None
    assert arxiv_id({"doi": "10.1145/3292500.3330701"}) is None
    (_, key, fields), *_ = entries('@misc{k, title = "A " # {B}, year = 2024}')
    assert (key, fields) == ("k", {"title": "A B", "year": "2024"})


def test_a_broken_file_is_refused_with_its_line(tmp_path: Path) -> None:
    with pytest.raises(DigestError) as e:
        arxiv_ids(BIB / "broken.bib")
    assert str(e.value).startswith(f"{BIB / 'broken.bib'}:3: entry 'hu_wavllm_2024': title ")
    cut = tmp_path / "cut.bib"
    text = (BIB / "zotero.bib").read_text()
    cut.write_text(text[: text.index("abstract = {") + 40])  # the file ends in line 7's value
    with pytest.raises(DigestError, match=rf"{cut}:7: a '{{' is never closed"):
        arxiv_ids(cut)
    nokey = tmp_path / "nokey.bib"
    nokey.write_text("\n\n@article{\n  title = {X},\n}\n")
    with pytest.raises(DigestError, match=rf"{nokey}:3: @article entry has no key"):
        arxiv_ids(nokey)


def test_topics_like_from_a_library_fetches_the_seeds_once_and_prints_the_line(
    tmp_path: Path, hf_server: HFServer
) -> None:
    # The HF server answers /api/papers/<id> with the captured paper objects.
    by_id = {}
    for capture in REAL.glob("api-daily_papers-2024-0[34]-*.json"):
        for item in json.loads(capture.read_text(encoding="utf-8")):
            by_id[item["paper"]["id"]] = item["paper"]
    for pid in ("2404.00656", "2403.10493", "2403.17694"):
        hf_server.route(f"/api/papers/{pid}", Reply.json(by_id[pid]))
    db = tmp_path / "papers.db"
    cfg = write_config(
        tmp_path,
        "c.toml",
        store={"database": str(db)},
        source={"api_url": hf_server.url("/api/daily_papers"), "retries": 0},
    )
    result = cli(cfg, "topics", "like", "speech", "--from", str(BIB / "zotero.bib"))
    assert result.exit_code == 0, result.output
    assert 'like = ["2404.00656", "2403.10493", "2403.17694"]' in result.stdout
    assert "zotero.bib:37: entry vaswani_attention_2017" in result.stderr
    store = Store.open(db)
    assert set(stored.seed_papers(store)) == {"2404.00656", "2403.10493", "2403.17694"}
    assert stored.seed_papers(store)["2403.10493"].title.startswith("MusicHiFi")
    store.close()
    again = cli(cfg, "topics", "like", "speech", "--from", str(BIB / "zotero.bib"))
    assert again.exit_code == 0, again.output
    assert all(
        len(hf_server.requests_to(f"/api/papers/{p}")) == 1 for p in by_id if p in again.stdout
    )
    bad = cli(cfg, "topics", "like", "speech", "--from", str(BIB / "broken.bib"))
    assert bad.exit_code == 1
    assert "broken.bib:3:" in bad.output
