"""The ingest commands through click's runner (and one real subprocess), in a temp folder."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from digest.cli import main
from digest.store import Store
from tests.support.cli import CLEAN_ENV, cli
from tests.support.pages import hydration_cut, raw_items
from tests.support.paths import PAGE_2024_08_01, REAL


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    yield tmp_path


def digest(*args: str) -> Result:
    return cli(None, *args)


def papers_in(db: Path) -> dict[str, int]:
    s = Store.open(db)
    try:
        return {sp.paper.id: sp.paper.upvotes for sp in s.papers()}
    finally:
        s.close()


def test_check_without_config(cwd: Path) -> None:
    result = digest("check")
    assert result.exit_code == 0, result.output
    assert "built-in defaults" in result.stdout
    assert "all is well" in result.stdout


def test_check_with_example_config(cwd: Path) -> None:
    (cwd / "config.toml").write_text(
        '[[topics]]\nname = "agents"\nkeywords = ["agent*"]\n', encoding="utf-8"
    )
    result = digest("check")
    assert result.exit_code == 0, result.output
    assert "config: config.toml" in result.stdout
    assert "topics:    agents" in result.stdout


BAD = '[source]\nlist = "daily"\n\n[[topics]]\nname = "agents"\nkeywords = ["agent*", ""]\n'


def test_check_with_bad_config(cwd: Path) -> None:
    (cwd / "config.toml").write_text(BAD, encoding="utf-8")
    result = digest("check")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: config.toml, line 6, topics[0].keywords: ")
    assert "empty term" in result.stderr
    assert "all is well" not in result.stdout
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_check_with_bad_config_subprocess(tmp_path: Path) -> None:
    # The real entry point: the problem and the count on stderr, exit 1, no traceback.
    config = tmp_path / "bad.toml"
    config.write_text(BAD, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV}
    proc = subprocess.run(
        [sys.executable, "-m", "digest", "--config", str(config), "check"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"error: {config}, line 6, topics[0].keywords: topic 'agents' has an empty term",
        "error: 1 problem in the config; nothing was run",
    ]
    assert "Traceback" not in proc.stderr


def test_fetch_from_page_twice(cwd: Path) -> None:
    first = digest("fetch", "--from", str(PAGE_2024_08_01))
    assert first.exit_code == 0, first.output
    n = len(raw_items(PAGE_2024_08_01))
    assert f"seen {n}, new {n}" in first.stdout
    assert "for 2024-08-01" in first.stdout
    second = digest("fetch", "--from", str(PAGE_2024_08_01))
    assert second.exit_code == 0, second.output
    assert f"seen {n}, new 0" in second.stdout
    assert len(papers_in(cwd / "papers-digest.db")) == n


def test_fetch_from_api_file_with_date(cwd: Path) -> None:
    path = REAL / "api-daily_papers-2024-03-12.json"
    result = digest("fetch", "--from", str(path), "--date", "2024-03-12")
    assert result.exit_code == 0, result.output
    assert f"seen {len(raw_items(path))}, new {len(raw_items(path))}" in result.stdout


def test_fetch_from_broken_file_records_a_failure(cwd: Path) -> None:
    assert digest("fetch", "--from", str(PAGE_2024_08_01)).exit_code == 0
    db = cwd / "papers-digest.db"
    before = papers_in(db)
    broken = cwd / "broken.html"
    broken.write_bytes(hydration_cut())
    result = digest("fetch", "--from", str(broken))
    assert result.exit_code != 0
    assert "failed" in result.stderr
    assert "broken.html" in result.stderr
    assert "Traceback" not in result.output
    assert papers_in(db) == before
    s = Store.open(db)
    try:
        run = s.last_run()
        assert run is not None
        assert (run["status"], run["source_url"], run["new"]) == ("failed", str(broken), 0)
    finally:
        s.close()


def test_fetch_from_missing_file(cwd: Path) -> None:
    result = digest("fetch", "--from", "nowhere.html")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: nowhere.html: cannot read")


def test_papers_search(cwd: Path) -> None:
    assert digest("fetch", "--from", str(PAGE_2024_08_01)).exit_code == 0
    items = raw_items(PAGE_2024_08_01)
    llama = next(i["paper"] for i in items if "Llama 3" in i["paper"]["title"])
    result = digest("papers", "--search", "Llama")
    assert result.exit_code == 0, result.output
    assert llama["id"] in result.stdout
    assert llama["title"] in result.stdout
    assert f"of {len(items)} stored" in result.stderr
    hostile = digest("papers", "--search", 'C++ "AND')
    assert hostile.exit_code == 0, hostile.output
    everything = digest("papers")
    assert len(everything.stdout.splitlines()) == len(items)


def test_input_that_can_never_work_fails_at_once_with_its_name(cwd: Path) -> None:
    # A typo in --url is not a network error: no retries, no failed run recorded.
    typo = digest("fetch", "--url", "huggingface.co/papers")
    assert typo.exit_code == 1
    assert "--url 'huggingface.co/papers': not 'daily', 'trending' or an http(s) URL" in (
        typo.output
    )
    assert not (cwd / "papers-digest.db").exists()  # refused before anything was opened
    # A database path whose folder is a file: the path is named, no traceback.
    blocker = cwd / "not-a-folder"
    blocker.write_text("")
    bad_db = CliRunner().invoke(
        main, ["papers"], env=CLEAN_ENV | {"DIGEST_DB": str(blocker / "x.db")}
    )
    assert bad_db.exit_code == 1 and not isinstance(bad_db.exception, OSError)
    assert f"{blocker / 'x.db'}: cannot open the database" in bad_db.output
