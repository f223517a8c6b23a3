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

`smtp.connections` sessions (threads, each its own Mailer) take the rendered messages
from one queue, in order; one RateLimiter holds for all of them; the ledger's claim gives
each row to one session only. SIGTERM (`STOP`) or an unreachable server stops them all,
each finishing the message in hand.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Generator, Iterator
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
    RateLimiter,
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
    # One limiter over every session: smtp.rate_per_minute is the relay's limit, for all.
    mailer_options["limiter"] = RateLimiter(config.smtp.rate_per_minute, clock=clock, sleep=sleep)
    sessions = max(1, min(config.smtp.connections, len(todo)))
    mailers = [Mailer(config.smtp, **mailer_options) for _ in range(sessions)]
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
                # pure CPU: any session's will do
                out = mailers[0].prepare(message, sub.email, sub.envelope_from)
            except Exception as e:  # one reader's message cannot be made: theirs only
                why = f"cannot make their message: {type(e).__name__}: {e}"
                yield sub, _NotSent(_one_line(why), failed=True)
                continue
            yield sub, out

    # Rendering runs ahead in a helper thread; the sessions take the prepared messages
    # from it in order, one at a time, and each writes its own outcomes to the ledger
    # (which serialises them).
    loop = _Loop(report, ledger, day, len(todo), wanted is not None, progress)
    loop.items = _ahead(prepared(), READ_AHEAD + 2 * sessions)
    threads = [
        threading.Thread(target=loop.session, args=(m,), name=f"smtp-{i}", daemon=True)
        for i, m in enumerate(mailers)
    ]
    try:
        with ledger.light():
            for t in threads:
                t.start()
            for t in threads:
                while t.is_alive():  # a timed join: the main thread stays responsive to signals
                    t.join(0.2)
    finally:
        loop.halt.set()
        for t in threads:
            t.join()
        loop.items.close()
        for m in mailers:
            m.close()
    if loop.crash is not None:
        raise loop.crash
    report.connections = sum(m.connections for m in mailers)
    if report.stopped:
        report.left = len(todo) - loop.handled
    return report


class _Loop:
    """The shared part of one send's sessions: the queue of prepared messages, the
    report and the ledger, each touched under one lock so counts stay exact."""

    def __init__(
        self,
        report: SendReport,
        ledger: Ledger,
        day: date,
        total: int,
        resending: bool,
        progress: Progress | None,
    ) -> None:
        self.report = report
        self.ledger = ledger
        self.day = day
        self.total = total
        self.resending = resending
        self.progress = progress
        self.items: Generator[tuple[Subscriber, Outgoing | _NotSent], None, None] = _none()
        self.lock = threading.Lock()  # the queue, the report, the counts
        self.halt = threading.Event()  # one session met an unreachable server, or a crash
        self.handled = 0  # messages taken from the queue and settled (any outcome)
        self.crash: BaseException | None = None

    def note(self, address: str, status: str) -> None:
        """Count one message as settled (call under self.lock) and tell `progress`."""
        self.handled += 1
        if self.progress:
            self.progress(self.handled, self.total, address, status)

    def stopping(self) -> bool:
        if STOP.is_set():
            with self.lock:
                self.report.stopped = self.report.stopped or "the process is stopping (SIGTERM)"
            return True
        return self.halt.is_set()

    def take(self) -> tuple[Subscriber, Outgoing] | None:
        """The next message for a session, or None at the end (or when stopping). Readers
        with nothing to send, or whose row another send took, are settled on the way."""
        while not self.stopping():
            with self.lock:
                item = next(self.items, None)
                if item is None:
                    return None
                sub, out = item
                if isinstance(out, _NotSent):
                    if out.failed:
                        self.ledger.failed(self.day, sub.email, None, 0, out.reason)
                        self.report.failed.append((sub.email, out.reason))
                        self.note(sub.email, "failed")
                    else:
                        self.ledger.skipped(self.day, sub.email, out.reason)
                        self.report.skipped.append((sub.email, out.reason.split(" (")[0]))
                        self.note(sub.email, "skipped")
                    continue
                row = self.ledger.get(self.day, sub.email)
                if (
                    row is None
                    or row.status in (DeliveryState.SENT, DeliveryState.SENDING)
                    or (row.status == DeliveryState.UNCERTAIN and not self.resending)
                ):
                    self.report.taken += 1  # another send got there first (a cheap read)
                    self.note(sub.email, "taken")
                    continue
                return sub, out
        return None

    def session(self, mailer: Mailer) -> None:
        """One SMTP session: take a message, send it (the next one's commands pipelined
        behind it), record the outcome; until the queue is empty or the send stops."""
        try:
            current = self.take()
            while current is not None and not self.stopping():
                following = self.take()
                self.send_one(mailer, *current, following[1] if following else None)
                if self.halt.is_set():
                    break
                current = following
        except BaseException as e:  # a bug: stop every session, raise it in the caller
            with self.lock:
                self.crash = self.crash or e
            self.halt.set()
        finally:
            mailer.close()

    def send_one(
        self, mailer: Mailer, sub: Subscriber, out: Outgoing, follow: Outgoing | None
    ) -> None:
        day, ledger, report = self.day, self.ledger, self.report
        claimed = False

        def claim(address: str = sub.email) -> bool:
            nonlocal claimed
            claimed = ledger.claim(day, address, uncertain_too=self.resending)
            return claimed

        try:
            accepted = mailer.send(out, before_dot=claim, follow=follow)
        except NotClaimed:
            with self.lock:
                report.taken += 1
                self.note(sub.email, "taken")
            return
        except PermanentFailure as e:
            if e.sender_refused:  # our MAIL FROM refused: the reader's address is not at fault
                ledger.failed(
                    day,
                    sub.email,
                    e.reply,
                    e.attempts,
                    "the server refused our sender (MAIL FROM)",
                    about_reader=False,
                )
            else:
                ledger.failed(day, sub.email, e.reply, e.attempts, "refused by the server")
            with self.lock:
                report.failed.append((sub.email, e.reply))
                self.note(sub.email, "failed")
            return
        except TemporaryFailure as e:
            ledger.failed(day, sub.email, e.reply, e.attempts, "still refused after retries")
            with self.lock:
                report.failed.append((sub.email, e.reply))
                report.deferred.append(sub.email)
                self.note(sub.email, "failed")
            return
        except Uncertain as e:
            # Never retried: the server may have it. At most one copy, and told.
            ledger.uncertain(day, sub.email, e.reply, e.attempts, out.message_id)
            with self.lock:
                report.uncertain.append((sub.email, e.reply))
                self.note(sub.email, "uncertain")
            return
        except DeliveryError as e:
            if claimed:  # a 4xx to its "." then no server: known not taken, try again
                ledger.failed(day, sub.email, str(e), 1, "the server became unreachable")
            with self.lock:
                report.stopped = report.stopped or str(e)
            self.halt.set()  # the other sessions finish the message in hand and stop
            return
        except Exception as e:  # a bug or a surprise for one reader: theirs only
            why = _one_line(f"cannot send: {type(e).__name__}: {e}")
            # The Mailer raises Uncertain for anything after the ".".
            ledger.failed(day, sub.email, None, 1 if claimed else 0, why)
            with self.lock:
                report.failed.append((sub.email, why))
                self.note(sub.email, "failed")
            return
        # Committed before the next message: a crash from here on cannot resend it.
        ledger.sent(day, sub.email, accepted.reply, accepted.attempts, accepted.message_id)
        with self.lock:
            report.sent.append(sub.email)
            self.note(sub.email, "sent")


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


def _none() -> Generator[Any, None, None]:
    yield from ()


def _ahead(items: Iterator[T], size: int) -> Generator[T, None, None]:
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
