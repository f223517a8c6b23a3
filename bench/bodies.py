"""The CPU time a send spends making its readers' bodies, for the mail benchmarks.

Issue 17's "sender CPU per message" (3.5 ms when it was filed) was measured with the
bodies built apart (one per topic set, 6 ms each, kept in memory): the flattening,
header folding, ledger and SMTP of a message already made. The benchmarks print that
split: the bodies (a reader's papers picked and ranked, the cards with their "why" lines
and feedback links, the frame, both parts quoted-printable: `DigestRenderer._frame`,
`_encode` and `_whole`, which never call one another) and the sender (all the rest of
the process's CPU: the readers, the ledger, headers and MIME parts, the sessions, the
threads). Only a send's render-ahead thread calls them, so its thread time is theirs.
"""

from __future__ import annotations

import time
from typing import Any

_SPENT = [0.0]
_TIMED = ("_frame", "_encode", "_whole")


def time_bodies() -> list[float]:
    """Count the renderer's time making bodies from now on into the returned one-item list
    (seconds; set it to 0 to start again). Safe to call more than once."""
    from digest.render.email import DigestRenderer

    for name in _TIMED:
        method = getattr(DigestRenderer, name)
        if getattr(method, "_timed", False):
            continue

        def run(*args: Any, _method: Any = method, **kwargs: Any) -> Any:
            start = time.thread_time()
            try:
                return _method(*args, **kwargs)
            finally:
                _SPENT[0] += time.thread_time() - start

        run._timed = True  # type: ignore[attr-defined]
        setattr(DigestRenderer, name, run)
    return _SPENT
