"""Table `meta`: settings the service keeps for itself (the token key, which notes the
operator has had).

Token key: DIGEST_SECRET_KEY (config.secret_key, read by load_config); without it, a
random key is generated on first use and kept here (key "secret_key"), so links stay
valid across restarts. Setting DIGEST_SECRET_KEY later invalidates the links already
mailed.
"""

from __future__ import annotations

import secrets
from email.utils import formatdate

from digest.store import Store


def secret_key(store: Store, configured: str = "") -> bytes:
    """Return the token key: `configured` (config.secret_key, DIGEST_SECRET_KEY as
    load_config read it), else the one kept in the database (generated on first use)."""
    if configured:
        return configured.encode()
    with store.transaction() as conn:
        # INSERT OR IGNORE then read: two processes starting at once agree on one key.
        conn.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('secret_key', ?)",
            (secrets.token_hex(32),),
        )
        row = conn.execute("SELECT value FROM meta WHERE key = 'secret_key'").fetchone()
    return str(row[0]).encode()


def operator_noted(store: Store, key: str) -> bool:
    """True once the operator has been mailed about `key` (see note_operator)."""
    row = store.db.execute("SELECT 1 FROM meta WHERE key = ?", (f"operator:{key}",)).fetchone()
    return row is not None


def note_operator(store: Store, key: str) -> None:
    """Remember that the operator was mailed about `key` (and when), so it is once."""
    with store.transaction() as conn:
        conn.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
            (f"operator:{key}", formatdate(localtime=False)),
        )
