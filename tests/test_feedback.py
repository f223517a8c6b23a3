""" "More like this" / "fewer like this" (issue 15 item 3), end to end: the links in a real
send (aiosmtpd), the page a GET shows (real uvicorn) changing nothing, the POST recording
the choice, the preferences page listing it and undoing it, forged / altered / other-kind
tokens refused, and a reader's later email ranked by the model learned from the choices
(cached, re-learned only after a new choice)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest

from digest.addresses import address_key
from digest.config import Config, FeedsConfig, SubscriberConfig
from digest.jobs import ingest_file, preview
from digest.relevance import ReaderModel
from digest.store import Store
from digest.store import vectors as stored
from digest.store.meta import secret_key
from digest.tokens import (
    PREFERENCES,
    UNSUBSCRIBE,
    make_feedback_token,
    make_token,
    verify_feedback_token,
    verify_token,
)
from tests.support.paths import PAGE_2024_08_01, REAL
from tests.support.smtpserver import SmtpServer
from tests.support.subscribe import KNOWN, link_in, mail_to, path_of, send, store_day

KEY = b"k" * 32


def test_a_feedback_token_is_for_one_reader_and_paper() -> None:
    token = make_feedback_token(KEY, "Reader@Example.org", "2407.21783")
    assert verify_feedback_token(KEY, token) == (address_key("reader@example.org"), "2407.21783")
    assert make_feedback_token(KEY, "reader@example.org", "2407.21783") == token  # stable
    # Altered anywhere: payload or signature.
    for i in (2, len(token) // 2, len(token) - 2):
        changed = token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :]
        assert verify_feedback_token(KEY, changed) is None, i
    assert verify_feedback_token(b"x" * 32, token) is None  # forged: another key
    # Other kinds of token for the same reader are not feedback tokens, nor the reverse.
    for purpose in (UNSUBSCRIBE, PREFERENCES):
        other = make_token(KEY, "reader@example.org", purpose)
        assert verify_feedback_token(KEY, other) is None
        assert verify_token(KEY, token, purpose) is None
    assert verify_feedback_token(KEY, "") is None


def test_a_feedback_token_is_signed_as_its_check_reads_it_under_any_key() -> None:
    # The signer hashes HMAC's padded key blocks once (tokens.feedback_signer); the check
    # is the hmac module's. Keys of every length, and many readers under one key.
    for key in (b"", b"k", b"k" * 31, b"k" * 64, b"k" * 65, bytes(range(256))):
        for n in range(20):
            reader, paper = f"r{n}@example.org", f"2407.{21780 + n}"
            token = make_feedback_token(key, reader, paper)
            assert verify_feedback_token(key, token) == (reader, paper), (key, n)


def choices(config: Config) -> list[tuple[str, str, int]]:
    store = Store.open(config.store.database)
    try:
        return list(store.db.execute("SELECT reader, paper_id, more FROM choices"))
    finally:
        store.close()


def test_the_links_show_one_button_the_post_records_and_the_reader_can_undo(
    config: Config, site: str, smtp: SmtpServer
) -> None:
    store_day(config, PAGE_2024_08_01)
    assert KNOWN in send(config, datetime.now(UTC).date()).sent
    digest = mail_to(smtp, KNOWN)[-1]
    link = link_in(digest, "feedback")
    assert link.endswith("/more")
    token = unquote(link.split("/feedback/")[1].rsplit("/", 1)[0])
    store = Store.open(config.store.database)
    try:
        reader, paper_id = verify_feedback_token(secret_key(store, config.secret_key), token) or (
            "",
            "",
        )
        title = store.papers(ids=[paper_id])[0].paper.title
    finally:
        store.close()
    assert reader == address_key(KNOWN)
    html = digest.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert html.count("/feedback/") == 2 * html.count('class="paper"')  # each card, both

    # Opening the link (a mail scanner fetching it) changes nothing.
    page = httpx.get(site + path_of(link))
    assert page.status_code == 200 and "More like this" in page.text
    assert page.text.count('<form method="post"') == 1 and f'action="{path_of(link)}"' in page.text
    assert title.split()[0] in page.text
    assert choices(config) == []
    # Pressing the button does.
    done = httpx.post(site + path_of(link))
    assert done.status_code == 200 and "Noted" in done.text
    assert choices(config) == [(address_key(KNOWN), paper_id, 1)]
    # "Fewer" on the same paper replaces it.
    httpx.post(site + path_of(link)[: -len("more")] + "fewer")
    assert choices(config) == [(address_key(KNOWN), paper_id, 0)]

    # Forged, altered, other-kind tokens and unknown choices: refused, nothing changes.
    other = make_token(b"whatever", KNOWN, PREFERENCES)
    prefs_link = path_of(link_in(digest, "preferences"))
    for bad in (
        f"/feedback/{token[:-3]}abc/more",
        f"/feedback/{make_feedback_token(b'y' * 32, KNOWN, paper_id)}/more",
        f"/feedback/{other}/more",
        f"/feedback/{prefs_link.rsplit('/', 1)[1]}/more",
        f"/feedback/{token}/maybe",
    ):
        assert httpx.get(site + bad).status_code == 400, bad
        assert httpx.post(site + bad).status_code == 400, bad
    assert choices(config) == [(address_key(KNOWN), paper_id, 0)]

    # The preferences page lists the choice and undoes it (with its form token).
    with httpx.Client() as client:
        prefs = client.get(site + prefs_link)
        assert prefs.status_code == 200 and "Papers you chose" in prefs.text
        assert "Fewer like" in prefs.text and paper_id in prefs.text
        csrf = re.search(r'name="csrf" value="([^"]+)"', prefs.text)
        assert csrf
        refused = client.post(site + prefs_link + "/undo", data={"paper": paper_id})
        assert refused.status_code == 403
        assert len(choices(config)) == 1
        undone = client.post(
            site + prefs_link + "/undo",
            data={"csrf": csrf.group(1), "paper": paper_id},
            follow_redirects=True,
        )
        assert undone.status_code == 200 and "Papers you chose" not in undone.text
    assert choices(config) == []


# -- the ranking after choices ----------------------------------------------------------

SEED_CAPTURES = sorted(REAL.glob("api-daily_papers-2024-0[34]-*.json"))
SPEECH = ["2404.00656", "2403.10493", "2403.17694"]  # speech, music, audio (seed days)


def speech_papers() -> set[str]:
    """The papers judged about speech / audio in the labelled set."""
    labels = Path(__file__).parent / "data" / "relevance" / "labels.tsv"
    out = set()
    for line in labels.read_text(encoding="utf-8").splitlines()[1:]:
        pid, _day, interest, relevant = line.split("\t")
        if interest == "speech-audio" and relevant == "1":
            out.add(pid)
    return out


def email_order(config: Config, store: Store, tmp_path: Path, who: str) -> list[str]:
    shown = preview(config, store, who, None, tmp_path / who)
    assert shown.eml is not None, shown.reason
    msg = message_from_bytes(shown.eml.read_bytes(), policy=default_policy)
    assert isinstance(msg, EmailMessage)
    html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    return re.findall(r'id="p-([0-9.]+)"', html)


@pytest.fixture
def archive(tmp_path: Path) -> Store:
    store = Store.open(tmp_path / "papers.db")
    for capture in SEED_CAPTURES:
        assert ingest_file(store, capture).status == "ok"
    return store


def test_a_reader_who_chose_gets_their_papers_ranked_by_it(archive: Store, tmp_path: Path) -> None:
    store = archive
    config = Config(
        feeds=FeedsConfig(base_url="https://papers.example.org"),
        subscribers=[SubscriberConfig("chose@example.org"), SubscriberConfig("none@example.org")],
    )
    before = email_order(config, store, tmp_path / "a", "chose@example.org")
    untouched = email_order(config, store, tmp_path / "a", "none@example.org")
    assert before == untouched  # the same papers, today's ranking
    speech = speech_papers()
    cards = config.email.max_full
    now = datetime(2026, 12, 1, 8, tzinfo=UTC)
    for pid in SPEECH:
        stored.record_choice(store, address_key("chose@example.org"), pid, True, now)
    after = email_order(config, store, tmp_path / "b", "chose@example.org")
    # More speech papers among the cards than today's ranking gives (judged by hand in
    # tests/data/relevance, not by the model's own words).
    had, has = len(speech & set(before[:cards])), len(speech & set(after[:cards]))
    assert has >= had + 3, (had, has)
    # A reader with no choices still gets today's ranking.
    assert email_order(config, store, tmp_path / "b", "none@example.org") == untouched
    # The model is kept, and used as kept until the reader chooses again.
    models = stored.reader_models(store, [address_key("chose@example.org")])
    model, learned_at = models[address_key("chose@example.org")]
    assert email_order(config, store, tmp_path / "c", "chose@example.org") == after
    assert stored.reader_models(store, [address_key("chose@example.org")]) == models
    # Proof that a send takes the kept model and does not learn again: a blank model kept
    # in its place (same time) gives today's ranking; the kept one back, the learned one.
    blank = ReaderModel({}).to_bytes()
    stored.save_reader_models(store, {address_key("chose@example.org"): (blank, learned_at)})
    assert email_order(config, store, tmp_path / "c", "chose@example.org") == untouched
    stored.save_reader_models(store, models)
    later = datetime(2026, 12, 2, 8, tzinfo=UTC)
    stored.record_choice(store, address_key("chose@example.org"), after[0], False, later)
    again = email_order(config, store, tmp_path / "d", "chose@example.org")
    (model2, learned2), *_ = stored.reader_models(
        store, [address_key("chose@example.org")]
    ).values()
    assert learned2 != learned_at and model2 != model
    assert after[0] not in again[:1]  # "fewer" on the top paper moves it down
    # Undoing every choice: today's ranking again.
    for pid in dict.fromkeys([*SPEECH, after[0]]):
        assert stored.undo_choice(store, address_key("chose@example.org"), pid)
    assert email_order(config, store, tmp_path / "e", "chose@example.org") == untouched
    store.close()


def test_a_send_holds_each_model_over_its_papers_terms_only(
    archive: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # learned_for reads readers a batch at a time (2 here, so 5 readers cross batches),
    # learns the stale ones and keeps each model over the send's papers' terms only (its
    # own numbering of them): the same scores as the whole model, fewer weights.
    from digest.deliver import likes
    from digest.relevance import Vector

    store = archive
    monkeypatch.setattr(likes, "MODEL_BATCH", 2)
    readers = [address_key(f"r{i}@example.org") for i in range(5)]
    now = datetime(2026, 12, 1, 8, tzinfo=UTC)
    for i, reader in enumerate(readers):
        stored.record_choice(store, reader, SPEECH[i % 3], True, now)
    send = [sp.paper.id for sp in store.papers(limit=40)]
    first = likes.learned_for(store, readers, send)  # every model learned now, and kept
    again = likes.learned_for(store, readers, send)  # every model read back
    assert first is not None and again is not None
    kept = stored.reader_models(store, readers)
    assert set(first.models) == set(again.models) == set(kept) == set(readers)
    version, _ = likes.current_vocabulary(store) or (0, None)
    raw = stored.vectors_of(store, version, send)
    terms = {t for b in raw.values() for t in Vector.from_bytes(b).ids}
    assert first.vectors == again.vectors and set(again.vectors) == set(raw)
    for reader in readers:
        whole = ReaderModel.from_bytes(kept[reader][0])
        for got in (first.models[reader], again.models[reader]):
            assert len(got.weights) == len(terms)  # a dense array over the send's terms
            for pid in send:  # the send's numbering: the same score as the whole model's
                assert got.score(again.vectors[pid]) == whole.score(Vector.from_bytes(raw[pid]))
    store.close()
