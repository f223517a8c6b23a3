"""Headless Chromium renders the HTML part at phone and desktop widths: no sideways scrolling.

Screenshots go to test-artifacts/ (git-ignored) for a human to look at.
"""

from __future__ import annotations

import html
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from digest.models import Paper, StoredPaper, Subscriber
from digest.render.email import DigestRenderer
from digest.store import Store
from tests.support.chromium import ARTIFACTS, CHROMIUM, FLAGS, needs_chromium
from tests.support.mail import bodies, make_config, parsed, real_day

WIDTHS = (375, 1024)

pytestmark = needs_chromium


def chromium(profile: Path, width: int, *args: str) -> str:
    """Run headless Chromium at `width` px with no network chatter; return its stdout."""
    cmd = [
        CHROMIUM,
        "--headless",
        *FLAGS,
        f"--user-data-dir={profile}",
        f"--window-size={width},2000",
        *args,
    ]
    done = subprocess.run(cmd, capture_output=True, timeout=120)
    return done.stdout.decode("utf-8", "replace")


def overflow(page: str, width: int, folder: Path, profile: Path) -> tuple[int, int]:
    """Return (scrollWidth, clientWidth) of `page` laid out `width` px wide.

    --dump-dom ignores window sizes under 500 px, so the page sits in an iframe of the
    width wanted; srcdoc keeps it same-origin, so the parent's script can measure it.
    """
    probe = folder / f"probe-{width}.html"
    probe.write_text(
        '<!DOCTYPE html><html><head><title>-</title></head><body style="margin:0">'
        f'<iframe style="width:{width}px;height:1500px;border:0" srcdoc="{html.escape(page)}" '
        'onload="var d=this.contentDocument.documentElement;'
        "document.title='sw='+d.scrollWidth+' cw='+d.clientWidth\"></iframe></body></html>",
        encoding="utf-8",
    )
    out = chromium(profile, 1200, "--dump-dom", probe.as_uri())
    m = re.search(r"<title>sw=(\d+) cw=(\d+)</title>", out)
    assert m, out[-500:]
    return int(m.group(1)), int(m.group(2))


def test_html_fits_a_phone(store: Store, tmp_path: Path) -> None:
    papers, day = real_day(store)
    # One hostile paper too: an unbreakable 150-character word and a long URL-like title.
    long_word = "Supercalifragilistic" * 7 + "-" + "x" * 10
    wide = Paper(
        id="2501.00099",
        title=f"{long_word} https://example.org/{'a' * 80}",
        abstract=long_word + ". " + "Words here. " * 10,
        authors=("Very Long Name " * 5,),
        upvotes=1,
    )
    papers = [*papers, StoredPaper(wide, datetime(2024, 8, 1, tzinfo=UTC))]
    renderer = DigestRenderer(make_config(), papers, day)
    message = renderer.render(Subscriber("reader@example.net", (), "dG9rZW4.c2lnbmVk"))
    assert message is not None
    _, page = bodies(parsed(message))
    ARTIFACTS.mkdir(exist_ok=True)
    source = ARTIFACTS / "email.html"
    source.write_text(page, encoding="utf-8")
    profile = tmp_path / "chromium"
    for width in WIDTHS:
        shot = ARTIFACTS / f"email-{width}.png"
        shot.unlink(missing_ok=True)
        chromium(profile, width, f"--screenshot={shot}", source.as_uri())
        assert shot.stat().st_size > 10_000, f"no screenshot at {width} px"
        scroll, client = overflow(page, width, tmp_path, profile)
        print(f"{width} px: scrollWidth {scroll}, clientWidth {client}")
        assert 0 < client <= width and scroll <= client, f"scrolls sideways at {width} px"


def test_measure_sees_overflow(tmp_path: Path) -> None:
    """The measurement itself can fail: a 600 px block in a 375 px frame overflows."""
    scroll, client = overflow(
        '<body style="margin:0"><div style="width:600px">x</div></body>',
        375,
        tmp_path,
        tmp_path / "chromium",
    )
    assert scroll >= 600 > client
