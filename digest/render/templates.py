"""The one Jinja environment the email and the web pages are rendered with.

The built-in templates are the project's top-level `templates/` folder (email/, web/). In
a wheel or the image they are package data, `digest/templates/`, mapped from that folder
(pyproject.toml); in a source checkout (and an editable install) they are read where they
are. `[templates] dir` names a folder whose templates are used first, so a copy of
`templates/` restyles the email and the pages; what it lacks comes from the built-in ones.

Rules for every template: HTML-escaped by file extension (.html yes, .txt no), an undefined
variable is an error (StrictUndefined) rather than an empty string in a reader's inbox, and
block tags leave no blank lines behind (trim_blocks, lstrip_blocks), which the plain-text
email needs.
"""

from __future__ import annotations

import functools
from pathlib import Path

import jinja2

from digest.errors import DigestError

EMAIL_HTML = "email/digest.html"
EMAIL_TEXT = "email/digest.txt"
EMAIL_PAPER_HTML = "email/paper.html"  # one paper: its card, or its one line
EMAIL_PAPER_TEXT = "email/paper.txt"
EMAIL_STYLE = "email/style.css"  # inlined into each fragment and the frame

_PACKAGE = Path(__file__).resolve().parent.parent  # the digest/ folder


class TemplatesMissing(DigestError):
    """The built-in templates are not where the installation should have put them."""


def builtin_folder() -> Path:
    """Return the folder of the built-in templates.

    Inside the package in a wheel install; beside it in a source checkout. (Not found through
    importlib.resources: an editable install does not map a package without Python files.)
    """
    for folder in (_PACKAGE / "templates", _PACKAGE.parent / "templates"):
        if (folder / EMAIL_HTML).is_file():
            return folder
    raise TemplatesMissing(
        f"the built-in templates are missing: no {EMAIL_HTML} in {_PACKAGE / 'templates'} "
        f"or {_PACKAGE.parent / 'templates'}; reinstall papers-digest"
    )


@functools.lru_cache(maxsize=8)
def environment(folder: str = "") -> jinja2.Environment:
    """Return the environment that reads `folder` (`[templates] dir`; "" for none) first,
    then the built-in templates. One per folder, made once: Jinja caches what it compiled."""
    search = [folder] if folder else []
    search.append(str(builtin_folder()))
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(search),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def template_origin(env: jinja2.Environment, name: str) -> str:
    """Return the file `name` is read from in `env` (for error messages), or `name` itself."""
    loader = env.loader
    if isinstance(loader, jinja2.FileSystemLoader):
        for folder in loader.searchpath:
            path = Path(folder) / name
            if path.is_file():
                return str(path)
    return name
