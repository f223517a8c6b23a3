"""The day's emails: subscribers -> render each -> deliver through the ledger, exactly once.

Order of work for one day: list who is subscribed, drop those the ledger says are
already sent, queue the rest in the ledger, then for each one render and deliver and
commit the outcome before moving on. A crash or a re-run therefore resends nothing that
was sent; "failed" and "skipped" rows are tried again by the next run of the same day
(a later fetch may have brought papers that match, a refused address may be fixed).
"""

from __future__ import annotations

import importlib
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from email.message import EmailMessage
from typing import Any, TypeVar

from digest.config import Config
from digest.deliver import Mailer, Outgoing, PermanentFailure, TemporaryFailure
from digest.errors import DeliveryError, DigestError
from digest.localtime import local_today
from digest.models import Subscriber
from digest.store import Store
from digest.subscribers import Ledger, active_subscribers, address_key, unknown_topics

# (messages done, messages to do, address, "sent" | "failed" | "skipped")
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
            shown = [f"{a}: {reply}" for a, reply in self.failed[:5]]
            more = len(self.failed) - len(shown)
            line += " (" + "; ".join(shown) + (f"; and {more} more" if more else "") + ")"
        line += f", skipped {len(self.skipped)}"
        if self.skipped:
            reasons = Counter(why for _, why in self.skipped)
            line += " (" + "; ".join(f"{n} {why}" for why, n in reasons.most_common()) + ")"
        line += f", already sent {self.already_sent}"
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
) -> SendReport:
    """Return the SendReport of sending `day`'s digest (default: today in
    schedule.timezone) to everyone not yet sent it.

    `render` defaults to digest.render.email.DigestRenderer over the day's papers.
    `today` (default: today in schedule.timezone) is the only day that claims new papers
    for its edition; a past day resends its own, a later day is refused.
    Never raises for one address; an SMTP server that cannot be reached at all stops
    the send and is reported in `stopped`. Raises ConfigError for a bad config address,
    DigestError for a day after `today`.
    """
    today = today or local_today(config)
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
    done = ledger.of_day(day)
    todo = [
        s
        for s in subscribers
        if (d := done.get(address_key(s.email))) is None or d.status != "sent"
    ]
    report.already_sent = len(subscribers) - len(todo)
    if not todo:
        return report
    ledger.queue(day, [s.email for s in todo])

    gone = {address_key(a): t for a, t in unknown_topics(config, store).items()}
    nothing_today = ""
    if render is None:
        # The day's edition: claimed once, so a re-run mails what the first attempt did.
        papers = store.claim_digest(day, today=today)
        if not papers:
            nothing_today = f"no new papers for {day.isoformat()}"
        # Imported here: sending to a test renderer must not need the templates.
        renderer = importlib.import_module("digest.render.email").DigestRenderer
        render = renderer(config, papers, day).render

    def note(n: int, address: str, status: str) -> None:
        if progress:
            progress(n, len(todo), address, status)

    with Mailer(config.smtp, sleep=sleep, clock=clock, backoff=backoff) as mailer:
        render_one = render

        def prepared() -> Iterator[tuple[Subscriber, Outgoing | str]]:
            for sub in todo:
                if address_key(sub.email) in gone:
                    topics = ", ".join(gone[address_key(sub.email)])
                    yield sub, f"their topics are no longer in the config ({topics})"
                    continue
                message = render_one(sub)
                if message is None:
                    yield sub, nothing_today or "nothing new matched their topics"
                    continue
                yield sub, mailer.prepare(message, sub.email)

        # Rendering runs one step ahead in a helper thread while this one waits on the
        # server; the ledger is written here only, in order.
        for n, (sub, out) in enumerate(_ahead(prepared(), READ_AHEAD), start=1):
            if STOP.is_set():
                report.stopped = "the process is stopping (SIGTERM)"
                report.left = len(todo) - n + 1
                break
            if isinstance(out, str):
                ledger.skipped(day, sub.email, out)
                report.skipped.append((sub.email, out.split(" (")[0]))
                note(n, sub.email, "skipped")
                continue
            try:
                accepted = mailer.send(out)
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
            except DeliveryError as e:
                report.stopped = str(e)
                report.left = len(todo) - n + 1
                break
            # Committed before the next message: a crash from here on cannot resend it.
            ledger.sent(day, sub.email, accepted.reply, accepted.attempts, accepted.message_id)
            report.sent.append(sub.email)
            note(n, sub.email, "sent")
        report.connections = mailer.connections
    return report


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
