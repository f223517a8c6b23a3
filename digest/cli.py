"""The `digest` command: parse arguments, call the library, print. No work of its own."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from typing import Any, NoReturn

import click

from digest import __version__
from digest.config import Config, config_path_from, load_config
from digest.errors import DigestError
from digest.ingest import backfill, ingest, ingest_file, make_fetcher
from digest.models import RunResult
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
    click.echo(f"error: {message}", err=True)
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
    """Load the config and say what is wrong, or that all is well."""
    config = state.config
    where = config.path or "built-in defaults (no config file)"
    click.echo(f"config: {where}")
    click.echo(
        f"  list:      {config.source.list} -> {config.source.url} ({config.source.prefer} first)"
    )
    click.echo(f"  database:  {config.store.database}")
    click.echo(f"  feeds:     {config.feeds.dir} (base URL {config.feeds.base_url})")
    click.echo(f"  topics:    {', '.join(t.name for t in config.topics) or 'none'}")
    smtp = (
        f"{config.smtp.host}:{config.smtp.port}"
        if config.smtp.host
        else "not configured (emails are not sent)"
    )
    click.echo(f"  smtp:      {smtp}")
    click.echo(f"  subscribers in config: {len(config.subscribers)}")
    click.echo("all is well")


def _print_run(result: RunResult) -> None:
    if result.status == "failed":
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
    """Fetch the list once, store the papers not seen before, and say what happened."""
    result = _fetch(state, from_path, url, list_date)
    _print_run(result)


def _fetch(
    state: State, from_path: str | None, url: str | None, list_date: date | None
) -> RunResult:
    from digest.config import LIST_WORDS

    with state.store() as store:
        if from_path:
            return ingest_file(store, from_path, list_date=list_date)
        fetcher = make_fetcher(state.config)
        with fetcher.client:
            return ingest(
                state.config, store, fetcher, url=LIST_WORDS.get(url, url) if url else None
            )


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
    config = state.config
    with state.store() as store:
        fetcher = make_fetcher(config)
        total = ((until or date.today()) - since).days + 1
        with (
            fetcher.client,
            click.progressbar(
                length=max(total, 0), label="backfill", file=sys.stderr, show_pos=True
            ) as bar,
        ):
            result = backfill(
                config,
                store,
                fetcher,
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
@click.option("--search", metavar="TEXT", help="Full-text search in title, abstract, authors.")
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
    result = _fetch(state, from_path, None, None)
    _print_run(result)
