"""Where things are: the worktree, the real captures in ../shared/fixtures/real."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REAL = ROOT.parent / "shared" / "fixtures" / "real"
PAGE_2024_08_01 = REAL / "page-daily-2024-08-01.html"
DATA = ROOT / "tests" / "data"  # one folder per capture, walked by test_captures.py
ARTIFACTS = ROOT / "test-artifacts"  # screenshots and notes kept for a human to look at


def real_api_captures() -> list[Path]:
    """Every captured API answer, sorted by name (so by date)."""
    return sorted(REAL.glob("api-daily_papers-*.json"))
