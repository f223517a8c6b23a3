"""Benchmark: `digest serve` answering feed requests, side by side with nginx.

Run: .venv/bin/python bench/serve.py [--seconds 5] [--connections 32]

Builds a store from every real capture in ../shared/fixtures/real (page and API
responses, about 350 papers), writes the feeds with the real `write_feeds` capped at 200
items, so all.xml is a 200-item RSS feed, then starts `digest serve` on 127.0.0.1 (a
free port, no catch-up run) and, when `nginx` is installed, nginx with its own temporary
config serving the same folder (one process: `master_process off`, one worker, as many
processes as ours; sendfile on; access log off). Loopback only.

Load: `wrk` (1 thread, --connections keep-alive connections, --seconds each) when
installed, else a Python client (httpx, one thread per connection). Two runs per server:
  fresh        plain GET, 200 with the whole feed (no gzip asked, like nginx's default);
  conditional  GET with If-None-Match: the server's own ETag, 304.
Also: RSS of the `digest serve` process when idle (after start-up, before any request)
and after the load. Targets: conditional >= 2,000 req/s; fresh >= 30% of nginx's;
idle RSS < 80 MB. The client shares the 2 cores with the server, so the figures are a
floor, measured the same way for both servers.
"""

from __future__ import annotations

import argparse
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from digest.config import load_config
from digest.jobs import ingest_file, write_feeds
from digest.store import Store

ROOT = Path(__file__).resolve().parent.parent
REAL = ROOT.parent / "shared" / "fixtures" / "real"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def build(tmp: Path) -> Path:
    config_path = tmp / "config.toml"
    config_path.write_text(
        f"""
[source]
list = "http://127.0.0.1:9/papers"
[store]
database = "{tmp / "digest.db"}"
[feeds]
dir = "{tmp / "feeds"}"
max_items = 200
[schedule]
catch_up = false
fetch = "0 0 1 1 *"
"""
    )
    config = load_config(config_path)
    store = Store.open(config.store.database)
    try:
        for capture in sorted(REAL.glob("*.json")) + sorted(REAL.glob("*.html")):
            ingest_file(store, capture)
        report = write_feeds(config, store)
    finally:
        store.close()
    items = report.items["all"]
    size = (tmp / "feeds" / "all.xml").stat().st_size
    print(f"feed: all.xml, {items} items, {size / 1024:.0f} KiB")
    if items < 200:
        print(f"note: only {items} papers in the captures, fewer than 200")
    return config_path


def wrk(url: str, seconds: int, connections: int, headers: dict[str, str]) -> float:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30).stdout
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad:
        print(f"  warning: {bad.group(1)} error responses")
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return float(m.group(1)) if m else float("nan")


def python_load(url: str, seconds: int, connections: int, headers: dict[str, str]) -> float:
    done = [0] * connections
    stop = time.monotonic() + seconds

    def worker(i: int) -> None:
        with httpx.Client(headers=headers, timeout=10) as client:
            while time.monotonic() < stop:
                r = client.get(url)
                if r.status_code in (200, 304):
                    done[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / seconds


def measure(name: str, url: str, seconds: int, connections: int) -> dict[str, float]:
    load = wrk if shutil.which("wrk") else python_load
    etag = httpx.get(url).headers["etag"]
    assert httpx.get(url, headers={"If-None-Match": etag}).status_code == 304, name
    fresh = load(url, seconds, connections, {})
    conditional = load(url, seconds, connections, {"If-None-Match": etag})
    print(f"{name:<14} fresh {fresh:>9,.0f} req/s   conditional {conditional:>9,.0f} req/s")
    return {"fresh": fresh, "conditional": conditional}


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
  tcp_nopush on;
  keepalive_requests 100000;
  types {{ application/rss+xml xml; application/atom+xml atom; application/feed+json json; }}
  client_body_temp_path {tmp}/nginx-body;
  proxy_temp_path {tmp}/nginx-proxy;
  fastcgi_temp_path {tmp}/nginx-fastcgi;
  uwsgi_temp_path {tmp}/nginx-uwsgi;
  scgi_temp_path {tmp}/nginx-scgi;
  server {{
    listen 127.0.0.1:{port};
    location /feeds/ {{ alias {feeds}/; }}
  }}
}}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    print(
        f"load client: {'wrk' if shutil.which('wrk') else 'python httpx threads'}, "
        f"{args.connections} connections, {args.seconds} s per run"
    )
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        config_path = build(tmp)
        port = free_port()
        ours = subprocess.Popen(
            [sys.executable, "-m", "digest", "--config", str(config_path), "serve",
             "--port", str(port)],
            cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        nginx = None
        try:
            base = f"http://127.0.0.1:{port}"
            wait_up(f"{base}/healthz")
            time.sleep(1)
            idle = rss_mb(ours.pid)
            figures = {
                "digest serve": measure(
                    "digest serve", f"{base}/feeds/all.xml", args.seconds, args.connections
                )
            }
            loaded = rss_mb(ours.pid)
            if shutil.which("nginx"):
                nport = free_port()
                conf = tmp / "nginx.conf"
                conf.write_text(NGINX_CONF.format(tmp=tmp, port=nport, feeds=tmp / "feeds"))
                nginx = subprocess.Popen(
                    ["nginx", "-p", str(tmp), "-c", str(conf)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                nbase = f"http://127.0.0.1:{nport}/feeds/all.xml"
                wait_up(nbase)
                figures["nginx"] = measure("nginx", nbase, args.seconds, args.connections)
            else:
                print("nginx: not installed (command -v nginx found nothing); ours only")
        finally:
            for proc in (ours, nginx):
                if proc is not None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
        print(
            f"digest serve RSS: idle {idle:.1f} MB, after the load {loaded:.1f} MB "
            f"(target idle < 80 MB)"
        )
        ours_f = figures["digest serve"]
        ok = ours_f["conditional"] >= 2000
        print(
            f"conditional: {ours_f['conditional']:,.0f} req/s (target >= 2,000): "
            f"{'met' if ok else 'NOT met'}"
        )
        if "nginx" in figures:
            share = ours_f["fresh"] / figures["nginx"]["fresh"]
            print(
                f"fresh: {share:.0%} of nginx's rate (target >= 30%): "
                f"{'met' if share >= 0.3 else 'NOT met'}"
            )
        print(f"exit code of digest serve after SIGTERM: {ours.returncode}")


if __name__ == "__main__":
    main()
