"""The README after today's five merges: every command of its commands table exists and
takes the options the table names (`--help`), and the two top commands hold on a fresh
clone (only what is committed): the daily job offline, and the test suite collects."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from digest.cli import main
from tests.support.paths import ROOT

README = ROOT / "README.md"


def command_rows() -> list[tuple[list[str], set[str], str]]:
    """(command words, --options named, the row) for each row of the commands table."""
    text = README.read_text(encoding="utf-8")
    table = text.split("## Commands", 1)[1].split("\n## ", 1)[0]
    out: list[tuple[list[str], set[str], str]] = []
    for row in table.splitlines():
        if not row.startswith("| `digest"):
            continue
        cell = row.split(" | ", 1)[0]
        spans = re.findall(r"`([^`]*)`", cell)
        words: list[str] = []
        for span in spans:
            if span.startswith("digest "):
                words = [w for w in span.split()[1:] if re.fullmatch(r"[a-z]+", w)]
                # "digest topics test NAME": the command words stop at the first argument
                words = words[: next((i for i, w in enumerate(words) if w.isupper()), None)]
                out.append((words, set(re.findall(r"--[a-z-]+", span)), row))
            elif re.fullmatch(r"[a-z]+( [A-Z.a-z]+)?", span) and words:
                # "/ `list` / `remove ADDRESS`": more subcommands of the same group
                out.append(([*words[:-1], span.split()[0]], set(), row))
            elif span.startswith("--") and out:
                words_, opts, row_ = out[-1]
                out[-1] = (words_, opts | set(re.findall(r"--[a-z-]+", span)), row_)
    return out


ROWS = command_rows()


def test_the_table_was_read() -> None:
    names = {" ".join(w) for w, _, _ in ROWS}
    assert len(ROWS) >= 17, names
    for must in ("run", "subscribers import", "subscribers activate", "bounces", "topics test"):
        assert must in names, names


@pytest.mark.parametrize("words,options", [(w, o) for w, o, _ in ROWS], ids=lambda v: str(v))
def test_every_command_in_the_readme_runs_its_help(words: list[str], options: set[str]) -> None:
    result = CliRunner().invoke(main, [*words, "--help"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    missing = sorted(o for o in options if o not in result.output)
    assert not missing, f"`digest {' '.join(words)} --help` has no {missing}"


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.fail("this test needs the project's git checkout (a fresh clone of HEAD)")
    folder = tmp_path_factory.mktemp("clone")
    target = folder / "papers-digest"
    # The real captures sit beside the checkout, in ../shared (tests/support/paths.py),
    # as on every machine that runs the tests.
    (folder / "shared").symlink_to((ROOT.parent / "shared").resolve())
    subprocess.run(
        ["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(target)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return target


def in_clone(clone: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`python ARGS` with the clone's code first on the path (the venv's packages)."""
    env = os.environ | {"PYTHONPATH": str(clone)}
    env.pop("DIGEST_CONFIG", None)
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env
    )


def test_the_top_command_runs_on_a_fresh_clone(clone: Path, tmp_path: Path) -> None:
    # The README: `digest run`, and with no internet `--from examples/page-daily-....html`.
    top = README.read_text(encoding="utf-8").split("```sh", 1)[1].split("```", 1)[0]
    example = re.search(r"--from (examples/\S+\.html)", top)
    assert example and "digest run" in top
    page = clone / example.group(1)
    assert page.exists(), f"{example.group(1)} is not committed"
    done = in_clone(clone, "-m", "digest", "run", "--from", str(page), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "seen 13, new 13" in done.stdout
    probe = "import digest, sys; print(digest.__file__)"
    where = in_clone(clone, "-c", probe, cwd=tmp_path).stdout.strip()
    assert where.startswith(str(clone)), where  # the clone's code ran, not this tree's


def test_the_test_suite_collects_on_a_fresh_clone(clone: Path) -> None:
    # `python -m pytest` on a fresh clone: every test module imports (nothing it needs
    # is left uncommitted: support modules, data folders, templates).
    done = in_clone(
        clone, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", cwd=clone
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    collected = re.search(r"(\d+) tests? collected", done.stdout)
    assert collected and int(collected.group(1)) > 800, done.stdout[-500:]
