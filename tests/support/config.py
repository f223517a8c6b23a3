"""One config builder: a config.toml written from keyword pieces, one per section.

    write_config(tmp_path, store={"database": str(db)}, smtp=smtp_section(port),
                 topics=[{"name": "agents", "keywords": ["agent*"]}])

A dict is a table (`[store]`), a list of dicts an array of tables (`[[topics]]`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from digest.config import Config, SmtpConfig, load_config


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        # A JSON string is a TOML basic string (same escapes).
        return json.dumps(str(value), ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def toml_text(**sections: dict[str, Any] | list[dict[str, Any]]) -> str:
    """The TOML text of `sections`, in the order given."""
    out: list[str] = []
    for name, body in sections.items():
        tables = body if isinstance(body, list) else [body]
        header = f"[[{name}]]" if isinstance(body, list) else f"[{name}]"
        for table in tables:
            out.append(header)
            out += [f"{key} = {_value(v)}" for key, v in table.items() if v is not None]
            out.append("")
    return "\n".join(out)


def write_config(
    folder: Path, name: str = "config.toml", **sections: dict[str, Any] | list[dict[str, Any]]
) -> Path:
    """Write `sections` as TOML to folder/name; return its path."""
    path = folder / name
    path.write_text(toml_text(**sections), encoding="utf-8")
    return path


def smtp_section(port: int, **keys: Any) -> dict[str, Any]:
    """[smtp] for the test server on 127.0.0.1:port: plain, no rate limit; `keys` add to it
    (sender, timeout, ...)."""
    return {"host": "127.0.0.1", "port": port, "security": "none", "rate_per_minute": 0} | keys


def smtp_config(port: int, **keys: Any) -> SmtpConfig:
    """SmtpConfig for the test server on 127.0.0.1:port: plain, no rate limit, 5 s timeout;
    `keys` override or add (sender, retries, ...)."""
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "security": "none",
        "rate_per_minute": 0,
        "timeout": 5.0,
    }
    return SmtpConfig(**(values | keys))


def subscribers_section(addresses: list[str]) -> list[dict[str, Any]]:
    """[[subscribers]] with these addresses and no topics."""
    return [{"email": a} for a in addresses]


def load(path: Path) -> Config:
    """The config as `digest --config path` would load it (no DIGEST_* variables)."""
    return load_config(path, env={})
