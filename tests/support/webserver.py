"""Test helpers for the web front: a real uvicorn on 127.0.0.1, raw requests, configs."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn
from starlette.applications import Starlette

from digest.config import Config, FeedsConfig, StoreConfig, TopicConfig, WebConfig


def make_config(tmp: Path, **web: int) -> Config:
    """A config whose database and feeds live in `tmp`, with two topics."""
    return Config(
        store=StoreConfig(database=str(tmp / "digest.db")),
        feeds=FeedsConfig(dir=str(tmp / "feeds")),
        topics=[
            TopicConfig(name="agents", title="LLM agents", keywords=["agent*"]),
            TopicConfig(name="vision", title="Computer vision", keywords=["image*", "video*"]),
        ],
        web=WebConfig(**web),
    )


@contextmanager
def serving(app: Starlette) -> Iterator[str]:
    """Run `app` under uvicorn in a thread on a free loopback port; yield its base URL."""
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            lifespan="off",
            log_level="warning",
            access_log=False,
            log_config=None,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def raw_get(base: str, target: str) -> int:
    """Send `GET target` exactly as written (no client-side dot-segment clean-up); return
    the status code."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        head = s.recv(4096).decode("latin-1")
    return int(head.split(" ", 2)[1])
