"""Benchmark: the reading pages and the reads behind them, on synthetic archives of 10,000,
50,000 and 200,000 papers (bench/archive.py: clones of the real captures, 50 a day).

Run: .venv/bin/python bench/web.py [--sizes 10000,50000,200000] [--seconds 5]
                                   [--connections 32] [--skip-wrk]

Part 1, growth (in this process, best of --repeats calls, each size after a warm-up):
  papers --search language   Store.papers(search=, limit=50), as `digest papers` runs it
  topics test                jobs.try_topic over 30 days (topic: agent*, "tool use")
  /healthz reads             store.runs.health_facts
  newest paper               what every fetch asks before writing the feeds; also on the
                             archive with all but its last 30 days backfilled (a new
                             install that ran `digest backfill`), rolled back after
Each beside the statement it replaced (the baseline, run in the same process on the same
file): the search sorted every match before its LIMIT, the 30-day window was an OR that
walked the first_seen index, /healthz counted the table, and the newest paper was found by
sorting every paper that is not backfilled. The figure to read is the growth from 10k to
200k (flat: about 1x) and the baseline's growth beside it.

Part 2, load (the 200,000-paper archive): `digest serve` (one process, as in the image)
and nginx (one worker) serving a static copy of the same pages, fetched from digest serve
just before. wrk, --connections keep-alive connections, --seconds per page, one thread:
  /  (the latest edition ranked)   /topics/agents   /archive/<newest day>
  /search?q=language+model         /healthz
and /healthz alone at every size (req/s: flat is the point).
Targets (issue 16): median < 50 ms and p99 < 200 ms for each page under 32 clients.
The client shares the 2 cores with the server. Pages are built once per store version
(a fetch changes it) and then served from memory; a search for a new query costs the
store's search (part 1's first line is the CLI's, the search page's own cost is printed
as "search, uncached").
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from archive import build  # bench/archive.py: `python bench/web.py` puts bench/ on the path

from digest.config import TopicConfig
from digest.jobs import try_topic
from digest.store import Store, row_to_stored
from digest.store.fts import match_or_nothing
from digest.store.runs import health_facts
from digest.store.search import search
from digest.topics import Matcher

CACHE = Path(tempfile.gettempdir()) / "papers-digest-bench"
TOPIC = TopicConfig(name="agents", title="LLM agents", keywords=["agent*"], phrases=["tool use"])


def best_ms(work: Callable[[], Any], repeats: int) -> float:
    """The best of `repeats` timed calls, in ms (as timeit does: on a shared machine the
    other processes only ever add time, so the minimum is the figure that repeats)."""
    work()  # warm-up: the page cache of the file, SQLite's statement cache
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        work()
        times.append(time.perf_counter() - t0)
    return min(times) * 1000


def old_search(store: Store) -> int:
    rows = store.db.query(
        "SELECT * FROM papers WHERE rowid IN (SELECT rowid FROM papers_search "
        "WHERE papers_search MATCH ?) ORDER BY first_seen DESC, daily_date DESC, upvotes DESC, "
        "id LIMIT 50",
        [match_or_nothing("language")],
    )
    return len([row_to_stored(r) for r in rows])


def old_topics(store: Store, since: str) -> int:
    rows = store.db.query(
        "SELECT * FROM papers WHERE (daily_date >= ? OR first_seen >= ?) "
        "ORDER BY first_seen DESC, daily_date DESC, upvotes DESC, id",
        [since, since],
    )
    matcher = Matcher([TOPIC])
    return sum(1 for r in rows if matcher.match(row_to_stored(r).paper))


def old_count(store: Store) -> int:
    return int(store.db.execute("SELECT count(*) FROM papers").fetchone()[0])


def old_newest(store: Store) -> int:
    # The index the old schema had (the planner now picks papers_new_first_seen).
    rows = list(
        store.db.query(
            "SELECT * FROM papers INDEXED BY idx_papers_first_seen WHERE backfilled = 0 "
            "ORDER BY first_seen DESC, daily_date DESC, upvotes DESC, id LIMIT 1"
        )
    )
    return len(rows)


class Undo(Exception):
    """Raised to roll the backfilled variant back."""


def newest_backfilled(store: Store, repeats: int) -> tuple[float, float]:
    """The newest-paper lookup on the archive as a service holds it that ran its daily
    fetch for 30 days and then backfilled years of history: the backfilled papers are the
    newest stored (first_seen is when we stored them), all but the oldest 30 days'
    (rolled back after)."""
    oldest = store.db.execute("SELECT min(first_seen) FROM papers").fetchone()[0]
    first = datetime.fromisoformat(oldest.replace("Z", "+00:00"))
    cut = (first + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    out: tuple[float, float] = (0.0, 0.0)
    try:
        with store.transaction() as conn:
            conn.execute("UPDATE papers SET backfilled = 1 WHERE first_seen >= ?", [cut])
            out = (
                best_ms(store.newest_first_seen, repeats),
                best_ms(lambda: old_newest(store), repeats),
            )
            raise Undo
    except Undo:
        pass
    return out


def one_size(n: int, repeats: int) -> dict[str, tuple[float, float]]:
    """name -> (median ms now, median ms of the baseline) on the n-paper archive."""
    path = build(CACHE / f"archive-{n}.db", n)
    store = Store.open(path)
    try:
        today = datetime.now(UTC).date()
        since = (today - timedelta(days=29)).isoformat()
        pairs: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {
            "papers --search language": (
                lambda: store.papers(search="language", limit=50),
                lambda: old_search(store),
            ),
            "topics test (30 days)": (
                lambda: try_topic(store, TOPIC, days=30, today=today),
                lambda: old_topics(store, since),
            ),
            "/healthz reads": (
                lambda: health_facts(str(path)),
                lambda: (health_facts(str(path)), old_count(store)),
            ),
            "newest paper (fetch)": (store.newest_first_seen, lambda: old_newest(store)),
            # No baseline: there was no search page. Both columns are the same call.
            "search page, uncached": (
                lambda: search(store, "language model"),
                lambda: search(store, "language model"),
            ),
        }
        out = {
            name: (best_ms(new, repeats), best_ms(old, repeats))
            for name, (new, old) in pairs.items()
        }
        out["newest, history backfilled"] = newest_backfilled(store, repeats)
        return out
    finally:
        store.close()


def growth(sizes: list[int], repeats: int) -> None:
    by_size = {n: one_size(n, repeats) for n in sizes}
    head = "".join(f"{n // 1000:>8}k now  before" for n in sizes)
    print(f"\n{'growth (best of, ms)':<26}{head}   growth now / before")
    for name in by_size[sizes[0]]:
        cells = "".join(f"{by_size[n][name][0]:>12.2f} {by_size[n][name][1]:>7.2f}" for n in sizes)
        first, last = by_size[sizes[0]][name], by_size[sizes[-1]][name]
        print(f"{name:<26}{cells}   {last[0] / first[0]:.2f}x / {last[1] / first[1]:.2f}x")


# -- part 2: wrk against digest serve and nginx --------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(url, timeout=5)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url: str, seconds: int, connections: int) -> dict[str, float]:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    return {
        "rate": float(rate.group(1)) if rate else float("nan"),
        "p50": _ms(p50.group(1)) if p50 else float("nan"),
        "p99": _ms(p99.group(1)) if p99 else float("nan"),
        "errors": float(bad.group(1)) if bad else 0.0,
    }


NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  sendfile on;
  keepalive_requests 100000;
  default_type text/html;
  client_body_temp_path {tmp}/nginx-body;
  proxy_temp_path {tmp}/nginx-proxy;
  fastcgi_temp_path {tmp}/nginx-fastcgi;
  uwsgi_temp_path {tmp}/nginx-uwsgi;
  scgi_temp_path {tmp}/nginx-scgi;
  server {{ listen 127.0.0.1:{port}; root {root}; }}
}}
"""


def serve_config(tmp: Path, archive: Path) -> Path:
    """A config for `digest serve` on a copy of `archive` in `tmp`; no scheduled job runs."""
    db = tmp / "digest.db"
    shutil.copy(archive, db)
    config = tmp / "config.toml"
    config.write_text(
        f'[source]\nlist = "http://127.0.0.1:9/papers"\n[store]\ndatabase = "{db}"\n'
        f'[feeds]\ndir = "{tmp / "feeds"}"\n[schedule]\ncatch_up = false\n'
        'fetch = "0 0 1 1 *"\n[[topics]]\nname = "agents"\ntitle = "LLM agents"\n'
        'keywords = ["agent*"]\nphrases = ["tool use"]\n[[topics]]\nname = "vision"\n'
        'keywords = ["image*", "video*", "vision"]\n'
        # The archive's last fetch was yesterday evening: not stale for this run.
        "[web]\nstale_after = 8760\n"
    )
    return config


def healthz_growth(sizes: list[int], seconds: int, connections: int) -> None:
    """/healthz req/s under wrk at each size (the container's health check)."""
    cells = []
    for size in sizes:
        with tempfile.TemporaryDirectory() as name:
            tmp = Path(name)
            config = serve_config(tmp, build(CACHE / f"archive-{size}.db", size))
            port = free_port()
            ours = subprocess.Popen(
                [sys.executable, "-m", "digest", "--config", str(config), "serve",
                 "--port", str(port)],
                cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            try:
                wait_up(f"http://127.0.0.1:{port}/healthz")
                got = wrk(f"http://127.0.0.1:{port}/healthz", seconds, connections)
                cells.append(f"{size // 1000}k {got['rate']:,.0f}/s (median {got['p50']:.1f} ms)")
            finally:
                ours.terminate()
                ours.wait(10)
    print(f"\n/healthz under wrk -c{connections}: " + ", ".join(cells))


def load(size: int, seconds: int, connections: int) -> None:
    path = build(CACHE / f"archive-{size}.db", size)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        config = serve_config(tmp, path)
        port, nginx_port = free_port(), free_port()
        ours = subprocess.Popen(
            [sys.executable, "-m", "digest", "--config", str(config), "serve", "--port", str(port)],
            cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        nginx = None
        try:
            base = f"http://127.0.0.1:{port}"
            wait_up(f"{base}/healthz")
            newest = httpx.get(f"{base}/api/papers?limit=1").json()["papers"][0]["daily_date"]
            pages = {
                "/": "/",
                "topic page": "/topics/agents",
                "day page": f"/archive/{newest}",
                "search": "/search?q=language+model",
                "/healthz": "/healthz",
            }
            root = tmp / "static"
            root.mkdir()
            for label, target in pages.items():
                answer = httpx.get(base + target, timeout=30)
                assert answer.status_code == 200, (label, answer.status_code)
                (root / f"{label.strip('/').replace(' ', '-') or 'home'}.html").write_bytes(
                    answer.content
                )
            (tmp / "nginx.conf").write_text(NGINX_CONF.format(tmp=tmp, port=nginx_port, root=root))
            nginx = subprocess.Popen(
                ["nginx", "-c", str(tmp / "nginx.conf"), "-p", str(tmp)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            wait_up(f"http://127.0.0.1:{nginx_port}/home.html")
            print(
                f"\nload: {size:,} papers, wrk -t1 -c{connections} -d{seconds}s "
                "(median / p99 latency, req/s)"
            )
            print(f"{'page':<12}{'digest serve':>36}{'nginx, static copy':>36}")
            for label, target in pages.items():
                static = f"/{label.strip('/').replace(' ', '-') or 'home'}.html"
                a = wrk(base + target, seconds, connections)
                b = wrk(f"http://127.0.0.1:{nginx_port}{static}", seconds, connections)
                errors = f"  ({a['errors']:.0f} errors)" if a["errors"] else ""
                print(
                    f"{label:<12}{a['p50']:>10.2f} / {a['p99']:>7.2f} ms {a['rate']:>8,.0f}/s"
                    f"{b['p50']:>14.2f} / {b['p99']:>7.2f} ms {b['rate']:>8,.0f}/s{errors}"
                )
        finally:
            for proc in (ours, nginx):
                if proc is not None:
                    proc.terminate()
                    proc.wait(10)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,50000,200000")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--skip-wrk", action="store_true")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    CACHE.mkdir(exist_ok=True)
    growth(sizes, args.repeats)
    if not args.skip_wrk:
        if not (shutil.which("wrk") and shutil.which("nginx")):
            print("load: wrk and nginx are needed (apt install wrk nginx)")
            return 1
        healthz_growth(sizes, args.seconds, args.connections)
        load(sizes[-1], args.seconds, args.connections)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
