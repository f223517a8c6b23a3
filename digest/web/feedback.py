""" "More like this" / "fewer like this" (issue 15 item 3): what a reader's feedback links
do, and the list of their choices on the preferences page.

What each step trusts: the link's token is signed for one (reader, paper) with a salt of
its own (digest.tokens.FEEDBACK), so a forged or altered token, or any other kind of
token (unsubscribe, preferences, confirm), is refused, and one reader's link never
records a choice for another reader or another paper. A GET only shows the one button
(mail scanners open every link); the POST it sends records the choice, as the one-click
unsubscribe does, with the token as the authority. Undoing a choice is a form on the
preferences page (CSRF-checked there). A new or undone choice drops the reader's kept
model, so the next send learns it again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from digest.addresses import address_key
from digest.config import Config
from digest.store import Store
from digest.store import vectors as stored
from digest.store.meta import secret_key
from digest.tokens import verify_feedback_token

KINDS = {"more": True, "fewer": False}


@dataclass(frozen=True)
class Feedback:
    """A genuine feedback link: whose it is, which paper, which choice."""

    reader: str  # address key
    paper_id: str
    title: str
    more: bool


def feedback_of(config: Config, store: Store, token: str, kind: str) -> Feedback | None:
    """Return what a feedback link would record, changing nothing; None for a bad token,
    an unknown choice or a paper no longer stored."""
    if kind not in KINDS:
        return None
    found = verify_feedback_token(secret_key(store, config.secret_key), token)
    if found is None:
        return None
    reader, paper_id = found
    papers = store.papers(ids=[paper_id])
    if not papers:
        return None
    return Feedback(reader, paper_id, papers[0].paper.title, KINDS[kind])


def record_feedback(
    config: Config, store: Store, token: str, kind: str, *, now: datetime | None = None
) -> Feedback | None:
    """Record the link's choice (replacing the reader's earlier one on that paper) and
    return it; None, recording nothing, for a link `feedback_of` refuses."""
    found = feedback_of(config, store, token, kind)
    if found is None:
        return None
    stored.record_choice(store, found.reader, found.paper_id, found.more, now or datetime.now(UTC))
    return found


@dataclass(frozen=True)
class Chosen:
    """One of a reader's choices, for the preferences page."""

    paper_id: str
    title: str
    more: bool
    at: str


def choices_for(store: Store, address: str) -> list[Chosen]:
    """Return the reader's choices, newest first, with the papers' titles."""
    mine = stored.choices_of(store, [address_key(address)]).get(address_key(address), [])
    titles = {sp.paper.id: sp.paper.title for sp in store.papers(ids=[p for p, _, _ in mine])}
    return [Chosen(p, titles.get(p, p), more, at) for p, more, at in reversed(mine)]


def undo_choice(store: Store, address: str, paper_id: str) -> bool:
    """Forget the reader's choice on `paper_id`; True when there was one."""
    return stored.undo_choice(store, address_key(address), paper_id)
