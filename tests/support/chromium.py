"""Headless Chromium for the browser tests: the Debian binary, the flags, where
screenshots go, and the skip for a machine without it (.ci/run installs it)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.paths import ARTIFACTS as ARTIFACTS  # screenshots go there

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Without the background-networking flags Chromium knocks on Google's hosts at start.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="chromium is not installed (apt install chromium)"
)
