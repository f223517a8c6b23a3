"""The renderer's shortcuts (issue 17's CPU target) against the reference way.

A reader's bodies are put together from pieces kept quoted-printable (the fragments
encoded once per send, the frame line by line), not encoded whole per reader; the bytes
of every message must be those of the reference way (`DigestRenderer.reference`: the
fragments put in, each body encoded whole), for every mix of topics, with feedback links,
personal keywords, several days' editions and a restyled template."""

from __future__ import annotations

import binascii
import dataclasses
import itertools
import random
import shutil
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path

import jinja2
import pytest
import time_machine
from hypothesis import given, settings
from hypothesis import strategies as st

from digest.config import Config, TemplatesConfig
from digest.models import Subscriber
from digest.ranking import match_strength
from digest.render.email import (
    DigestRenderer,
    Edition,
    _fill_token,
    _textwrap,
    _token_form,
    _wrap_line,
)
from digest.render.mailheaders import WireMessage
from digest.render.templates import builtin_folder
from digest.store import Store
from tests.support.mail import TOPICS, make_config, real_day, topic_mix_readers

NOW = "2026-12-02 01:00:00Z"
KEY = b"feedback-key-of-the-test-service"


def qp(text: str) -> str:
    return binascii.b2a_qp(text.encode("utf-8"), istext=True).decode("ascii")


def test_quoted_printable_of_pieces_cut_at_line_ends_is_the_whole() -> None:
    # The property the pieces rest on: cut after any line end, the encodings joined are
    # the encoding of the whole. Lines long enough for soft breaks, trailing spaces and
    # tabs, a dot alone, "=" and non-ASCII, at every cut.
    rng = random.Random(5)
    alphabet = ["a", "b", " ", "\t", ".", "=", "é", "→", "x" * 40, '<p style="a: b">']
    for _ in range(400):
        lines = [
            "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
            for _ in range(rng.randint(1, 8))
        ]
        lines += [".", " ", ""]
        rng.shuffle(lines)
        text = "\n".join(lines) + rng.choice(["", "\n", " ", "."])
        whole = qp(text)
        ends = [i + 1 for i, c in enumerate(text) if c == "\n"]
        for cuts in (ends, rng.sample(ends, len(ends) // 2)):
            bounds = [0, *sorted(cuts), len(text)]
            pieces = [text[a:b] for a, b in itertools.pairwise(bounds)]
            assert "".join(qp(p) for p in pieces) == whole, text


def readers() -> list[Subscriber]:
    subs = topic_mix_readers("reader.{i}", token_repeat=9)
    subs.append(Subscriber("kw@example.net", keywords="humanoid robot*", token="k"))
    subs.append(Subscriber("both@example.net", ("video",), keywords="diffusion", token="b"))
    subs.append(Subscriber(f"{'long' * 30}@example.net", ("video", "robots"), token="l" * 90))
    subs.append(Subscriber("\"odd <local> & 'x'\"@example.net", ("video",), token="o&<>"))
    return subs


def same_bytes(
    renderer: DigestRenderer, subs: list[Subscriber], edition: Edition | None = None
) -> int:
    """Render each reader both ways in one renderer (one boundary, one clock second);
    assert the bytes are the same; return how many got an email."""
    checked = 0
    with time_machine.travel(NOW, tick=False):
        for sub in subs:
            fast = renderer.render(sub, edition)
            renderer.reference = True
            try:
                slow = renderer.render(sub, edition)
            finally:
                renderer.reference = False
            assert (fast is None) == (slow is None), sub
            if fast is None:
                continue
            assert isinstance(fast, WireMessage) and isinstance(slow, WireMessage)
            assert fast.wire() is not None and fast.wire() == slow.wire(), sub
            checked += 1
    return checked


def test_a_cards_feedback_lines_are_filled_into_their_encoded_form() -> None:
    # A reader's token goes into the lines encoded once per token length: the same bytes
    # as encoding the lines with the token in, wherever the soft breaks fall (in the
    # token, just before or after it, between two tokens), for every length.
    rng = random.Random(17)
    mark = "pdxMARKk"
    token_chars = "abcXYZ019-_.~%"
    shapes = [
        f'<p class="feedback" style="margin: 0"><a href="https://x.org/f/{mark}/more" '
        f'style="color: #333">More like this</a> &middot; <a href="https://x.org/f/{mark}/'
        'fewer">Fewer</a></p>\n',
        f"  More like this: https://x.org/feedback/{mark}/more\n"
        f"  Fewer like this: https://x.org/feedback/{mark}/fewer\n",
        f"{mark}{mark}\n",
        f"{mark}\n",
        f"é ={mark}= \n",
    ]
    filled = 0
    for lines in shapes:
        for size in range(1, 160):
            form = _token_form(lines, mark, size)
            assert form is not None
            for _ in range(3):
                token = "".join(rng.choice(token_chars) for _ in range(size - 1))
                token += rng.choice(token_chars.replace(".", ""))  # as the caller asks
                assert _fill_token(form, token) == qp(lines.replace(mark, token)), (lines, token)
                filled += 1
    assert filled == 5 * 159 * 3
    # No stand-in left: no form (the caller encodes the lines as they are).
    assert _token_form(f"~^|`{{}} {mark}\n", mark, 10) is None


_WORD = st.one_of(
    st.text(st.sampled_from("abé.xyz-/→"), min_size=1, max_size=14),
    st.sampled_from(["w" * 30, "https://x.org/" + "a" * 70]),
)
# Words apart by single spaces (what `_wrap_line` fills itself), under an indent or not;
# and lines with tabs, double and other spaces (left to textwrap).
_PLAIN_LINE = st.builds(
    lambda indent, words: indent + " ".join(words),
    st.sampled_from(["", "  ", "    "]),
    st.lists(_WORD, max_size=40),
)
_ODD_LINE = st.lists(
    st.sampled_from([*"ab -é\t\u00a0\u3000xyz.", "  ", "w" * 30]), max_size=120
).map("".join)


@settings(max_examples=3000, deadline=None)
@given(st.one_of(_PLAIN_LINE, _ODD_LINE))
def test_a_long_text_line_is_wrapped_as_textwrap_wraps_it(line: str) -> None:
    # `_wrap_line` fills words apart by single spaces itself (the reference way uses it
    # too, so only textwrap can tell it wrong): indents, long URLs, double spaces, tabs
    # and other spaces (left to textwrap), lines of every length.
    assert _wrap_line(line) == _textwrap(line)


@pytest.mark.parametrize("feedback", [False, True])
def test_every_mix_of_topics_gets_the_reference_bytes(store: Store, feedback: bool) -> None:
    papers, day = real_day(store)
    renderer = DigestRenderer(make_config(), papers, day, feedback_key=KEY if feedback else None)
    assert same_bytes(renderer, readers()) >= 15
    # the frame came from the template inlined once, not inlined per reader
    assert isinstance(renderer._inlined, jinja2.Template)


def test_budgets_and_editions_get_the_reference_bytes(store: Store) -> None:
    # Small budgets (lines and "more on the web"), no budget for lines, and a reader of
    # several days (an edition of part of the pool).
    papers, day = real_day(store)
    for full, listed in ((1, 2), (3, 0), (0, 5), (20, 20)):
        config = make_config(max_full=full, max_listed=listed)
        renderer = DigestRenderer(config, papers, day, feedback_key=KEY)
        assert same_bytes(renderer, readers()) >= 15
    renderer = DigestRenderer(make_config(), papers, day, feedback_key=KEY)
    some = frozenset(sp.paper.id for sp in papers[::2])
    edition = Edition(some, first_day=day - timedelta(days=6), weekly=True)
    assert same_bytes(renderer, readers(), edition) >= 10


def restyled(tmp_path: Path, changes: dict[str, tuple[str, str]]) -> Config:
    """The test config over a copy of the built-in templates with `changes` made: file
    (under the templates folder) -> (text that must be there, what replaces it; "" for
    text appended to the file)."""
    folder = tmp_path / "templates"
    shutil.copytree(builtin_folder(), folder)
    for name, (old, new) in changes.items():
        path = folder / name
        source = path.read_text()
        assert old in source, (name, old)
        path.write_text(source.replace(old, new) if old else source + new)
    return dataclasses.replace(make_config(), templates=TemplatesConfig(dir=str(folder)))


def test_a_restyled_template_with_marks_mid_line_is_encoded_whole(
    store: Store, tmp_path: Path
) -> None:
    # A copy of the templates whose cards share a line with other text: the pieces
    # cannot be cut there, so the body is encoded whole, and the bytes are still right.
    config = restyled(
        tmp_path,
        {
            "email/digest.html": ("{{ card }}\n", "<span>card:</span> {{ card }} <b>end</b>\n"),
            "email/digest.txt": ("{{ line }}\n", "> {{ line }}\n"),
        },
    )
    papers, day = real_day(store)
    renderer = DigestRenderer(config, papers, day, feedback_key=KEY)
    assert same_bytes(renderer, readers()[:12]) >= 5
    small = dataclasses.replace(config, email=dataclasses.replace(config.email, max_full=1))
    msg = DigestRenderer(small, papers, day).render(Subscriber("r@example.net", ("video",)))
    assert isinstance(msg, EmailMessage)
    text, page = (part.get_content() for part in msg.get_payload())
    assert "card:</span> <div" in page and "</div> <b>end</b>" in page
    assert "\n> - " in text


def test_chips_from_forms_escape_as_the_inliner_does(store: Store) -> None:
    # Topic titles with the characters HTML escapes differently in text and attributes,
    # and a non-breaking space: the filled-in chip is the one the templates and the
    # inliner make.
    odd = [
        dataclasses.replace(TOPICS[0], title='Video & "film" <clips>'),
        dataclasses.replace(TOPICS[1], title="Diffusion\xa0models 'n' more > less"),
        *TOPICS[2:],
    ]
    papers, day = real_day(store)
    config = dataclasses.replace(make_config(), topics=odd)
    renderer = DigestRenderer(config, papers, day, feedback_key=KEY)
    assert same_bytes(renderer, readers()) >= 15
    page = renderer.render(Subscriber("r@example.net", ("video", "diffusion"), token="t"))
    assert page is not None
    html = page.get_payload()[1].get_content()
    assert 'class="tag" style="' in html and 'Video &amp; "film" &lt;clips&gt;' in html
    # (and the chips did come from forms, one per shape, not one per paper)
    forms = renderer._chip_forms
    assert all(len(k) == 3 for k in forms) and all(f is not None for f in forms.values())


@pytest.mark.parametrize(
    "change",
    [
        # the chip shows something of the paper's: a form per paper
        ('<p class="why">', '<p class="why"><b>{{ p.title }}</b> '),
        # a value changed by a filter: no form gives it, rendered each time
        ("{{ tag }}</span>", "{{ tag | upper }}</span>"),
    ],
)
def test_a_restyled_chip_is_still_the_templates(
    store: Store, tmp_path: Path, change: tuple[str, str]
) -> None:
    config = restyled(tmp_path, {"email/paper.html": change})
    papers, day = real_day(store)
    renderer = DigestRenderer(config, papers, day)
    assert same_bytes(renderer, readers()) >= 15
    msg = renderer.render(Subscriber("r@example.net", ("video", "robots"), token="t"))
    assert msg is not None
    html = msg.get_payload()[1].get_content()
    assert ("VIDEO</span>" in html) if "upper" in change[1] else ("<b>The Llama 3 Herd" in html)
    per_paper = [f for k, f in renderer._chip_forms.items() if len(k) == 4]
    if "upper" in change[1]:
        assert not any(renderer._chip_forms.values())
    else:
        assert per_paper and all(f is not None for f in per_paper)


def test_a_frame_template_that_cannot_be_inlined_ahead_is_inlined_per_reader(
    store: Store, tmp_path: Path
) -> None:
    # A class chosen by an expression: inlining the template's source cannot see it, the
    # first frame of the send shows it, and every frame is then inlined as before.
    config = restyled(
        tmp_path, {"email/digest.html": ('<p class="date">', "<p class=\"{{ 'date' }}\">")}
    )
    papers, day = real_day(store)
    renderer = DigestRenderer(config, papers, day, feedback_key=KEY)
    assert same_bytes(renderer, readers()) >= 15
    assert renderer._inlined is False
    msg = renderer.render(Subscriber("r@example.net", ("video",), token="t"))
    assert msg is not None
    assert '<p class="date" style="margin: 4px 0 0 0;' in msg.get_payload()[1].get_content()


def test_a_stylesheet_with_sibling_selectors_is_inlined_per_reader(
    store: Store, tmp_path: Path
) -> None:
    # "li + li" or ":first-child" match a loop's body once in the template and each
    # repeat in a reader's page; the first frame's check could miss it (one item there),
    # so such a stylesheet is never inlined ahead.
    config = restyled(tmp_path, {"email/style.css": ("", "\nli + li { margin-top: 7px; }\n")})
    papers, day = real_day(store)
    renderer = DigestRenderer(config, papers, day, feedback_key=KEY)
    assert same_bytes(renderer, readers()) >= 15
    assert renderer._inlined is False


def test_a_readers_papers_from_the_topic_index_are_the_scan_of_every_paper(
    store: Store,
) -> None:
    # `selected` looks only at the papers of the reader's topics; the order and the
    # matches must be those of going over every paper of the pool (the way before).
    papers, day = real_day(store)
    renderer = DigestRenderer(make_config(), papers, day)
    some = frozenset(sp.paper.id for sp in papers[1::2])
    for sub in readers():
        personal = renderer._personal_topic(sub.keywords)
        key = tuple(sorted(set(sub.topics) | ({personal} if personal else set())))
        for edition in (None, Edition(some)):
            want = []
            for paper, matches in renderer.papers:
                if edition is not None and paper.id not in edition.paper_ids:
                    continue
                mine = [m for m in matches if m.topic in key]
                mine += [
                    f[paper.id] for n in key if paper.id in (f := renderer._personal.get(n, {}))
                ]
                if key and not mine:
                    continue
                mine.sort(key=lambda m: (-len(m.terms), renderer.topics[m.topic][0]))
                score = renderer._base_total[paper.id] + (match_strength(mine) if mine else 0.0)
                want.append((-score, -paper.upvotes, paper.id, mine))
            want.sort(key=lambda r: r[:3])
            got = renderer.selected(key, edition)
            assert [(p.id, m) for p, m in got] == [(r[2], r[3]) for r in want], sub
