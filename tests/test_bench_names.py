"""No script shadows a standard library module: `python bench/x.py` puts bench/ first on
sys.path, so a bench/email.py was what `import email` (smtplib's too) found."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.paths import ROOT


@pytest.mark.parametrize("folder", ["bench", "tests"])
def test_no_script_is_named_like_a_standard_library_module(folder: str) -> None:
    names = {p.stem for p in (ROOT / folder).glob("*.py")}
    assert names, folder
    assert not names & sys.stdlib_module_names


def test_the_send_benchmark_starts_without_path_tricks() -> None:
    assert not (ROOT / "bench" / "email.py").exists()
    text = (ROOT / "bench" / "mail_send.py").read_text()
    assert "noqa" not in text and "sys.path[:]" not in text
    # --help imports everything the benchmark uses (smtplib, and with it email) and exits.
    run = subprocess.run(
        [sys.executable, "bench/mail_send.py", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "--subscribers" in run.stdout
