"""`digest serve` as a real process: it answers HTTP, and SIGTERM stops it cleanly."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.cli import process_env
from tests.support.net import free_port
from tests.support.serve import serve_config, start_serve, stop, wait_healthz
from tests.support.smtpserver import SmtpServer


def test_digest_serve_answers_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    proc = start_serve(serve_config(tmp_path), port, tmp_path)
    try:
        base = f"http://127.0.0.1:{port}"
        health = wait_healthz(base, proc)
        assert health.status_code in (200, 503)
        body = health.json()
        assert set(body["next_runs"]) == {"fetch", "send"}
        assert body["next_runs"]["send"] is not None
        landing = httpx.get(f"{base}/")
        assert landing.status_code == 200
        # The catch-up fetch failed (nothing listens on port 9): healthz says so.
        deadline = time.monotonic() + 10
        while body["last_run"] is None and time.monotonic() < deadline:
            time.sleep(0.1)
            body = httpx.get(f"{base}/healthz").json()
        assert body["last_run"]["status"] == "failed"
        assert httpx.get(f"{base}/healthz").status_code == 503
    finally:
        code, took = stop(proc)
    output = proc.stdout.read().decode() if proc.stdout else ""
    assert code == 0, output
    assert took < 5, output
    assert "stopped" in output


SLOW_JOB = """
import sys, time
from pathlib import Path
from digest.config import load_config
from digest.service.serve import serve

marks = Path(sys.argv[2])

def fetch(config):
    marks.joinpath("started").touch()
    time.sleep(1.5)  # a step in progress when SIGTERM comes
    marks.joinpath("finished").touch()
    return None

def send(config, day):
    return None

sys.exit(serve(load_config(sys.argv[1]), port=int(sys.argv[3]), fetch=fetch, send=send))
"""


def test_sigterm_waits_for_the_running_job(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_JOB, str(serve_config(tmp_path)), str(tmp_path), str(port)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=process_env(),
    )
    try:
        wait_healthz(f"http://127.0.0.1:{port}", proc)
        deadline = time.monotonic() + 10
        while not (tmp_path / "started").exists():  # the catch-up fetch
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert not (tmp_path / "finished").exists()
    finally:
        code, took = stop(proc)
    output = proc.stdout.read().decode() if proc.stdout else ""
    assert code == 0, output
    assert (tmp_path / "finished").exists(), output  # the job was let finish
    assert took < 5, output


def test_port_taken_exits_non_zero(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "digest",
                "--config",
                str(serve_config(tmp_path)),
                "serve",
                "--port",
                str(port),
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
            env=process_env(),
        )
    assert result.returncode != 0
    assert str(port) in result.stderr


def _subscribe_from(base: str, forwarded_for: str) -> int:
    with httpx.Client() as client:
        page = client.get(f"{base}/")
        token = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert token
        answer = client.post(
            f"{base}/subscribe",
            data={"csrf": token.group(1), "email": f"r{forwarded_for[-1]}@example.org"},
            headers={"X-Forwarded-For": forwarded_for},
        )
    return answer.status_code


@pytest.mark.parametrize("trusted", ['["127.0.0.1"]', "[]"])
def test_the_rate_limit_counts_clients_behind_a_trusted_proxy(tmp_path: Path, trusted: str) -> None:
    # A reverse proxy on 127.0.0.1 passing two visitors: each has their own limit when the
    # proxy is trusted; otherwise both are "127.0.0.1" and the second is refused.
    with SmtpServer() as smtp:
        config = serve_config(tmp_path)
        config.write_text(
            config.read_text()
            + f"[web]\nsubscribe_per_hour = 1\ntrusted_proxies = {trusted}\n"
            + f'[smtp]\nhost = "127.0.0.1"\nport = {smtp.port}\nsecurity = "none"\n'
        )
        port = free_port()
        proc = start_serve(config, port, tmp_path)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_healthz(base, proc)
            codes = [_subscribe_from(base, ip) for ip in ("203.0.113.1", "203.0.113.2")]
        finally:
            stop(proc)
    assert codes == ([200, 200] if trusted != "[]" else [200, 429])


@pytest.mark.parametrize("source", ["unreachable", "silent"])
def test_sigterm_cuts_a_retrying_catch_up_fetch(tmp_path: Path, source: str) -> None:
    """The fresh container's case: the catch-up fetch retries a site that is down (a
    closed port: backoff sleeps) or that takes the request and never answers (a request
    in flight, 20 s read timeout). SIGTERM must end the process within 2 s, exit 0."""
    from tests.support.hfserver import HFServer, Reply

    with HFServer() as site:
        site.route("/papers", Reply(b"", hold=60.0))
        url = site.url("/papers") if source == "silent" else f"http://127.0.0.1:{free_port()}/p"
        config = tmp_path / "config.toml"
        config.write_text(
            f'[source]\nlist = "{url}"\napi_url = "{url}/api"\nretries = 3\ntimeout = 20\n'
            f'[store]\ndatabase = "{tmp_path / "digest.db"}"\n'
            f'[feeds]\ndir = "{tmp_path / "feeds"}"\n'
            '[schedule]\ntimezone = "Europe/Berlin"\n'
        )
        port = free_port()
        proc = start_serve(config, port, tmp_path)
        try:
            wait_healthz(f"http://127.0.0.1:{port}", proc)
            deadline = time.monotonic() + 10
            if source == "silent":
                while not site.requests:  # the catch-up fetch is waiting on the site
                    assert time.monotonic() < deadline
                    time.sleep(0.02)
            time.sleep(0.5)  # in a backoff sleep, or still waiting for an answer
        finally:
            code, took = stop(proc)
    output = proc.stdout.read().decode() if proc.stdout else ""
    assert code == 0, output
    assert took < 2.0, (took, output)
    assert "stopped" in output
