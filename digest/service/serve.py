"""`digest serve`: the scheduler and the web server in one process, stopped by SIGTERM.

Order of shutdown: uvicorn stops taking requests and finishes the ones in flight, then
the scheduler stops firing and we wait (up to `grace` seconds) for a running job to
finish its current step. Every step of a job commits on its own (a run is one
transaction, each delivery is committed before the next), so a job cut short by the
grace running out loses nothing already done: its open transaction is rolled back when
the process ends, and the next run picks up.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from types import FrameType

import uvicorn

from digest import stopping
from digest.config import Config
from digest.deliver import digest as send_module
from digest.service.schedule import FetchJob, Scheduler, SendJob
from digest.store import Store
from digest.web.app import create_app

log = logging.getLogger("digest.serve")
GRACE = 8.0  # seconds; below Docker's 10 s between SIGTERM and SIGKILL


def serve(
    config: Config,
    *,
    host: str | None = None,
    port: int | None = None,
    fetch: FetchJob | None = None,
    send: SendJob | None = None,
    grace: float = GRACE,
) -> int:
    """Run until SIGTERM / SIGINT; return the exit code (0 on a clean stop).

    Raises DigestError (ConfigError for [schedule] / [web] keys, or naming the database)
    before anything starts.
    """
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    # APScheduler says "Running job ..." at INFO for every fire; our jobs log what they did.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    scheduler = Scheduler(config, fetch=fetch, send=send)  # refuses bad triggers: no file yet
    Store.open(config.store.database).close()  # create or migrate it before anyone reads
    app = create_app(config, next_runs=scheduler.next_runs)
    server = _Server(
        uvicorn.Config(
            app,
            host=host or config.web.host,
            port=config.web.port if port is None else port,
            lifespan="off",
            # The client address the subscribe rate limit counts: behind a reverse proxy,
            # the one the proxy names, but only from proxies the config trusts.
            proxy_headers=True,
            forwarded_allow_ips=config.web.trusted_proxies,
            access_log=False,  # one line per feed poll is noise; runs log what they did
            timeout_graceful_shutdown=max(1, int(grace / 2)),
            log_config=None,
        ),
        on_started=lambda: _start(scheduler),
    )
    # uvicorn re-raises the signal it caught to the handlers it found once it has
    # stopped; these make that a no-op, so we get to shut the scheduler down and exit 0.
    caught: list[int] = []

    def note(sig: int, _frame: FrameType | None) -> None:
        caught.append(sig)

    previous = {sig: signal.signal(sig, note) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run()  # uvicorn exits 1 itself when it cannot bind (port taken, ...)
    finally:
        _ask_jobs_to_stop()
        finished = scheduler.shutdown(wait=grace)
        send_module.STOP.clear()
        stopping.STOP.clear()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not finished:
        log.warning("a job was still running after %.0f s; stopping it mid-step", grace)
        logging.shutdown()
        sys.stdout.flush()
        os._exit(0)  # its thread would keep the interpreter alive until it ends
    log.info("stopped")
    return 0


def _ask_jobs_to_stop() -> None:
    send_module.STOP.set()  # a send in progress stops after the message in hand
    stopping.STOP.set()  # a fetch stops now: its backoff sleep or request is cut


class _Server(uvicorn.Server):
    """uvicorn's server, calling `on_started` once it listens: no job runs (and no
    catch-up sends mail) from a process that could not bind its port."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # At the signal, not once uvicorn has closed its connections: the running job
        # stops while the web server drains, so the whole stop takes about a second.
        _ask_jobs_to_stop()
        super().handle_exit(sig, frame)

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self.on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self.on_started()


def _start(scheduler: Scheduler) -> None:
    due = scheduler.start()
    log.info(
        "scheduler started (%s); next: %s%s",
        scheduler.tz,
        ", ".join(f"{k} {v:%Y-%m-%d %H:%M %Z}" for k, v in scheduler.next_runs().items() if v),
        f"; catching up: {', '.join(due)}" if due else "",
    )
