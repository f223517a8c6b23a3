"""The day's emails: subscribers -> render each -> deliver through the ledger, exactly once.

Order of work for one day: list who is subscribed, drop those the ledger says are
already sent (or uncertain), queue the rest in the ledger, then for each one render,
claim its row ("sending", committed) just before the final "." of its message, and commit
the outcome before moving on. A crash or a re-run therefore resends nothing that was
sent; "failed" and "skipped" rows are tried again by the next run of the same day (a later
fetch may have brought papers that match, a refused address may be fixed). A row a crash
left "sending", or a message whose final "." got no reply, is "uncertain": the reader has
at most one copy, the run line says so, and only `digest resend` sends it again.

One reader's trouble (an address that cannot be put on the wire, a renderer error, a
refusal) is recorded as that reader's failure, with the reason, and the send goes on.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from datetime import date
from email.message import EmailMessage
from typing import Any, TypeVar

from digest.addresses import address_key
from digest.clock import local_today
from digest.config import Config
from digest.deliver.editions import due, edition_render
from digest.deliver.smtp import (
    Mailer,
    NotClaimed,
    Outgoing,
    unsendable,
)
from digest.errors import (
    DeliveryError,
    DigestError,
    PermanentFailure,
    TemporaryFailure,
    Uncertain,
)
from digest.models import DeliveryState, Subscriber
from digest.store import Store
from digest.store.readers import Ledger, active_subscribers, unknown_topics

# (messages done, messages to do, address, "sent" | "failed" | "skipped" | "uncertain" |
# "taken" (by another send))
Progress = Callable[[int, int, str, str], None]
Render = Callable[[Subscriber], EmailMessage | None]
T = TypeVar("T")
READ_AHEAD = 8  # messages rendered ahead of the one being sent; bounds the memory held
NO_SMTP = "no SMTP server is configured (set smtp.host or DIGEST_SMTP_HOST)"
# Set by `digest serve` on SIGTERM: a send finishes the message in hand and stops; the
# ledger keeps the rest queued for the next start.
STOP = threading.Event()


@dataclass
class SendReport:
    """What one send did, address by address."""

    day: date
    subscribers: int = 0
    sent: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (address, server reply)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (address, why)
    already_sent: int = 0
    not_sending: str | None = None  # why nothing was attempted (no SMTP server, ...)
    stopped: str | None = None  # why the send stopped part-way; the rest stay queued
    left: int = 0  # not attempted because the send stopped
    connections: int = 0
    deferred: list[str] = field(default_factory=list)  # in `failed`, but only for now (4xx)
    uncertain: list[tuple[str, str]] = field(default_factory=list)  # (address, why), this run
    held_uncertain: int = 0  # uncertain from an earlier run, not resent by this one
    taken: int = 0  # claimed by another send while this one ran (lock bypassed)

    @property
    def ok(self) -> bool:
        """False when the send stopped part-way or some server said "later" (4xx) even
        after our retries: both want another run (the scheduler retries a failed send
        that day). A permanent refusal (5xx) is final and does not count."""
        return self.stopped is None and not self.deferred

    def summary(self) -> str:
        """One line: sent, failed (addresses), skipped (why), already sent."""
        head = f"send {self.day.isoformat()}"
        if self.not_sending:
            return f"{head} skipped: {self.not_sending}; {self.subscribers} subscribers not mailed"
        line = f"{head}: sent {len(self.sent)}, failed {len(self.failed)}"
        if self.failed:
            shown = [f"{_shown(a)}: {reply}" for a, reply in self.failed[:5]]
            more = len(self.failed) - len(shown)
            line += " (" + "; ".join(shown) + (f"; and {more} more" if more else "") + ")"
        line += f", skipped {len(self.skipped)}"
        if self.skipped:
            reasons = Counter(why for _, why in self.skipped)
            line += " (" + "; ".join(f"{n} {why}" for why, n in reasons.most_common()) + ")"
        line += f", already sent {self.already_sent}"
        if self.uncertain:
            shown = [f"{_shown(a)}: {why}" for a, why in self.uncertain[:5]]
            more = len(self.uncertain) - len(shown)
            line += f", uncertain {len(self.uncertain)} (" + "; ".join(shown)
            line += (f"; and {more} more" if more else "") + ")"
        if self.uncertain or self.held_uncertain:
            line += (
                f"; {len(self.uncertain) + self.held_uncertain} uncertain (maybe delivered) "
                "not resent: see `digest deliveries`, resend with `digest resend`"
            )
        if self.taken:
            line += f"; {self.taken} taken by another send"
        if self.deferred:
            line += f"; {len(self.deferred)} refused for now (4xx), to be tried again later"
        if self.stopped:
            line += f"; STOPPED: {self.stopped}; {self.left} left queued for the next run"
        return line


def send_digests(
    config: Config,
    store: Store,
    day: date | None = None,
    *,
    render: Render | None = None,
    progress: Progress | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    backoff: float = 1.0,
    today: date | None = None,
    resend: Collection[str] | None = None,
    data_timeout: float | None = None,
) -> SendReport:
    """Return the SendReport of sending `day`'s digest (default: today in
    schedule.timezone) to everyone not yet sent it.

    `render` defaults to digest.render.email.DigestRenderer over the day's papers.
    `today` (default: today in schedule.timezone) is the only day that claims new papers
    for its edition; a past day resends its own, a later day is refused.
    `resend`: the operator's resend (`digest resend`): only these addresses, and their
    "uncertain" rows too. `data_timeout` (default RFC 5321's 10 minutes): how long to wait
    for the reply to a message's final ".".
    Never raises for one address; an SMTP server that cannot be reached at all stops
    the send and is reported in `stopped`. Raises ConfigError for a bad config address,
    DigestError for a day after `today`.
    Call it under the run lock: it settles rows a crashed run left "sending".
    """
    today = today or local_today(config.schedule.timezone)
    day = day or today
    report = SendReport(day=day)
    if day > today:  # it would mail today's papers, unclaimed, under a later date
        raise DigestError(
            f"--date {day.isoformat()}: that day has not come yet "
            f"(today is {today.isoformat()} in schedule.timezone)"
        )
    subscribers = active_subscribers(config, store)
    report.subscribers = len(subscribers)
    if not config.smtp.host:
        report.not_sending = NO_SMTP
        return report
    if not subscribers:
        report.not_sending = "no subscribers (add some with `digest subscribers add`)"
        return report

    ledger = Ledger(store)
    ledger.settle_in_flight()  # under the run lock: a "sending" row is a crashed run's
    done = ledger.of_day(day)
    wanted = None if resend is None else {address_key(a) for a in resend}
    todo: list[Subscriber] = []
    for sub in subscribers:
        key = address_key(sub.email)
        status = d.status if (d := done.get(key)) is not None else None
        if wanted is not None and key not in wanted:
            continue
        if not due(config, sub, day) and status is None:
            continue  # a weekly reader, on another day than schedule.weekly_day
        if status == DeliveryState.SENT:
            report.already_sent += 1
        elif status == DeliveryState.UNCERTAIN and wanted is None:
            report.held_uncertain += 1
        else:
            todo.append(sub)
    if resend is not None:
        subscribed = {address_key(sub.email) for sub in subscribers}
        for address in resend:
            if address_key(address) not in subscribed:
                report.skipped.append((address, "not an active subscriber"))
    if not todo:
        return report
    ledger.queue(day, [s.email for s in todo])

    gone = {address_key(a): t for a, t in unknown_topics(config, store).items()}
    nothing_today = ""
    if render is None:
        # The day's edition: claimed once, so a re-run mails what the first attempt did.
        papers = store.claim_digest(day, today=today)
        # A weekly reader's email (and a daily one's just back from weekly) holds earlier
        # editions too; the ledger keeps where each starts. (edition_render imports the
        # renderer only now: sending to a test renderer must not need the templates.)
        by_edition = edition_render(config, store, day, papers, todo)
        ledger.cover(day, by_edition.covers())
        if not by_edition.days:  # no edition any reader's email takes has a paper
            nothing_today = f"no new papers for {day.isoformat()}"
        render = by_edition.render

    def note(n: int, address: str, status: str) -> None:
        if progress:
            progress(n, len(todo), address, status)

    mailer_options: dict[str, Any] = {"sleep": sleep, "clock": clock, "backoff": backoff}
    if data_timeout is not None:
        mailer_options["data_timeout"] = data_timeout
    with Mailer(config.smtp, **mailer_options) as mailer:
        render_one = render

        def prepared() -> Iterator[tuple[Subscriber, Outgoing | _NotSent]]:
            for sub in todo:
                if address_key(sub.email) in gone:
                    topics = ", ".join(gone[address_key(sub.email)])
                    yield sub, _NotSent(f"their topics are no longer in the config ({topics})")
                    continue
                bad = unsendable(sub.email)
                if bad:
                    yield sub, _NotSent(bad, failed=True)
                    continue
                try:
                    message = render_one(sub)
                    if message is None:
                        yield sub, _NotSent(nothing_today or "nothing new matched their topics")
                        continue
                    out = mailer.prepare(message, sub.email, sub.envelope_from)
                except Exception as e:  # one reader's message cannot be made: theirs only
                    why = f"cannot make their message: {type(e).__name__}: {e}"
                    yield sub, _NotSent(_one_line(why), failed=True)
                    continue
                yield sub, out

        # Rendering runs one step ahead in a helper thread while this one waits on the
        # server; the ledger is written here only, in order.
        for n, (sub, out) in enumerate(_ahead(prepared(), READ_AHEAD), start=1):
            if STOP.is_set():
                report.stopped = "the process is stopping (SIGTERM)"
                report.left = len(todo) - n + 1
                break
            if isinstance(out, _NotSent):
                if out.failed:
                    ledger.failed(day, sub.email, None, 0, out.reason)
                    report.failed.append((sub.email, out.reason))
                    note(n, sub.email, "failed")
                else:
                    ledger.skipped(day, sub.email, out.reason)
                    report.skipped.append((sub.email, out.reason.split(" (")[0]))
                    note(n, sub.email, "skipped")
                continue
            row = ledger.get(day, sub.email)
            if (
                row is None
                or row.status in (DeliveryState.SENT, DeliveryState.SENDING)
                or (row.status == DeliveryState.UNCERTAIN and wanted is None)
            ):
                report.taken += 1  # another send got there first (a cheap read, no commit)
                note(n, sub.email, "taken")
                continue
            claimed = False

            def claim(address: str = sub.email) -> bool:
                nonlocal claimed
                claimed = ledger.claim(day, address, uncertain_too=wanted is not None)
                return claimed

            try:
                accepted = mailer.send(out, before_dot=claim)
            except NotClaimed:
                report.taken += 1
                note(n, sub.email, "taken")
                continue
            except PermanentFailure as e:
                ledger.failed(day, sub.email, e.reply, e.attempts, "refused by the server")
                report.failed.append((sub.email, e.reply))
                note(n, sub.email, "failed")
                continue
            except TemporaryFailure as e:
                ledger.failed(day, sub.email, e.reply, e.attempts, "still refused after retries")
                report.failed.append((sub.email, e.reply))
                report.deferred.append(sub.email)
                note(n, sub.email, "failed")
                continue
            except Uncertain as e:
                # Never retried: the server may have it. At most one copy, and told.
                ledger.uncertain(day, sub.email, e.reply, e.attempts, out.message_id)
                report.uncertain.append((sub.email, e.reply))
                note(n, sub.email, "uncertain")
                continue
            except DeliveryError as e:
                if claimed:  # a 4xx to its "." then no server: known not taken, try again
                    ledger.failed(day, sub.email, str(e), 1, "the server became unreachable")
                report.stopped = str(e)
                report.left = len(todo) - n + 1
                break
            except Exception as e:  # a bug or a surprise for one reader: theirs only
                why = _one_line(f"cannot send: {type(e).__name__}: {e}")
                if claimed:  # the Mailer raises Uncertain for anything after the "."
                    ledger.failed(day, sub.email, None, 1, why)
                else:
                    ledger.failed(day, sub.email, None, 0, why)
                report.failed.append((sub.email, why))
                note(n, sub.email, "failed")
                continue
            # Committed before the next message: a crash from here on cannot resend it.
            ledger.sent(day, sub.email, accepted.reply, accepted.attempts, accepted.message_id)
            report.sent.append(sub.email)
            note(n, sub.email, "sent")
        report.connections = mailer.connections
    return report


@dataclass(frozen=True)
class _NotSent:
    """A reader with no message: skipped (nothing for them) or failed (it cannot be made)."""

    reason: str
    failed: bool = False


def _shown(address: str) -> str:
    """The address for the run line: control characters escaped, so it stays one line."""
    return address if not unsendable(address) else ascii(address)


def _one_line(text: str) -> str:
    return " ".join(text.split())[:300]


def _ahead(items: Iterator[T], size: int) -> Iterator[T]:
    """Yield what `items` yields, in order, computed by a helper thread up to `size` ahead.

    An exception in `items` is raised here; leaving the loop early stops the helper.
    """
    slots: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=size)
    stop = threading.Event()
    end = object()

    def put(entry: tuple[bool, Any]) -> bool:
        while not stop.is_set():
            try:
                slots.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put((True, item)):
                    return
            put((True, end))
        except BaseException as e:  # handed to the consumer, raised there
            put((False, e))

    helper = threading.Thread(target=work, name="render-ahead", daemon=True)
    helper.start()
    try:
        while True:
            ok, item = slots.get()
            if not ok:
                raise item
            if item is end:
                return
            yield item
    finally:
        stop.set()
        helper.join()
