"""arXiv ids from a BibTeX library, as Zotero exports it (`digest topics like --from`).

Zotero writes an arXiv preprint with `url = {http://arxiv.org/abs/2407.21783}` and
`doi = {10.48550/arXiv.2407.21783}` (and `note = {arXiv:2407.21783 [cs]}`); Better BibTeX
adds `eprint = {2407.21783}` with `archiveprefix = {arXiv}`. The id is taken from
`eprint`, then `url`, then `doi`, without its version. An entry with none (a journal
paper, a book) is reported by name and line, not guessed from its title; a file that is
not BibTeX (an unclosed brace or quote, an entry with no key) is an error naming its line.

A small reader of its own rather than a dependency: only entries and their fields are
needed, not macros, crossrefs or LaTeX accents.
"""

from __future__ import annotations

import re
from pathlib import Path

from digest.errors import DigestError

_ENTRY_RE = re.compile(r"@\s*([A-Za-z]+)\s*[{(]")
_FIELD_RE = re.compile(r"\s*([A-Za-z][\w:.+-]*)\s*=\s*")
_NEW_ID = r"(\d{4}\.\d{4,5})(?:v\d+)?"
_EPRINT_RE = re.compile(rf"^(?:arxiv:)?\s*{_NEW_ID}$", re.I)
_URL_RE = re.compile(rf"arxiv\.org/(?:abs|pdf)/{_NEW_ID}", re.I)
_DOI_RE = re.compile(rf"10\.48550/arxiv\.{_NEW_ID}", re.I)
_SKIPPED = {"comment", "preamble", "string"}


class _Reader:
    def __init__(self, text: str, name: str) -> None:
        self.text = text
        self.name = name
        self.pos = 0

    def line(self, pos: int | None = None) -> int:
        return self.text.count("\n", 0, self.pos if pos is None else pos) + 1

    def fail(self, why: str, pos: int | None = None) -> DigestError:
        return DigestError(f"{self.name}:{self.line(pos)}: {why}")

    def value(self) -> str:
        """Read one field value: {braced}, "quoted" or a bare word/number, joined by #."""
        parts: list[str] = []
        while True:
            start = self.pos
            if self.pos >= len(self.text):
                raise self.fail("the file ends inside a field")
            ch = self.text[self.pos]
            if ch == "{":
                depth, i = 0, self.pos
                while i < len(self.text):
                    c = self.text[i]
                    if c == "\\":
                        i += 2
                        continue
                    depth += (c == "{") - (c == "}")
                    if depth == 0:
                        break
                    i += 1
                else:
                    raise self.fail("a '{' is never closed", start)
                parts.append(self.text[start + 1 : i])
                self.pos = i + 1
            elif ch == '"':
                i = self.pos + 1
                depth = 0
                while i < len(self.text) and not (self.text[i] == '"' and depth == 0):
                    depth += (self.text[i] == "{") - (self.text[i] == "}")
                    i += 1
                if i >= len(self.text):
                    raise self.fail("a '\"' is never closed", start)
                parts.append(self.text[start + 1 : i])
                self.pos = i + 1
            else:
                m = re.compile(r"[^\s,#}]+").match(self.text, self.pos)
                if not m:
                    raise self.fail("a field has no value", start)
                parts.append(m.group(0))
                self.pos = m.end()
            rest = re.compile(r"\s*#\s*").match(self.text, self.pos)
            if not rest:
                return " ".join(" ".join(parts).split())
            self.pos = rest.end()


def entries(text: str, name: str = "<bibtex>") -> list[tuple[int, str, dict[str, str]]]:
    """Return (line, key, fields with lower-case names) per entry, in file order.

    Raises DigestError naming the line of the first thing that is not BibTeX.
    """
    r = _Reader(text, name)
    out: list[tuple[int, str, dict[str, str]]] = []
    while m := _ENTRY_RE.search(text, r.pos):
        kind = m.group(1).lower()
        start = m.start()
        r.pos = m.end()
        if kind in _SKIPPED:
            r.pos -= 1
            r.value() if text[r.pos] == "{" else None  # @comment{...}: skip its braces
            continue
        key_m = re.compile(r"\s*([^\s,{}()=]+)\s*,").match(text, r.pos)
        if not key_m:
            raise r.fail(f"@{m.group(1)} entry has no key", start)
        key = key_m.group(1)
        r.pos = key_m.end()
        fields: dict[str, str] = {}
        while True:
            end = re.compile(r"\s*[})]").match(text, r.pos)
            if end:
                r.pos = end.end()
                break
            f = _FIELD_RE.match(text, r.pos)
            if not f:
                if r.pos >= len(text.rstrip()):
                    raise r.fail(f"entry {key!r} is never closed", start)
                raise r.fail(f"entry {key!r}: expected a field (name = value)")
            r.pos = f.end()
            opened = r.line()  # where the value starts
            fields[f.group(1).lower()] = r.value()
            comma = re.compile(r"\s*,").match(text, r.pos)
            if comma:
                r.pos = comma.end()
            elif not re.compile(r"\s*[})]").match(text, r.pos):
                if opened != r.line():  # a value ran over lines: its braces, most likely
                    raise r.fail(
                        f"entry {key!r}: {f.group(1)} runs on to line {r.line()}; "
                        "are its braces balanced?",
                        f.start(1),
                    )
                raise r.fail(f"entry {key!r}: a ',' or the end of the entry is missing")
        out.append((r.line(start), key, fields))
    return out


def arxiv_id(fields: dict[str, str]) -> str | None:
    """Return the entry's arXiv id (no version) from eprint, url or doi, or None."""
    eprint = fields.get("eprint", "").strip()
    prefix = fields.get("archiveprefix", fields.get("eprinttype", "arxiv")).lower()
    if eprint and prefix == "arxiv" and (m := _EPRINT_RE.match(eprint)):
        return m.group(1)
    if m := _URL_RE.search(fields.get("url", "")):
        return m.group(1)
    if m := _DOI_RE.search(fields.get("doi", "")):
        return m.group(1)
    return None


def arxiv_ids(path: str | Path) -> tuple[list[str], list[str]]:
    """Return (the arXiv ids of the file's entries, once each in file order, and one line
    per entry without one: `FILE:LINE: entry KEY ("Title"): no arXiv id ...`).

    Raises DigestError naming the file (and line) when it cannot be read as BibTeX.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise DigestError(f"{path}: cannot read: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise DigestError(f"{path}: not UTF-8 text ({e.reason})") from None
    ids: list[str] = []
    skipped: list[str] = []
    for line, key, fields in entries(text, str(path)):
        found = arxiv_id(fields)
        if found is None:
            title = fields.get("title", "").replace("{", "").replace("}", "")
            skipped.append(
                f"{path}:{line}: entry {key} ({title[:60]!r}): no arXiv id in eprint, url "
                "or doi; left out"
            )
        elif found not in ids:
            ids.append(found)
    return ids, skipped
