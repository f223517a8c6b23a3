"""The README's first command, offline: `digest run --from` the shipped example page."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.paths import ROOT


def test_run_from_example_page_twice(tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "digest",
        "run",
        "--from",
        str(ROOT / "examples" / "page-daily-2024-08-01.html"),
    ]
    first = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, check=True)
    assert "seen 13, new 13" in first.stdout
    assert (tmp_path / "papers-digest.db").exists()
    second = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, check=True)
    assert "seen 13, new 0" in second.stdout
