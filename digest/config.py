"""TOML config -> typed `Config`. Built-in defaults, then the file, then `DIGEST_*` variables.

Every error names the file, the key and, where we can find it, the line.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from digest.errors import ConfigError, DigestError

DAILY_URL = "https://huggingface.co/papers"
TRENDING_URL = "https://huggingface.co/papers/trending"
API_URL = "https://huggingface.co/api/daily_papers"
LIST_WORDS = {"daily": DAILY_URL, "trending": TRENDING_URL}
DEFAULT_CONFIG_NAME = "config.toml"
CONTAINER_CONFIG = "/config/config.toml"

TOPIC_FIELDS = ("title", "abstract", "authors", "ai_keywords", "ai_summary")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


@dataclass(frozen=True)
class SourceConfig:
    list: str = "daily"  # "daily", "trending" or a full URL
    prefer: str = "page"  # "page" or "api": tried first, the other is the fallback
    api_url: str = API_URL
    timeout: float = 20.0  # seconds to wait for the body
    connect_timeout: float = 10.0
    retries: int = 3  # extra attempts after the first, on network errors, 429 and 5xx
    max_bytes: int = 20_000_000  # a page larger than this is refused

    @property
    def url(self) -> str:
        """The list's URL: the word resolved, or the URL as given."""
        return LIST_WORDS.get(self.list, self.list)


@dataclass(frozen=True)
class StoreConfig:
    database: str = "papers-digest.db"


@dataclass(frozen=True)
class BackfillConfig:
    concurrency: int = 2  # requests in flight at most
    source: str = "api"  # "api" or "page"


@dataclass(frozen=True)
class FeedsConfig:
    dir: str = "feeds"
    base_url: str = "http://127.0.0.1:8000"
    title: str = "Hugging Face Daily Papers"
    days: int = 7  # items from the last N days...
    max_items: int = 200  # ...but never more than this
    ttl: int = 120  # minutes readers may cache a feed


@dataclass(frozen=True)
class TopicConfig:
    name: str
    title: str = ""
    keywords: list[str] = field(default_factory=list)
    phrases: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    fields: list[str] = field(default_factory=lambda: ["title", "abstract", "ai_keywords"])
    authors: list[str] = field(default_factory=list)
    organizations: list[str] = field(default_factory=list)
    has_code: bool = False
    min_upvotes: int = 0
    min_stars: int = 0

    @property
    def display_title(self) -> str:
        return self.title or self.name


@dataclass(frozen=True)
class SmtpConfig:
    host: str = ""  # empty: no SMTP server, `digest run` skips the send and says so
    port: int = 587
    security: str = "starttls"  # "starttls", "tls" (implicit) or "none"
    user: str = ""
    password_file: str = ""  # the password itself comes from DIGEST_SMTP_PASSWORD or this file
    sender: str = "papers-digest@localhost"
    timeout: float = 30.0
    rate_per_minute: int = 600
    retries: int = 3
    ca_file: str = ""  # PEM bundle to trust for the server's certificate (a private CA)

    @property
    def password(self) -> str:
        env = os.environ.get("DIGEST_SMTP_PASSWORD")
        if env is not None:
            return env
        if self.password_file:
            try:
                return Path(self.password_file).read_text().strip()
            except OSError as e:
                raise ConfigError(
                    f"cannot read the password file: {e.strerror}",
                    key="smtp.password_file",
                    path=self.password_file,
                ) from e
        return ""


@dataclass(frozen=True)
class EmailConfig:
    subject_prefix: str = "Daily Papers"
    abstract_chars: int = 600  # abstracts are trimmed at a sentence boundary near this
    use_ai_summary: bool = False
    no_topics_gets: str = "everything"  # "everything" or "nothing"
    send_when_empty: bool = False  # mail a subscriber whose topics matched nothing today
    domain: str = ""  # Message-ID and List-Id domain; default: the sender's domain
    operator: str = ""  # mailed once a day when the send is held back by a failed fetch


@dataclass(frozen=True)
class SubscriberConfig:
    email: str
    topics: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ScheduleConfig:
    timezone: str = ""  # IANA name, e.g. "Europe/Berlin"; empty: the machine's (TZ, /etc/localtime)
    fetch: str = "0 */2 * * *"  # crontab line (minute hour day month weekday), local time
    send_time: str = "08:00"  # HH:MM, local time
    send_days: list[str] = field(
        default_factory=lambda: ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    )
    jitter: int = 30  # seconds of random delay on each fire
    misfire_grace: int = 3600  # seconds late a fire may still run (missed ones coalesce)
    catch_up: bool = True  # on start, run what the downtime missed (once)
    retries: int = 3  # more tries the same day when a run fails
    retry_after: int = 15  # minutes between those tries
    lock_wait: int = 600  # seconds to wait for another process's run to finish


@dataclass(frozen=True)
class WebConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    stale_after: int = 24  # hours: /healthz answers 503 when the last success is older
    confirm_hours: int = 48  # a confirmation link works this long; then the pending entry goes
    subscribe_per_hour: int = 5  # subscribe requests per client address and hour
    confirm_mails_per_hour: int = 100  # subscription mails (all addresses) per hour
    # Proxies whose X-Forwarded-For names the client (for the rate limit); "*" trusts all.
    # None by default: any local process could otherwise name a client of its choosing.
    trusted_proxies: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Config:
    source: SourceConfig = field(default_factory=SourceConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    backfill: BackfillConfig = field(default_factory=BackfillConfig)
    feeds: FeedsConfig = field(default_factory=FeedsConfig)
    topics: list[TopicConfig] = field(default_factory=list)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    email: EmailConfig = field(default_factory=EmailConfig)
    subscribers: list[SubscriberConfig] = field(default_factory=list)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    web: WebConfig = field(default_factory=WebConfig)
    path: str | None = None  # the file it came from, if any

    def topic(self, name: str) -> TopicConfig:
        for t in self.topics:
            if t.name == name:
                return t
        known = ", ".join(t.name for t in self.topics) or "none configured"
        raise ConfigError(
            f"no topic named {name!r} (topics: {known})", path=self.path, key="topics"
        )


# Environment variables that override one key each (for containers).
ENV_OVERRIDES: dict[str, tuple[str, str]] = {
    "DIGEST_DB": ("store", "database"),
    "DIGEST_SOURCE_URL": ("source", "list"),
    "DIGEST_SOURCE": ("source", "list"),
    "DIGEST_API_URL": ("source", "api_url"),
    "DIGEST_FEEDS_DIR": ("feeds", "dir"),
    "DIGEST_BASE_URL": ("feeds", "base_url"),
    "DIGEST_SMTP_HOST": ("smtp", "host"),
    "DIGEST_SMTP_PORT": ("smtp", "port"),
    "DIGEST_SMTP_USER": ("smtp", "user"),
    "DIGEST_SMTP_SECURITY": ("smtp", "security"),
    "DIGEST_SMTP_SENDER": ("smtp", "sender"),
}


def config_path_from(cli_path: str | None, env: Mapping[str, str] | None = None) -> Path | None:
    """The config file to read: --config, else DIGEST_CONFIG, else ./config.toml or
    /config/config.toml if present, else None (built-in defaults)."""
    env = os.environ if env is None else env
    if cli_path:
        return Path(cli_path)
    if env.get("DIGEST_CONFIG"):
        return Path(env["DIGEST_CONFIG"])
    # ./config.toml, then the container's mount point; neither is required.
    for default in (Path(DEFAULT_CONFIG_NAME), Path(CONTAINER_CONFIG)):
        if default.is_file():
            return default
    return None


def load_config(path: Path | str | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Return the typed config: defaults, then the file at `path`, then `env` overrides.

    Raises ConfigError naming the file, line and key for anything it cannot accept.
    """
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    text = ""
    where: str | None = None
    if path is not None:
        where = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError("file not found", path=where) from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read: {e}", path=where) from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            # Python 3.11's TOMLDecodeError only says where in its message.
            m = re.search(r"\(at line (\d+)", str(e))
            line = int(m.group(1)) if m else None
            msg = str(e).split(" (at line")[0]
            key = _Loader(where, text).key_at(line) if line else None
            raise ConfigError(f"not valid TOML: {msg}", path=where, line=line, key=key) from None
    from_env: dict[tuple[str, str], str] = {}
    for var, (section, key) in ENV_OVERRIDES.items():
        if env.get(var):
            value: Any = env[var]
            if key == "port":
                # isascii: "²".isdigit() is true, but int("²") raises.
                if not (value.isascii() and value.isdigit()):
                    raise ConfigError(
                        f"{var}={value!r} is not a port number", path="environment", key=var
                    )
                value = int(value)
            data.setdefault(section, {})[key] = value
            from_env[(section, key)] = var
    loader = _Loader(where, text, from_env)
    config = loader.build(Config, data, ())
    config = dataclasses.replace(config, path=where)
    _validate(config, loader)
    return config


class _Loader:
    """Turns nested TOML tables into the dataclasses above, checking names and types."""

    def __init__(
        self, path: str | None, text: str, from_env: Mapping[tuple[str, str], str] | None = None
    ) -> None:
        self.path = path
        self.lines = text.splitlines()
        self.from_env = dict(from_env or {})  # (section, key) -> the variable that set it

    def error(
        self, message: str, loc: tuple[str | int, ...], key: str | None = None
    ) -> ConfigError:
        # A value a DIGEST_* variable set is blamed on the variable, not on a file line.
        if key and len(loc) == 1 and (str(loc[0]), key) in self.from_env:
            var = self.from_env[(str(loc[0]), key)]
            return ConfigError(message, path="environment", key=var)
        dotted = _dotted(loc + ((key,) if key else ()))
        return ConfigError(message, path=self.path, key=dotted, line=self.find_line(loc, key))

    def key_at(self, line: int) -> str | None:
        """The dotted key set on `line` (1-based), for errors tomllib reports by line only."""
        if not 0 < line <= len(self.lines):
            return None
        m = re.match(r'^\s*"?([A-Za-z0-9_-]+)"?\s*=', self.lines[line - 1])
        if not m:
            return None
        table = ""
        for raw in reversed(self.lines[: line - 1]):
            h = re.match(r"^\s*\[\[?\s*([^\]]+?)\s*\]", raw)
            if h:
                table = h.group(1).replace('"', "").replace(" ", "") + "."
                break
        return table + m.group(1)

    def find_line(self, loc: tuple[str | int, ...], key: str | None) -> int | None:
        """The line that sets `key` in table `loc` (e.g. ("topics", 1)), or the table header."""
        if not self.lines:
            return None
        table = tuple(p for p in loc if isinstance(p, str))
        index = next((p for p in loc if isinstance(p, int)), None)
        current: tuple[str, ...] = ()
        counts: dict[tuple[str, ...], int] = {}
        header_line = None
        for n, raw in enumerate(self.lines, start=1):
            line = raw.strip()
            m = re.match(r"^\[\[\s*([^\]]+?)\s*\]\]", line) or re.match(
                r"^\[\s*([^\]]+?)\s*\]", line
            )
            if m:
                current = tuple(s.strip().strip('"') for s in m.group(1).split("."))
                if line.startswith("[["):
                    counts[current] = counts.get(current, -1) + 1
                in_table = current == table and (index is None or counts.get(current) == index)
                if in_table and header_line is None:
                    header_line = n
                continue
            in_table = current == table and (index is None or counts.get(current) == index)
            if key and in_table and re.match(rf'^"?{re.escape(key)}"?\s*=', line):
                return n
        return header_line

    def build(self, cls: Any, data: Any, loc: tuple[str | int, ...]) -> Any:
        if not isinstance(data, dict):
            raise self.error(f"must be a table, not {_kind(data)}", loc)
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "path"}
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key not in fields:
                hint = ""
                if key == "password":
                    hint = " (put the password in DIGEST_SMTP_PASSWORD or a password_file)"
                known = ", ".join(fields)
                raise self.error(f"unknown key{hint}; known keys: {known}", loc, key)
            values[key] = self.convert(hints[key], value, loc, key)
        for name, f in fields.items():
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            if required and name not in values:
                raise self.error("is required", loc, name)
        return cls(**values)

    def convert(self, hint: Any, value: Any, loc: tuple[str | int, ...], key: str) -> Any:
        origin = typing.get_origin(hint)
        if dataclasses.is_dataclass(hint):
            return self.build(hint, value, (*loc, key))
        if origin is list:
            (item_type,) = typing.get_args(hint)
            if not isinstance(value, list):
                raise self.error(f"must be a list, not {_kind(value)}", loc, key)
            if dataclasses.is_dataclass(item_type):
                return [self.build(item_type, v, (*loc, key, i)) for i, v in enumerate(value)]
            return [self.convert(item_type, v, loc, key) for v in value]
        if origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            return self.convert(args[0], value, loc, key)
        if hint is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if hint is int and isinstance(value, bool):
            raise self.error("must be a number, not true/false", loc, key)
        if not isinstance(value, hint):
            raise self.error(
                f"must be {_kind_name(hint)}, not {_kind(value)} ({value!r})", loc, key
            )
        return value


def is_http_url(text: str) -> bool:
    """True for an http(s) URL with a host: what a list or API address must be."""
    return re.match(r"^https?://[^/\s]+", text) is not None


def _validate(config: Config, loader: _Loader) -> None:
    """Checks that span keys or need the values, not only the types."""
    # Imported here: both modules import this one.
    from digest.subscribers import normalize_address
    from digest.topics import term_problem

    src = config.source
    if src.list not in LIST_WORDS and not is_http_url(src.list):
        raise loader.error(
            f"{src.list!r} is not 'daily', 'trending' or an http(s) URL", ("source",), "list"
        )
    if not is_http_url(src.api_url):
        raise loader.error(f"{src.api_url!r} is not an http(s) URL", ("source",), "api_url")
    if src.prefer not in ("page", "api"):
        raise loader.error(f"{src.prefer!r} must be 'page' or 'api'", ("source",), "prefer")
    for key in ("timeout", "connect_timeout"):
        if getattr(src, key) <= 0:
            raise loader.error("must be more than 0", ("source",), key)
    if src.retries < 0:
        raise loader.error("must not be negative", ("source",), "retries")
    if src.max_bytes <= 0:
        raise loader.error("must be more than 0", ("source",), "max_bytes")
    # Zero or less would quietly empty every feed, or trim every abstract to nothing.
    for section, key, least in (
        ("feeds", "days", 1),
        ("feeds", "max_items", 1),
        ("feeds", "ttl", 0),
        ("email", "abstract_chars", 0),
    ):
        if getattr(getattr(config, section), key) < least:
            raise loader.error(f"must be at least {least}", (section,), key)
    if config.backfill.concurrency < 1:
        raise loader.error("must be at least 1", ("backfill",), "concurrency")
    if config.backfill.source not in ("page", "api"):
        raise loader.error("must be 'page' or 'api'", ("backfill",), "source")
    if not 0 < config.smtp.port < 65536:
        raise loader.error("must be a port number, 1 to 65535", ("smtp",), "port")
    if config.smtp.security not in ("starttls", "tls", "none"):
        raise loader.error("must be 'starttls', 'tls' or 'none'", ("smtp",), "security")
    if config.email.no_topics_gets not in ("everything", "nothing"):
        raise loader.error("must be 'everything' or 'nothing'", ("email",), "no_topics_gets")
    operator = config.email.operator
    if operator and ("@" not in operator or any(c.isspace() for c in operator.strip())):
        raise loader.error(f"{operator!r} is not an email address", ("email",), "operator")
    seen: set[str] = set()
    for i, topic in enumerate(config.topics):
        loc = ("topics", i)
        if not _NAME_RE.fullmatch(topic.name):  # fullmatch: "$" lets a final newline in
            raise loader.error(
                f"topic name {topic.name!r} must be lower-case letters, digits, "
                "'-' or '_' (it becomes a feed file name)",
                loc,
                "name",
            )
        if topic.name in seen:
            raise loader.error(f"topic {topic.name!r} is named twice", loc, "name")
        if topic.name in ("all", "feeds"):
            # feeds/all.xml is every paper and feeds/feeds.opml the list of feeds.
            raise loader.error(f"topic name {topic.name!r} is reserved", loc, "name")
        seen.add(topic.name)
        for key in ("keywords", "phrases", "exclude", "authors", "organizations"):
            for term in getattr(topic, key):
                if not term.strip():
                    raise loader.error(f"topic {topic.name!r} has an empty term", loc, key)
                problem = term_problem(term)
                if problem:
                    raise loader.error(f"topic {topic.name!r}: {problem}", loc, key)
        if not (topic.keywords or topic.phrases or topic.authors or topic.organizations):
            raise loader.error(
                f"topic {topic.name!r} has no terms: give keywords, phrases, "
                "authors or organizations",
                loc,
            )
        if not topic.fields:
            raise loader.error(
                f"topic {topic.name!r} looks in no fields, so it can never match "
                f"(leave `fields` out for the default, or choose from {', '.join(TOPIC_FIELDS)})",
                loc,
                "fields",
            )
        for key in ("min_upvotes", "min_stars"):
            if getattr(topic, key) < 0:
                raise loader.error(f"topic {topic.name!r}: must not be negative", loc, key)
        for f in topic.fields:
            if f not in TOPIC_FIELDS:
                raise loader.error(
                    f"topic {topic.name!r}: unknown field {f!r} "
                    f"(choose from {', '.join(TOPIC_FIELDS)})",
                    loc,
                    "fields",
                )
    for i, sub in enumerate(config.subscribers):
        try:
            normalize_address(sub.email)
        except DigestError as e:
            raise loader.error(str(e), ("subscribers", i), "email") from None
        for name in sub.topics:
            if name not in seen:
                raise loader.error(
                    f"subscriber {sub.email!r} follows unknown topic {name!r}",
                    ("subscribers", i),
                    "topics",
                )


def _dotted(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _kind(value: Any) -> str:
    return {
        bool: "true/false",
        int: "a number",
        float: "a number",
        str: "text",
        list: "a list",
        dict: "a table",
    }.get(type(value), type(value).__name__)


def _kind_name(hint: Any) -> str:
    return {bool: "true or false", int: "a whole number", float: "a number", str: "text"}.get(
        hint, getattr(hint, "__name__", str(hint))
    )
