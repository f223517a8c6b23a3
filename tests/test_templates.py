"""The templates: one top-level templates/ folder, shipped in the wheel, one Jinja
environment for the email and the pages, and `[templates] dir` to restyle them.

The wheel is built for real (`python -m build --no-isolation`, offline: the sdist, then
the wheel from it) and installed with pip into a folder of its own; a fresh interpreter
renders a real day's email from it with the source checkout out of reach.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from digest.cli import main
from digest.clock import now_utc
from digest.config import Config, TemplatesConfig
from digest.jobs import ingest_file
from digest.models import Subscriber
from digest.render.email import DigestRenderer, RenderError
from digest.render.templates import builtin_folder
from digest.store import Store
from digest.web.app import create_app
from tests.support.paths import PAGE_2024_08_01, ROOT
from tests.support.webserver import make_config, serving

TEMPLATES = ROOT / "templates"
BUILT_IN = sorted(p.relative_to(TEMPLATES).as_posix() for p in TEMPLATES.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # A copy of the tree the Dockerfile copies: no build/ or egg-info of the checkout.
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("digest", "templates"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run(
        # sdist first, then the wheel from it: what `python -m build` does.
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out)],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    (sdist,) = out.glob("papers_digest-*.tar.gz")
    with tarfile.open(sdist) as tar:
        top = {n.split("/", 1)[1] for n in tar.getnames() if "/templates/" in n}
    assert {f"templates/{name}" for name in BUILT_IN} <= top
    (whl,) = out.glob("papers_digest-*.whl")
    return whl


def test_the_templates_sit_in_the_top_level_folder() -> None:
    assert BUILT_IN == [
        "email/digest.html",
        "email/digest.txt",
        "email/paper.html",
        "email/paper.txt",
        "email/style.css",
        "web/archive.html",
        "web/archive_months.html",
        "web/base.html",
        "web/day.html",
        "web/day_papers.html",
        "web/feed_links.html",
        "web/feed_list.html",
        "web/feeds.html",
        "web/home_papers.html",
        "web/index.html",
        "web/message.html",
        "web/paper.html",
        "web/preferences.html",
        "web/search.html",
        "web/search_results.html",
        "web/topic.html",
        "web/topic_filter.html",
        "web/topic_papers.html",
    ]
    assert not (ROOT / "digest" / "templates").exists()
    assert builtin_folder() == TEMPLATES.resolve()


def test_the_wheel_carries_the_templates_and_every_package(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    shipped = sorted(n.removeprefix("digest/templates/") for n in names if "/templates/" in n)
    assert shipped == BUILT_IN
    with zipfile.ZipFile(wheel) as whl:
        for name in BUILT_IN:
            assert whl.read(f"digest/templates/{name}") == (TEMPLATES / name).read_bytes()
    # pyproject.toml lists the packages by hand (setuptools cannot find digest.templates
    # on its own): a module in a package added under digest/ and not listed would be
    # missing here.
    modules = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "digest").rglob("*.py"))
    assert modules == sorted(n for n in names if n.endswith(".py"))


# Run in a fresh interpreter from the installed wheel: a real day's email and a page.
RENDER_FROM_WHEEL = """
import json, sys, digest
from digest.config import Config
from digest.jobs import ingest_file
from digest.models import Subscriber
from digest.render.email import DigestRenderer
from digest.render.templates import builtin_folder, environment
from digest.clock import now_utc
from digest.store import Store
store = Store.open(sys.argv[2])
ingest_file(store, sys.argv[1])
day = now_utc().date()
message = DigestRenderer(Config(), store.papers_of_day(day), day).render(
    Subscriber("reader@example.org")
)
page = environment().get_template("web/archive.html").render(title="T", months="")
print(json.dumps({
    "digest": digest.__file__,
    "folder": str(builtin_folder()),
    "subject": str(message["Subject"]),
    "text": message.get_body(("plain",)).get_content(),
    "html": message.get_body(("html",)).get_content(),
    "page": page,
}))
"""


def test_an_installed_wheel_renders_the_email_from_its_templates(
    wheel: Path, tmp_path: Path
) -> None:
    target = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index"]
    install = subprocess.run(
        [*pip, "--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    # -I: no PYTHONPATH, no user site, no current folder; the wheel's folder goes first
    # and the venv's site-packages (the dependencies) after it, without the finder of the
    # checkout's editable install (it would fill in what the wheel lacks).
    script = (
        "import sys\n"
        f"sys.path.insert(0, {str(target)!r})\n"
        "sys.meta_path[:] = [f for f in sys.meta_path if '__editable__' not in f.__module__]\n"
        + RENDER_FROM_WHEEL
    )
    run = subprocess.run(
        [sys.executable, "-I", "-c", script, str(PAGE_2024_08_01), str(tmp_path / "d.db")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout)
    assert got["digest"] == str(target / "digest" / "__init__.py")
    assert got["folder"] == str(target / "digest" / "templates")
    assert got["subject"].endswith('" and 12 more')
    assert "13 new papers today." in got["text"]
    assert "&amp;" not in got["text"] and "&#" not in got["text"]  # text is not HTML-escaped
    assert got["html"].startswith("<!DOCTYPE html>")
    assert "The Llama 3 Herd of Models" in got["html"]
    assert "<h1>Past digests</h1>" in got["page"]


# -- [templates] dir --------------------------------------------------------------------


@pytest.fixture
def restyled(tmp_path: Path) -> Path:
    """A copy of two templates, changed: the email's HTML and the pages' base."""
    folder = tmp_path / "mine"
    (folder / "email").mkdir(parents=True)
    (folder / "web").mkdir()
    html = (TEMPLATES / "email" / "digest.html").read_text()
    assert "<body" in html
    (folder / "email" / "digest.html").write_text(
        html.replace("<body", "<!-- restyled email --><body", 1)
    )
    base = (TEMPLATES / "web" / "base.html").read_text()
    assert '<main id="main">' in base
    (folder / "web" / "base.html").write_text(
        base.replace('<main id="main">', '<main class="restyled">', 1)
    )
    return folder


@pytest.fixture
def day_store(tmp_path: Path) -> Iterator[tuple[Config, Store]]:
    config = make_config(tmp_path)
    store = Store.open(config.store.database)
    try:
        assert ingest_file(store, PAGE_2024_08_01).new == 13
        yield config, store
    finally:
        store.close()


def _email(config: Config, store: Store) -> tuple[str, str]:
    day = now_utc().date()
    message = DigestRenderer(config, store.papers_of_day(day), day).render(
        Subscriber("reader@example.org", token="t", preferences_token="p")
    )
    assert message is not None
    text, html = message.get_body(("plain",)), message.get_body(("html",))
    assert text is not None and html is not None
    return text.get_content(), html.get_content()


def test_a_restyled_copy_changes_the_email_and_the_pages(
    day_store: tuple[Config, Store], restyled: Path
) -> None:
    config, store = day_store
    text, html = _email(config, store)
    mine = dataclasses.replace(config, templates=TemplatesConfig(dir=str(restyled)))
    text_mine, html_mine = _email(mine, store)
    assert "restyled email" not in html and "restyled email" in html_mine
    # The copy has no digest.txt: the built-in one is used, unchanged.
    assert text_mine == text
    with serving(create_app(mine)) as base:
        page = httpx.get(f"{base}/", timeout=10).text
        feeds = httpx.get(f"{base}/feeds/", timeout=10).text
    # web/index.html and web/feeds.html are the built-in ones, extending the copy's base.
    assert '<main class="restyled">' in page and "All feeds as OPML" in page
    assert '<main class="restyled">' in feeds
    with serving(create_app(config)) as base:
        assert '<main class="restyled">' not in httpx.get(f"{base}/", timeout=10).text


def test_a_broken_copy_is_named_in_the_error(
    day_store: tuple[Config, Store], tmp_path: Path
) -> None:
    config, store = day_store
    folder = tmp_path / "broken"
    (folder / "email").mkdir(parents=True)
    (folder / "email" / "digest.txt").write_text("{{ title }} {{ no_such_value }}\n")
    mine = dataclasses.replace(config, templates=TemplatesConfig(dir=str(folder)))
    # StrictUndefined: a name the renderer does not pass is an error, not an empty string.
    with pytest.raises(RenderError) as err:
        _email(mine, store)
    assert str(folder / "email" / "digest.txt") in str(err.value)
    assert "no_such_value" in str(err.value)


def test_a_missing_templates_dir_is_refused_at_load(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    missing = tmp_path / "no-such-folder"
    path.write_text(f'[templates]\ndir = "{missing}"\n')
    result = CliRunner().invoke(main, ["--config", str(path), "check"])
    assert result.exit_code == 1
    assert f"{path}, line 2, templates.dir: {missing}: folder not found" in result.output
    assert "Traceback" not in result.output
    path.write_text(f'[templates]\ndir = "{tmp_path}"\n')
    ok = CliRunner().invoke(main, ["--config", str(path), "check"])
    assert ok.exit_code == 0, ok.output
