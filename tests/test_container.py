"""The real image: built from our Dockerfile with podman, run, fed, stopped, restarted.

`../shared/tools/container.sh` builds `FROM debian:bookworm-slim` on a base made
locally (no registry here), so this is the image a user builds with `docker build`.
The container has no internet: the config mounted at /config/config.toml turns the
catch-up fetch off, and the papers come from a real capture copied in with `podman cp`.

Without podman the module skips; with CI_REQUIRE_CONTAINER=1 (set by .ci/run) that is a
failure instead. The figures (build time, time to /healthz, stop time, image size) go to
test-artifacts/container-figures.txt for the README.
"""

from __future__ import annotations

import email
import email.policy
import html
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import feedparser
import httpx
import pytest

from tests.support.net import free_port
from tests.support.paths import PAGE_2024_08_01, ROOT

pytestmark = pytest.mark.container

TOOL = ROOT.parent / "shared" / "tools" / "container.sh"
WORK = Path(os.environ.get("CONTAINER_WORK", "/var/tmp/digest-containers"))
ARTIFACTS = ROOT / "test-artifacts"
FIGURES: dict[str, str] = {}
# What the mounted config says: no catch-up (no internet here), a fetch once a year.
CONFIG = """\
[schedule]
catch_up = false
fetch = "0 3 1 1 *"
"""


def _podman_env() -> dict[str, str]:
    # The settings container.sh uses (runc, storage under CONTAINER_WORK), for tools such
    # as podman-compose that call podman themselves.
    return os.environ | {
        "CONTAINERS_CONF": str(WORK / "containers.conf"),
        "CONTAINERS_STORAGE_CONF": str(WORK / "storage.conf"),
    }


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        ["bash", str(TOOL), "podman", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} -> {result.returncode}: {result.stderr}")
    return result


def wait_answer(url: str, *, status: int | None = None, timeout: float = 60) -> httpx.Response:
    """Poll `url` until it answers (with `status`, if given); return the answer."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            response = httpx.get(url, timeout=2)
            if status is None or response.status_code == status:
                return response
            last = f"{response.status_code} {response.text[:200]}"
        except httpx.HTTPError as e:
            last = e
        time.sleep(0.2)
    raise AssertionError(f"{url} did not answer{f' {status}' if status else ''}: {last}")


def note(key: str, value: str) -> None:
    FIGURES[key] = value
    ARTIFACTS.mkdir(exist_ok=True)
    lines = [f"{k}: {v}" for k, v in FIGURES.items()]
    (ARTIFACTS / "container-figures.txt").write_text("\n".join(lines) + "\n")
    print(f"container figure: {key}: {value}")


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    if shutil.which("podman") is None or not TOOL.is_file():
        why = f"podman is not installed or {TOOL} is missing"
        if os.environ.get("CI_REQUIRE_CONTAINER") == "1":
            pytest.fail(f"{why}, and CI_REQUIRE_CONTAINER=1 says the container tests must run")
        pytest.skip(why)
    tag = f"localhost/papers-digest-test:{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    build = subprocess.run(
        ["bash", str(TOOL), "build", str(ROOT), tag],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    note("build time (warm base, layer cache as found)", f"{time.monotonic() - started:.1f} s")
    size = int(podman("image", "inspect", tag, "--format", "{{.Size}}").stdout.strip())
    note("image size", f"{size / 1e6:.0f} MB")
    yield tag
    podman("rmi", "-f", tag, check=False)


@pytest.fixture(scope="module")
def running(image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    config = tmp_path_factory.mktemp("container") / "config.toml"
    config.write_text(CONFIG)
    config.chmod(0o644)  # read by the image's non-root user
    name = f"pd-test-{uuid.uuid4().hex[:8]}"
    volume = f"{name}-data"
    port = free_port()
    started = time.monotonic()
    podman(
        "run",
        "-d",
        "--name",
        name,
        "-v",
        f"{volume}:/data",
        "-v",
        f"{config}:/config/config.toml:ro",
        "-p",
        f"127.0.0.1:{port}:8000",
        image,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_answer(f"{base}/healthz")
        note("podman run to first /healthz answer", f"{time.monotonic() - started:.1f} s")
        yield {"name": name, "base": base, "volume": volume}
    finally:
        logs = podman("logs", name, check=False)
        (ARTIFACTS / "container.log").write_text(logs.stdout + logs.stderr)
        podman("rm", "-f", "-t", "2", name, check=False)
        podman("volume", "rm", "-f", volume, check=False)


def stored_titles(name: str) -> list[str]:
    out = podman("exec", name, "digest", "papers", "--limit", "1000").stdout
    # "<id> <day> <votes>^ <title>": the title is everything after the vote count.
    return [line.split("^ ", 1)[1].strip() for line in out.splitlines() if "^ " in line]


def test_serves_as_a_non_root_user_with_a_fresh_volume(running: dict[str, str]) -> None:
    status = podman("exec", running["name"], "cat", "/proc/1/status").stdout
    uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    assert uids and all(u == "10001" for u in uids), status
    health = httpx.get(f"{running['base']}/healthz", timeout=5)
    # Nothing ran yet: /healthz answers, and says why it is not healthy.
    assert health.status_code == 503
    assert "no run yet" in json.dumps(health.json())


def test_fetch_inside_the_container_then_the_feed_lists_the_papers(
    running: dict[str, str],
) -> None:
    name = running["name"]
    podman("cp", str(PAGE_2024_08_01), f"{name}:/tmp/page.html")
    fetched = podman("exec", name, "digest", "fetch", "--from", "/tmp/page.html")
    assert "new 13" in fetched.stdout, fetched.stdout + fetched.stderr
    titles = stored_titles(name)
    assert len(titles) == 13
    feed = feedparser.parse(httpx.get(f"{running['base']}/feeds/all.xml", timeout=5).content)
    assert feed.bozo == 0
    assert sorted(e.title for e in feed.entries) == sorted(titles)
    health = wait_answer(f"{running['base']}/healthz", status=200, timeout=10)
    assert health.json()["papers"] == 13
    # The image's HEALTHCHECK (python urllib on /healthz) agrees.
    check = podman("healthcheck", "run", name, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    state = podman("inspect", name, "--format", "{{.State.Health.Status}}").stdout.strip()
    assert state == "healthy"


def test_the_image_renders_an_email_from_its_packaged_templates(
    running: dict[str, str],
) -> None:
    # The templates are package data copied from the top-level templates/ (Dockerfile COPY,
    # pyproject package-dir): the installed package reads them from site-packages.
    name = running["name"]
    podman("cp", str(PAGE_2024_08_01), f"{name}:/tmp/page.html")
    podman("exec", name, "digest", "fetch", "--from", "/tmp/page.html")  # again: "new 0"
    podman("exec", name, "digest", "subscribers", "add", "reader@example.org")
    folder = podman(
        "exec",
        name,
        "python3",
        "-c",
        "from digest.render.templates import builtin_folder; print(builtin_folder())",
    ).stdout.strip()
    assert folder == "/opt/venv/lib/python3.11/site-packages/digest/templates", folder
    done = podman(
        "exec", name, "digest", "preview", "--to", "reader@example.org", "--out", "/tmp/preview"
    )
    eml_path = done.stdout.split()[0]
    raw = podman("exec", name, "cat", eml_path).stdout
    message = email.message_from_string(raw, policy=email.policy.default)
    assert str(message["Subject"]).endswith('" and 12 more'), message["Subject"]
    text = message.get_body(("plain",))
    page = message.get_body(("html",))
    assert text is not None and page is not None
    # email/digest.txt: the count line; email/digest.html: its doctype and every title.
    assert "13 new papers today." in text.get_content()
    html_text = page.get_content()
    assert html_text.startswith("<!DOCTYPE html>")
    titles = stored_titles(name)
    assert len(titles) == 13
    assert all(html.escape(t, quote=False) in html_text for t in titles)


def test_stop_is_quick_and_clean_and_the_data_survives_a_restart(
    running: dict[str, str],
) -> None:
    name = running["name"]
    started = time.monotonic()
    podman("stop", "-t", "10", name, timeout=30)
    stopped_in = time.monotonic() - started
    note("podman stop (SIGTERM) to exited", f"{stopped_in:.1f} s")
    assert stopped_in < 10, "digest serve did not handle SIGTERM (podman had to SIGKILL)"
    code = podman("inspect", name, "--format", "{{.State.ExitCode}}").stdout.strip()
    assert code == "0"
    logs = podman("logs", name)
    assert "stopped" in logs.stdout + logs.stderr

    podman("start", name)
    health = wait_answer(f"{running['base']}/healthz", status=200, timeout=60)
    assert health.json()["papers"] == 13
    feed = feedparser.parse(httpx.get(f"{running['base']}/feeds/all.xml", timeout=5).content)
    assert len(feed.entries) == 13


def test_compose_brings_it_up_and_down(image: str, tmp_path: Path) -> None:
    compose = shutil.which("podman-compose") or str(
        Path(sys.executable).with_name("podman-compose")
    )
    assert Path(compose).exists(), "podman-compose (PyPI) is a test dependency"
    port = free_port()
    project = f"pdc{uuid.uuid4().hex[:6]}"
    env = _podman_env() | {"DIGEST_IMAGE": image, "DIGEST_PORT": str(port)}
    base = [compose, "-p", project, "-f", str(ROOT / "compose.yaml")]

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*base, *args], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path
        )

    up = run("up", "-d", "--no-build")
    try:
        assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
        answer = wait_answer(f"http://127.0.0.1:{port}/healthz", timeout=60)
        assert answer.status_code in (200, 503)
        assert "papers" in answer.json()
    finally:
        down = run("down", "-v")
    assert down.returncode == 0, down.stdout[-2000:] + down.stderr[-2000:]
    left = podman("ps", "-a", "--filter", f"label=io.podman.compose.project={project}", "-q")
    assert left.stdout.strip() == ""
