"""The `digest` command: parse arguments, call the library, print. No work of its own."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import date
from typing import Any, NoReturn

import click

from digest import __version__
from digest.config import Config, ConfigProblems, config_path_from, load_config
from digest.errors import DigestError, KeywordsError
from digest.models import RunResult, RunStatus
from digest.store import Store


class State:
    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self._config: Config | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(config_path_from(self.config_path))
        return self._config

    @contextmanager
    def store(self) -> Iterator[Store]:
        store = Store.open(self.config.store.database)
        try:
            yield store
        finally:
            store.close()


def _fail(message: str) -> NoReturn:
    # A config with several problems says each on its own line.
    for line in message.splitlines() or [""]:
        click.echo(f"error: {line}", err=True)
    sys.exit(1)


class DigestGroup(click.Group):
    """Turns any DigestError into one line on stderr and exit code 1, no traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DigestError as e:
            _fail(str(e))


def _date(_ctx: click.Context, _param: click.Parameter, value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date like 2025-03-04") from None


@click.group(cls=DigestGroup)
@click.option(
    "--config",
    "config_path",
    metavar="PATH",
    envvar="DIGEST_CONFIG",
    help="Config file (default: ./config.toml if present, else built-in defaults).",
)
@click.version_option(__version__, prog_name="papers-digest")
@click.pass_context
def main(ctx: click.Context, config_path: str | None) -> None:
    """papers-digest: Hugging Face Daily Papers as feeds and a daily email."""
    ctx.obj = State(config_path)


@main.command()
@click.pass_obj
def check(state: State) -> None:
    """Load the config and say what is wrong (every problem, with file, line and key),
    or that all is well."""
    try:
        config = state.config
    except ConfigProblems as e:
        for problem in e.problems:
            click.echo(f"error: {problem}", err=True)
        n = len(e.problems)
        _fail(f"{n} problem{'s' if n > 1 else ''} in the config; nothing was run")
    where = config.path or "built-in defaults (no config file)"
    click.echo(f"config: {where}")
    click.echo(
        f"  list:      {config.source.list} -> {config.source.url} ({config.source.prefer} first)"
    )
    click.echo(f"  database:  {config.store.database}")
    click.echo(f"  feeds:     {config.feeds.dir} (base URL {config.feeds.base_url})")
    click.echo(f"  topics:    {', '.join(t.name for t in config.topics) or 'none'}")
    seeds_note = _seeds_note(config)
    if seeds_note:
        click.echo(f"  seeds:     {seeds_note}")
    smtp = (
        f"{config.smtp.host}:{config.smtp.port}"
        if config.smtp.host
        else "not configured (emails are not sent)"
    )
    click.echo(f"  smtp:      {smtp}")
    readers, weekly = _readers(config)
    if config.smtp.host:
        from digest.deliver.smtp import rate_note

        click.echo(f"  rate:      {rate_note(config.smtp, readers)}")
    click.echo(f"  subscribers in config: {len(config.subscribers)}")
    from digest.deliver.dkim import dkim_signer

    b = config.bounces
    mailbox = (
        f"{b.imap_user} at {b.imap_host}:{b.imap_port} ({b.folder}), every {b.poll_minutes} min"
        if b.imap_host
        else "no mailbox (envelope sender smtp.sender, no unsubscribe mailto)"
    )
    webhook = "on" if b.webhook_secret else "off (no secret)"
    click.echo(
        f"  bounces:   {mailbox}; webhook {webhook}; bouncing after {config.smtp.max_bounces} days"
    )
    if dkim_signer(config.smtp) is not None:  # a broken key is an error here, not at send
        click.echo(
            f"  dkim:      selector {config.smtp.dkim_selector}, {config.smtp.dkim_key_file}"
        )
    from digest.clock import schedule_timezone

    s = config.schedule
    click.echo(
        f"  schedule:  fetch '{s.fetch}', send {s.send_time} {','.join(s.send_days)} "
        f"({schedule_timezone(config.schedule.timezone)}); weekly readers ({weekly} of "
        f"{readers}) on {s.weekly_day}"
    )
    click.echo("all is well")


def _seeds_note(config: Config) -> str:
    """How many like-topic seeds the send can use, and which are missing (read-only; the
    fetch is `digest topics like`'s, so `check` never goes to the network)."""
    from pathlib import Path

    from digest.deliver.likes import missing_seeds, seed_ids

    ids = seed_ids(config)
    if not ids:
        return ""
    if not Path(config.store.database).is_file():
        return f"{len(ids)} seed papers, none stored yet (run `digest topics like`)"
    try:
        store = Store.open(config.store.database, read_only=True)
    except DigestError:
        return f"{len(ids)} seed papers (the database cannot be read)"
    try:
        missing = missing_seeds(config, store)
    finally:
        store.close()
    if not missing:
        return f"{len(ids)} seed papers, all stored"
    return (
        f"{len(ids)} seed papers, {len(missing)} neither in the archive nor fetched "
        f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}): "
        "run `digest topics like`"
    )


def _readers(config: Config) -> tuple[int, int]:
    """How many readers a send mails (the config's, plus the database's when there is
    one, opened read-only: `check` creates nothing), and how many of them weekly."""
    from pathlib import Path

    from digest.models import SubscriberStatus
    from digest.store.readers import list_subscribers

    def in_config() -> tuple[int, int]:
        subs = config.subscribers
        return len(subs), sum(1 for s in subs if s.frequency == "weekly")

    if not Path(config.store.database).is_file():
        return in_config()
    try:
        store = Store.open(config.store.database, read_only=True)
    except DigestError:
        return in_config()
    try:
        rows = [r for r in list_subscribers(config, store) if r.status == SubscriberStatus.ACTIVE]
    finally:
        store.close()
    return len(rows), sum(1 for r in rows if r.frequency == "weekly")


def _print_run(result: RunResult) -> None:
    if result.status == RunStatus.FAILED:
        click.echo(result.summary(), err=True)
        sys.exit(1)
    click.echo(result.summary())


@main.command()
@click.option(
    "--from",
    "from_path",
    metavar="PATH",
    help="Read a saved page or API response instead of the network.",
)
@click.option(
    "--url", metavar="URL|daily|trending", help="Fetch this list instead of the configured one."
)
@click.option(
    "--date",
    "list_date",
    callback=_date,
    metavar="YYYY-MM-DD",
    help="With --from: the day the saved list is for, if it does not say.",
)
@click.pass_obj
def fetch(state: State, from_path: str | None, url: str | None, list_date: date | None) -> None:
    """Fetch the list once, store the papers not seen before, rebuild the feeds."""
    from digest.jobs import fetch_job

    report = fetch_job(state.config, from_path=from_path, url=url, list_date=list_date)
    failed = report.status == RunStatus.FAILED
    click.echo(report.summary(), err=failed)
    if failed:
        sys.exit(1)


@main.command(name="backfill")
@click.option("--since", callback=_date, required=True, metavar="YYYY-MM-DD")
@click.option("--until", callback=_date, metavar="YYYY-MM-DD", help="Default: today (UTC).")
@click.option("--concurrency", type=click.IntRange(1, 8), help="Requests in flight (default 2).")
@click.option("--source", type=click.Choice(["api", "page"]), help="Default: the API.")
@click.pass_obj
def backfill_cmd(
    state: State, since: date, until: date | None, concurrency: int | None, source: str | None
) -> None:
    """Fetch past days' lists; days already stored are skipped, so it resumes."""
    from digest.jobs import backfill_job, backfill_span

    total = backfill_span(since, until)
    with click.progressbar(length=total, label="backfill", file=sys.stderr, show_pos=True) as bar:
        result = backfill_job(
            state.config,
            since,
            until,
            concurrency=concurrency,
            source=source,
            progress=lambda _d, _r: bar.update(1),
        )
    click.echo(result.summary())
    if result.failed:
        sys.exit(1)


@main.command()
@click.option("--since", callback=_date, metavar="YYYY-MM-DD")
@click.option(
    "--search", metavar="TEXT", help="Full-text search in title, abstract, authors, AI keywords."
)
@click.option("--limit", type=int, default=50, show_default=True)
@click.pass_obj
def papers(state: State, since: date | None, search: str | None, limit: int) -> None:
    """List stored papers, newest first."""
    with state.store() as store:
        rows = store.papers(since=since, search=search, limit=limit)
        total = store.count_papers()
    for sp in rows:
        p = sp.paper
        day = p.daily_date.isoformat() if p.daily_date else "?"
        click.echo(f"{p.id:<12} {day}  {p.upvotes:>4}^  {p.title}")
    click.echo(f"{len(rows)} shown of {total} stored", err=True)


@main.command()
@click.option(
    "--from",
    "from_path",
    metavar="PATH",
    help="Read a saved page or API response instead of the network.",
)
@click.pass_obj
def run(state: State, from_path: str | None) -> None:
    """The daily job: fetch, store, rebuild the feeds, send the emails."""
    from digest.jobs import run_job

    with _send_progress() as progress:
        report = run_job(state.config, from_path=from_path, progress=progress)
    click.echo(report.summary(), err=not report.ok)
    if not report.ok:
        sys.exit(1)


@contextmanager
def _send_progress() -> Iterator[Callable[[int, int, str, str], None]]:
    """A progress bar on stderr for a send, shown once there is something to send."""
    with ExitStack() as stack:
        bars: list[Any] = []

        def progress(done: int, total: int, _address: str, _status: str) -> None:
            if not bars:
                bar = click.progressbar(length=total, label="send", file=sys.stderr, show_pos=True)
                bars.append(stack.enter_context(bar))
            bars[0].update(1)

        yield progress


# -- subscribers and the email send (issue 4) -----------------------------------------


@main.group()
def subscribers() -> None:
    """Add, list and remove the subscribers kept in the database."""


@subscribers.command(name="add")
@click.argument("address")
@click.option("--topics", default="", metavar="A,B", help="Topic names (default: every paper).")
@click.option(
    "--weekly", is_flag=True, help="The week's papers on schedule.weekly_day, not every day."
)
@click.pass_obj
def subscribers_add(state: State, address: str, topics: str, weekly: bool) -> None:
    """Subscribe ADDRESS (or re-subscribe it with new topics; a bouncing one is mailed
    again, as `subscribers activate` does)."""
    from digest.addresses import address_key
    from digest.store.readers import add_subscriber, bouncing_addresses

    frequency = "weekly" if weekly else "daily"
    with state.store() as store:
        was = bouncing_addresses(store, state.config.smtp.max_bounces)
        row = add_subscriber(state.config, store, address, topics.split(","), frequency)
    chosen = ", ".join(row.topics) or "every paper"
    again = " (was bouncing: its bounces are cleared)" if address_key(row.email) in was else ""
    click.echo(f"subscribed {row.email}: {chosen}" + (" (weekly)" if weekly else "") + again)


@subscribers.command(name="list")
@click.pass_obj
def subscribers_list(state: State) -> None:
    """List subscribers from the config and the database: address, status, where the
    entry lives, topics, frequency, keywords and last delivery."""
    from digest.addresses import address_key
    from digest.models import SubscriberStatus
    from digest.store.readers import Ledger, list_subscribers

    def one_line(text: str) -> str:
        return " ".join(text.split())

    with state.store() as store:
        rows = list_subscribers(state.config, store)
        last = Ledger(store).last_sent()
    # One reader a line, tab-separated (for cut and awk): address, status, source,
    # topics ("*": every paper), frequency, keywords ("-": none), last delivery.
    for r in rows:
        sent = last.get(address_key(r.email))
        cells = (
            r.email if r.email.isprintable() else ascii(r.email),
            str(r.status),
            r.source,
            ",".join(r.topics) or "*",
            r.frequency,
            one_line(r.keywords) or "-",
            f"last sent {sent.day.isoformat()}" if sent else "never sent",
        )
        click.echo("\t".join(cells))
    active = sum(1 for r in rows if r.status == SubscriberStatus.ACTIVE)
    bouncing = sum(1 for r in rows if r.status == SubscriberStatus.BOUNCING)
    note = f" ({bouncing} bouncing: not mailed, see `digest subscribers activate`)"
    click.echo(f"{active} active of {len(rows)} subscribers{note if bouncing else ''}", err=True)


@subscribers.command(name="activate")
@click.argument("address")
@click.pass_obj
def subscribers_activate(state: State, address: str) -> None:
    """Mail a bouncing ADDRESS again (its bounces stop counting)."""
    from digest.store.readers import activate_subscriber

    with state.store() as store:
        row, cleared = activate_subscriber(state.config, store, address)
    click.echo(f"{row.email} is active: {cleared} days of bounces cleared")


@subscribers.command(name="import")
@click.argument("csv_file", metavar="FILE.csv", type=click.Path(dir_okay=False))
@click.pass_obj
def subscribers_import(state: State, csv_file: str) -> None:
    """Add the readers of FILE.csv (columns email, topics, frequency; a header line first)
    in one transaction; say which rows were refused and why. Readers who unsubscribed
    stay unsubscribed (named, not counted as refused)."""
    from digest.jobs import read_subscribers_csv
    from digest.store.readers import import_subscribers

    rows = read_subscribers_csv(csv_file)
    with state.store() as store:
        report = import_subscribers(state.config, store, rows)
    for line, address, why in report.refused:
        click.echo(f"{csv_file}:{line}: refused {address or '(no address)'}: {why}", err=True)
    for line, address, since in report.kept_unsubscribed:
        click.echo(
            f"{csv_file}:{line}: kept unsubscribed {address}: they unsubscribed"
            f"{' on ' + since if since else ''}; `digest subscribers add {address}` "
            "subscribes them again, if they asked",
            err=True,
        )
    click.echo(report.summary())
    if report.refused:
        sys.exit(1)


@subscribers.command(name="remove")
@click.argument("address")
@click.pass_obj
def subscribers_remove(state: State, address: str) -> None:
    """Unsubscribe ADDRESS (its record and delivery history stay)."""
    from digest.store.readers import remove_subscriber

    with state.store() as store:
        row = remove_subscriber(state.config, store, address)
    click.echo(f"unsubscribed {row.email}")


@main.command()
@click.option(
    "--date",
    "day",
    callback=_date,
    metavar="YYYY-MM-DD",
    help="Default: today in schedule.timezone.",
)
@click.pass_obj
def send(state: State, day: date | None) -> None:
    """Email the day's digest to every subscriber not yet sent it; say what happened."""
    from digest.jobs import send_job

    with _send_progress() as progress:
        report = send_job(state.config, day, progress=progress, hold_back=False)
    click.echo(report.summary())
    if not report.ok:
        sys.exit(1)


@main.command(name="bounces")
@click.pass_obj
def bounces_cmd(state: State) -> None:
    """Read the bounces mailbox ([bounces] imap_host): count bounces, act on unsubscribes."""
    from digest.jobs import bounces_job

    report = bounces_job(state.config)
    click.echo(report.summary())
    if report.not_polled:
        sys.exit(1)


# -- the delivery ledger: what needs a look, and the operator's resend --------------


@main.command()
@click.option("--date", "day", callback=_date, metavar="YYYY-MM-DD", help="Default: every day.")
@click.option("--all", "show_all", is_flag=True, help="Every row, the sent ones too.")
@click.pass_obj
def deliveries(state: State, day: date | None, show_all: bool) -> None:
    """List deliveries that need a look: uncertain (maybe delivered), failed, in flight."""
    from digest.models import DeliveryState as S
    from digest.store.readers import Ledger

    shown = [S.UNCERTAIN, S.SENDING, S.FAILED] + ([S.QUEUED, S.SKIPPED, S.SENT] if show_all else [])
    with state.store() as store:
        rows = Ledger(store).rows(shown, day)
    for d in rows:
        why = "; ".join(x for x in (d.reply, d.reason) if x)
        email = d.email if d.email.isprintable() else ascii(d.email)  # one line per row
        click.echo(f"{d.day.isoformat()}\t{d.status}\t{email}\t{why}")
    counts = {s: sum(1 for d in rows if d.status == s) for s in shown}
    click.echo(", ".join(f"{n} {s}" for s, n in counts.items()), err=True)


@main.command()
@click.argument("addresses", nargs=-1, metavar="[ADDRESS]...")
@click.option(
    "--date",
    "day",
    callback=_date,
    metavar="YYYY-MM-DD",
    help="The digest's day. Default: today in schedule.timezone.",
)
@click.pass_obj
def resend(state: State, addresses: tuple[str, ...], day: date | None) -> None:
    """Send the day's digest again, on purpose, to ADDRESS (default: to every reader whose
    delivery that day is uncertain). A delivery the server accepted is never sent again."""
    from digest.jobs import resend as resend_job

    with _send_progress() as progress_bar:
        report = resend_job(state.config, addresses, day, progress=progress_bar)
    click.echo(report.summary())
    if not report.ok:
        sys.exit(1)


# -- topics (issue 3) ------------------------------------------------------------------


@main.group()
def topics() -> None:
    """Try keyword topics against the stored papers."""


@topics.command(name="test")
@click.argument("name", required=False)
@click.option(
    "--keywords",
    metavar='"A, B*, \\"A PHRASE\\""',
    help="Try these terms instead of a configured topic (a quoted part is a phrase).",
)
@click.option(
    "--days",
    type=int,
    default=30,
    show_default=True,
    help="Papers on the daily list, or first stored, in the last N days (today included).",
)
@click.pass_obj
def topics_test(state: State, name: str | None, keywords: str | None, days: int) -> None:
    """Show which stored papers topic NAME (or --keywords) would match, and why."""
    from digest.jobs import try_topic
    from digest.topics import parse_keywords

    if (name is None) == (keywords is None):
        raise click.UsageError("give either a topic NAME or --keywords (one of the two)")
    try:
        topic = parse_keywords(keywords) if keywords is not None else state.config.topic(name or "")
    except KeywordsError as e:
        raise DigestError(f"--keywords {e}") from None  # the library names the value
    with state.store() as store:
        trial = try_topic(
            store, topic, days=days, label="--keywords" if keywords else "", config=state.config
        )
    from digest.topics import term_context

    for sp, match in trial.matches:
        p = sp.paper
        day = p.daily_date.isoformat() if p.daily_date else "?"
        click.echo(f"{p.id:<12} {day}  {p.upvotes:>4}^  {p.title}")
        click.echo(f"{'':<12} matched: {', '.join(match.terms)}")
        for term in match.terms:
            context = term_context(p, term)
            if context:
                click.echo(f"{'':<14}{term}: {context}")
    if trial.removed:
        click.echo("removed by the filters:")
    for sp, removed in trial.removed:
        p = sp.paper
        day = p.daily_date.isoformat() if p.daily_date else "?"
        click.echo(f"{p.id:<12} {day}  {p.upvotes:>4}^  {p.title}")
        click.echo(f"{'':<12} matched: {', '.join(removed.terms)}; removed by {removed.detail}")
    if trial.below:
        click.echo(f"closest under min_similarity {topic.min_similarity:.2f}:")
    for sp, score, why in trial.below:
        p = sp.paper
        click.echo(f"{p.id:<12} {score:.3f}  {p.title}")
        click.echo(f"{'':<12} {why}")
    click.echo(trial.summary())


@topics.command(name="vectors")
@click.option("--rebuild", is_flag=True, help="Build the vocabulary anew from every stored paper.")
@click.pass_obj
def topics_vectors(state: State, rebuild: bool) -> None:
    """Make the paper vectors like-topics compare (new papers get theirs when stored)."""
    from digest.deliver.likes import rebuild_vocabulary, refresh_vectors

    with state.store() as store:
        made = rebuild_vocabulary(store) if rebuild else refresh_vectors(store)
    click.echo(f"{made} paper vectors made")


@topics.command(name="like")
@click.argument("name", required=False)
@click.option(
    "--from",
    "bib",
    metavar="LIBRARY.bib",
    type=click.Path(dir_okay=False),
    help="A BibTeX file (a Zotero export): print the `like` line for topic NAME.",
)
@click.pass_obj
def topics_like(state: State, name: str | None, bib: str | None) -> None:
    """Fetch, once, the seed papers of like-topics that are not in the archive (so a send
    never needs the network); with --from, read arXiv ids from a BibTeX file and print the
    `like = [...]` line to paste into topic NAME's [[topics]] table."""
    from digest.deliver.likes import fetch_seeds, seed_ids
    from digest.jobs import make_fetcher

    config = state.config
    ids = seed_ids(config)
    if bib is not None:
        from digest.bibtex import arxiv_ids

        if not name:
            raise click.UsageError("--from needs the topic NAME the seeds are for")
        found, problems = arxiv_ids(bib)
        for problem in problems:
            click.echo(problem, err=True)
        if not found:
            _fail(f"{bib}: no arXiv ids found")
        ids = found
    fetcher = make_fetcher(config)
    with state.store() as store, fetcher.client:
        problems = fetch_seeds(config, store, fetcher, ids)
    for problem in problems:
        click.echo(problem, err=True)
    if bib is not None:
        quoted = ", ".join(f'"{i}"' for i in ids)
        click.echo(f"# [[topics]] name = {name!r}: {len(ids)} seed papers from {bib}")
        click.echo(f"like = [{quoted}]")
    else:
        click.echo(f"{len(ids) - len(problems)} of {len(ids)} seed papers ready")
    if problems:
        sys.exit(1)


# -- serve (issue 5) -------------------------------------------------------------------


@main.command()
@click.option("--host", metavar="H", help="Address to listen on (default: web.host, 127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65535), help="Port (default: web.port, 8000).")
@click.pass_obj
def serve(state: State, host: str | None, port: int | None) -> None:
    """Run the scheduler and the web server in one process, until SIGTERM or Ctrl-C."""
    from digest.service.serve import serve as run_serve

    sys.exit(run_serve(state.config, host=host, port=port))


# -- email preview (issue 4) -----------------------------------------------------------


@main.command()
@click.option("--to", "address", required=True, metavar="ADDRESS", help="Whose digest to show.")
@click.option(
    "--date",
    "day",
    callback=_date,
    metavar="YYYY-MM-DD",
    help="Default: today in schedule.timezone, the day `digest send` sends for.",
)
@click.option(
    "--out",
    "out_dir",
    default=".",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder for the .eml and .html files.",
)
@click.pass_obj
def preview(state: State, address: str, day: date | None, out_dir: str) -> None:
    """Write the digest `digest send` would send ADDRESS as .eml and .html files, without
    sending it; print their paths."""
    from pathlib import Path

    from digest.jobs import preview as preview_job

    with state.store() as store:
        result = preview_job(state.config, store, address, day, Path(out_dir))
    if result.eml is None:
        _fail(f"no email for {address} on {result.day.isoformat()}: {result.reason}")
    click.echo(str(result.eml))
    click.echo(str(result.html))
