"""Shared fixtures: real captures from ../shared/fixtures/real and a fresh store per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from digest.store import Store

ROOT = Path(__file__).resolve().parent.parent
REAL = ROOT.parent / "shared" / "fixtures" / "real"
PAGE_2024_08_01 = REAL / "page-daily-2024-08-01.html"


def real_api_captures() -> list[Path]:
    return sorted(REAL.glob("api-daily_papers-*.json"))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "test.db")
    yield s
    s.close()
