"""`digest serve` as a real process: start it, wait for /healthz, stop it with SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import httpx

from tests.support.cli import digest_command, process_env
from tests.support.config import write_config


def serve_config(tmp: Path) -> Path:
    """A config for `digest serve` in `tmp`. The source is a closed loopback port: the
    catch-up fetch fails fast, offline."""
    return write_config(
        tmp,
        source={"list": "http://127.0.0.1:9/papers", "retries": 0},
        store={"database": str(tmp / "data" / "digest.db")},
        feeds={"dir": str(tmp / "feeds")},
        schedule={"timezone": "Europe/Berlin"},
    )


def start_serve(config: Path, port: int, cwd: Path) -> subprocess.Popen[bytes]:
    """`digest serve` as its own process, output kept for the failure message."""
    return subprocess.Popen(
        digest_command(config, "serve", "--port", str(port)),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=process_env(),
    )


def wait_healthz(base: str, proc: subprocess.Popen[bytes], timeout: float = 20) -> httpx.Response:
    """The first answer of base/healthz; fail if the process exits or `timeout` s pass."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, "digest serve exited early"
        try:
            return httpx.get(f"{base}/healthz", timeout=2)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def stop(proc: subprocess.Popen[bytes], timeout: float = 10) -> tuple[int, float]:
    """SIGTERM the process; return its exit code and how long it took to exit."""
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout)
    return code, time.monotonic() - start
