"""TOML config -> typed `Config`. Built-in defaults, then the file, then `DIGEST_*` variables.

Every error names the file, the key and, where we can find it, the line.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import math
import os
import re
import tomllib
import types
import typing
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parseaddr
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from digest.addresses import normalize_address
from digest.errors import ConfigError, DigestError
from digest.terms import term_problem

DAILY_URL = "https://huggingface.co/papers"
TRENDING_URL = "https://huggingface.co/papers/trending"
API_URL = "https://huggingface.co/api/daily_papers"
LIST_WORDS = {"daily": DAILY_URL, "trending": TRENDING_URL}
DEFAULT_CONFIG_NAME = "config.toml"
CONTAINER_CONFIG = "/config/config.toml"

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
FREQUENCIES = ("daily", "weekly")  # how often a reader gets the digest
# A new-style arXiv id (YYMM.NNNNN), as the Daily Papers list names papers.
ARXIV_ID_RE = re.compile(r"\d{4}\.\d{4,5}")
TOPIC_FIELDS = ("title", "abstract", "authors", "ai_keywords", "ai_summary")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


@dataclass(frozen=True)
class SourceConfig:
    list: str = "daily"  # "daily", "trending" or a full URL
    prefer: str = "page"  # "page" or "api": tried first, the other is the fallback
    api_url: str = API_URL
    timeout: float = 20.0  # seconds a whole response may take (each attempt)
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
    # Like-topics (issue 15): arXiv ids of seed papers; a paper at least min_similarity
    # like them (tf-idf cosine to their centroid) is in the topic, beside its keywords.
    like: list[str] = field(default_factory=list)
    min_similarity: float = 0.08  # = relevance.DEFAULT_MIN_SIMILARITY (a test checks)

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
    # The relay's limit, over all sessions together; 0: none (the default: a limit the
    # relay does not ask for would only cap the send; `digest check` says what it means).
    rate_per_minute: int = 0
    connections: int = 4  # SMTP sessions at once, sharing one queue of readers
    retries: int = 3
    ca_file: str = ""  # PEM bundle to trust for the server's certificate (a private CA)
    # Permanent refusals (5xx, or a DSN) on this many different days make a reader
    # "bouncing" (not mailed); one "no such user" (5.1.1) is enough.
    max_bounces: int = 3
    # DKIM: sign each message with this private key (PEM) as <dkim_selector>._domainkey.
    dkim_key_file: str = ""
    dkim_selector: str = ""

    # Never from the file: load_config resolves it, once, from DIGEST_SMTP_PASSWORD in the
    # env it is given, else from password_file. Not shown in a repr.
    password: str = field(default="", repr=False, metadata={"resolved": True})


@dataclass(frozen=True)
class BouncesConfig:
    # The IMAP mailbox that receives bounces+<tag>@domain (the envelope sender) and
    # unsubscribe+<tag>@domain (List-Unsubscribe's mailto). Empty: no mailbox; the
    # envelope sender stays smtp.sender and List-Unsubscribe has no mailto.
    imap_host: str = ""
    imap_port: int = 993
    imap_security: str = "tls"  # "tls" (implicit), "starttls" or "none"
    ca_file: str = ""  # PEM bundle to trust for the server's certificate (a private CA)
    imap_user: str = ""
    password_file: str = ""  # the password itself comes from DIGEST_BOUNCES_PASSWORD or this
    folder: str = "INBOX"
    domain: str = ""  # of the bounces+ / unsubscribe+ addresses; default: the sender's
    poll_minutes: int = 15  # how often `digest serve` reads the mailbox
    timeout: float = 30.0
    # POST /webhooks/bounce needs this secret (from DIGEST_BOUNCES_WEBHOOK_SECRET or this
    # file); with none, the route answers 404.
    webhook_secret_file: str = ""

    # Never from the file: load_config resolves them. Not shown in a repr.
    password: str = field(default="", repr=False, metadata={"resolved": True})
    webhook_secret: str = field(default="", repr=False, metadata={"resolved": True})


@dataclass(frozen=True)
class EmailConfig:
    subject_prefix: str = "Daily Papers"
    from_name: str = ""  # From's display name; default: smtp.sender's name, else feeds.title
    abstract_chars: int = 600  # abstracts are trimmed at a sentence boundary near this
    # The budget of one email: the best max_full papers in full, the next max_listed as one
    # line each, the rest counted with a link to the web page (under 90 KB of HTML).
    max_full: int = 12
    max_listed: int = 40
    use_ai_summary: bool = False
    no_topics_gets: str = "everything"  # "everything" or "nothing"
    send_when_empty: bool = False  # mail a subscriber whose topics matched nothing today
    domain: str = ""  # Message-ID and List-Id domain; default: the sender's domain
    operator: str = ""  # mailed once a day when the send is held back by a failed fetch


@dataclass(frozen=True)
class SubscriberConfig:
    email: str
    topics: list[str] = field(default_factory=list)
    frequency: str = "daily"  # "daily" or "weekly" (on schedule.weekly_day)


@dataclass(frozen=True)
class ScheduleConfig:
    timezone: str = ""  # IANA name, e.g. "Europe/Berlin"; empty: the machine's (TZ, /etc/localtime)
    fetch: str = "0 */2 * * *"  # crontab line (minute hour day month weekday), local time
    send_time: str = "08:00"  # HH:MM, local time
    send_days: list[str] = field(
        default_factory=lambda: ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    )
    weekly_day: str = "mon"  # the day weekly readers get their week's edition
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
class TemplatesConfig:
    # A folder laid out like the built-in templates/ (email/digest.html, web/base.html...);
    # a template found there is used instead of the built-in one. Empty: the built-in ones.
    dir: str = ""


@dataclass(frozen=True)
class Config:
    source: SourceConfig = field(default_factory=SourceConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    backfill: BackfillConfig = field(default_factory=BackfillConfig)
    feeds: FeedsConfig = field(default_factory=FeedsConfig)
    topics: list[TopicConfig] = field(default_factory=list)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    email: EmailConfig = field(default_factory=EmailConfig)
    bounces: BouncesConfig = field(default_factory=BouncesConfig)
    subscribers: list[SubscriberConfig] = field(default_factory=list)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    web: WebConfig = field(default_factory=WebConfig)
    templates: TemplatesConfig = field(default_factory=TemplatesConfig)
    path: str | None = None  # the file it came from, if any
    # DIGEST_SECRET_KEY (the token key) from the env load_config is given; "": the key kept
    # in the database (store.meta.secret_key). Never from the file, not in a repr.
    secret_key: str = field(default="", repr=False, metadata={"resolved": True})

    def topic(self, name: str) -> TopicConfig:
        for t in self.topics:
            if t.name == name:
                return t
        known = ", ".join(t.name for t in self.topics) or "none configured"
        raise ConfigError(
            f"no topic named {name!r} (topics: {known})", path=self.path, key="topics"
        )


# Environment variables that override one key each (for containers). An empty variable
# counts as not set, so `compose.yaml` can pass `${DIGEST_X:-}` without overriding the file.
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
    "DIGEST_SMTP_CONNECTIONS": ("smtp", "connections"),
    "DIGEST_BOUNCES_IMAP_HOST": ("bounces", "imap_host"),
    "DIGEST_BOUNCES_IMAP_PORT": ("bounces", "imap_port"),
    "DIGEST_BOUNCES_IMAP_USER": ("bounces", "imap_user"),
}

# The keys of ENV_OVERRIDES whose values are whole numbers, and what to call one.
_WHOLE_NUMBERS = {
    "port": "a port number",
    "imap_port": "a port number",
    "connections": "a whole number of SMTP sessions",
}

# The sane range of every number, by (table, key): (least, most, least excluded?).
# A value outside it is refused at load time, before it can overflow a timedelta,
# stall a fetch for days or never let a feed item in.
RANGES: dict[tuple[str, str], tuple[float, float, bool]] = {
    ("source", "timeout"): (0, 600, True),
    ("source", "connect_timeout"): (0, 300, True),
    ("source", "retries"): (0, 10, False),
    ("source", "max_bytes"): (1, 1_000_000_000, False),
    ("backfill", "concurrency"): (1, 8, False),
    ("feeds", "days"): (1, 3650, False),
    ("feeds", "max_items"): (1, 100_000, False),
    ("feeds", "ttl"): (0, 10_080, False),
    ("topics", "min_upvotes"): (0, 1_000_000, False),
    ("topics", "min_stars"): (0, 10_000_000, False),
    ("topics", "min_similarity"): (0, 1, False),
    ("smtp", "port"): (1, 65535, False),
    ("smtp", "timeout"): (0, 3600, True),
    ("smtp", "rate_per_minute"): (0, 100_000, False),
    ("smtp", "connections"): (1, 32, False),
    ("smtp", "retries"): (0, 10, False),
    ("smtp", "max_bounces"): (1, 100, False),
    ("bounces", "imap_port"): (1, 65535, False),
    ("bounces", "poll_minutes"): (1, 1440, False),
    ("bounces", "timeout"): (0, 600, True),
    ("email", "abstract_chars"): (0, 100_000, False),
    ("email", "max_full"): (0, 500, False),
    ("email", "max_listed"): (0, 2000, False),
    ("schedule", "jitter"): (0, 3600, False),
    ("schedule", "misfire_grace"): (0, 86_400, False),
    ("schedule", "retries"): (0, 100, False),
    ("schedule", "retry_after"): (1, 1440, False),
    ("schedule", "lock_wait"): (0, 86_400, False),
    ("web", "port"): (0, 65535, False),
    ("web", "stale_after"): (1, 8760, False),
    ("web", "confirm_hours"): (1, 8760, False),
    ("web", "subscribe_per_hour"): (1, 100_000, False),
    ("web", "confirm_mails_per_hour"): (1, 100_000, False),
}


class ConfigProblems(ConfigError):
    """Every problem found in one config; its path, key and line are the first one's.

    `str()` is one line per problem, so a command that stops on it shows them all.
    """

    def __init__(self, problems: list[ConfigError]) -> None:
        # In file order; the environment's first (it has no line).
        problems = sorted(problems, key=lambda p: p.line or 0)
        first = problems[0]
        DigestError.__init__(self, "\n".join(str(p) for p in problems))
        self.problems = problems
        self.path, self.key, self.line = first.path, first.key, first.line


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

    Every value is checked here, once: types, ranges, addresses, URLs, the time zone and
    the cron line. Raises ConfigProblems (a ConfigError) listing every problem, each
    naming the file, line and key, or the DIGEST_* variable that set the value.
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
    env_problems: list[ConfigError] = []
    for var, (section, key) in ENV_OVERRIDES.items():
        if not env.get(var):
            continue  # unset or empty: the file's value (or the default) stands
        value: Any = env[var]
        if key in _WHOLE_NUMBERS:
            # isascii: "²".isdigit() is true, but int("²") raises.
            if not (value.isascii() and value.isdigit()):
                what = _WHOLE_NUMBERS[key]
                env_problems.append(
                    ConfigError(f"{value!r} is not {what}", path="environment", key=var)
                )
                continue
            value = int(value)  # its range is checked with the file's values
        section_data = data.setdefault(section, {})
        if isinstance(section_data, dict):
            section_data[key] = value
            from_env[(section, key)] = var
    loader = _Loader(where, text, from_env)
    loader.problems.extend(env_problems)
    config = loader.build(Config, data, ())
    config = dataclasses.replace(config or Config(), path=where)
    _validate(config, loader)
    password = _smtp_password(config.smtp, env, loader)
    b = config.bounces
    bounces = dataclasses.replace(
        b,
        password=_secret(
            env, "DIGEST_BOUNCES_PASSWORD", b.password_file, ("bounces",), "password_file", loader
        ),
        webhook_secret=_secret(
            env,
            "DIGEST_BOUNCES_WEBHOOK_SECRET",
            b.webhook_secret_file,
            ("bounces",),
            "webhook_secret_file",
            loader,
        ),
    )
    if loader.problems:
        raise ConfigProblems(loader.problems)
    return dataclasses.replace(
        config,
        smtp=dataclasses.replace(config.smtp, password=password),
        bounces=bounces,
        secret_key=env.get("DIGEST_SECRET_KEY", ""),
    )


def _smtp_password(smtp: SmtpConfig, env: Mapping[str, str], loader: _Loader) -> str:
    """DIGEST_SMTP_PASSWORD from `env`, else the password file's first line, else ""."""
    if env.get("DIGEST_SMTP_PASSWORD"):  # empty counts as unset: compose passes `${VAR:-}`
        return env["DIGEST_SMTP_PASSWORD"]
    if not smtp.password_file or loader.reported(("smtp",), "password_file"):
        return ""
    try:
        return Path(smtp.password_file).read_text().strip()
    except (OSError, UnicodeDecodeError) as e:
        why = getattr(e, "strerror", None) or str(e)
        loader.report(
            f"{smtp.password_file}: cannot read the password file: {why}",
            ("smtp",),
            "password_file",
        )
        return ""


def _secret(
    env: Mapping[str, str],
    var: str,
    filename: str,
    loc: tuple[str, ...],
    key: str,
    loader: _Loader,
) -> str:
    """`var` from `env`, else the first line of `filename`, else "" (a file that cannot
    be read is reported as `key`)."""
    if env.get(var):
        return env[var]
    if not filename or loader.reported(loc, key):
        return ""
    try:
        return Path(filename).read_text().strip()
    except (OSError, UnicodeDecodeError) as e:
        why = getattr(e, "strerror", None) or str(e)
        loader.report(f"{filename}: cannot read the file: {why}", loc, key)
        return ""


_BAD = object()  # a value that was refused: the field keeps its default


class _Loader:
    """Turns nested TOML tables into the dataclasses above, checking names, types and
    ranges, and collecting every problem (not only the first) in `problems`."""

    def __init__(
        self, path: str | None, text: str, from_env: Mapping[tuple[str, str], str] | None = None
    ) -> None:
        self.path = path
        self.lines = text.splitlines()
        self.from_env = dict(from_env or {})  # (section, key) -> the variable that set it
        self.problems: list[ConfigError] = []
        self.broken_topics = False  # a topic was dropped or misnamed: skip "unknown topic"

    def error(
        self, message: str, loc: tuple[str | int, ...], key: str | None = None
    ) -> ConfigError:
        # A value a DIGEST_* variable set is blamed on the variable, not on a file line.
        if key and len(loc) == 1 and (str(loc[0]), key) in self.from_env:
            var = self.from_env[(str(loc[0]), key)]
            return ConfigError(message, path="environment", key=var)
        dotted = _dotted(loc + ((key,) if key else ()))
        return ConfigError(message, path=self.path, key=dotted, line=self.find_line(loc, key))

    def report(self, message: str, loc: tuple[str | int, ...], key: str | None = None) -> None:
        """Note a problem; a second one for the same key is left out (the first explains)."""
        problem = self.error(message, loc, key)
        if any((p.path, p.key) == (problem.path, problem.key) for p in self.problems):
            return
        if loc and loc[0] == "topics":
            self.broken_topics = True
        self.problems.append(problem)

    def reported(self, loc: tuple[str | int, ...], key: str) -> bool:
        dotted = _dotted((*loc, key))
        return any(p.key == dotted for p in self.problems)

    def reported_under(self, loc: tuple[str | int, ...]) -> bool:
        """True if a problem was already found in table `loc` (it may explain the next)."""
        dotted = _dotted(loc)
        return any(p.key == dotted or (p.key or "").startswith(dotted + ".") for p in self.problems)

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
        """The line that sets `key` in table `loc` (e.g. ("topics", 1)), or the table header
        (`key`'s own header when `key` is a table, e.g. a misspelt [smpt])."""
        if not self.lines:
            return None
        table = tuple(p for p in loc if isinstance(p, str))
        index = next((p for p in loc if isinstance(p, int)), None)
        current: tuple[str, ...] = ()
        counts: dict[tuple[str, ...], int] = {}
        header_line = None
        key_header = None
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
                if key and key_header is None and current == (*table, key):
                    key_header = n
                continue
            in_table = current == table and (index is None or counts.get(current) == index)
            if key and in_table and re.match(rf'^"?{re.escape(key)}"?\s*=', line):
                return n
        return key_header or header_line

    def build(self, cls: Any, data: Any, loc: tuple[str | int, ...]) -> Any:
        """Return an instance of dataclass `cls` from table `data`, or None if it cannot
        be made at all; every problem on the way is reported."""
        if not isinstance(data, dict):
            self.report(f"must be a table, not {_kind(data)}", loc)
            return None
        hints = typing.get_type_hints(cls)
        fields = {
            f.name: f
            for f in dataclasses.fields(cls)
            if f.name != "path" and not f.metadata.get("resolved")  # set by load_config only
        }
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key not in fields:
                self.report(_unknown_key(key, list(fields), loc, value), loc, key)
                continue
            converted = self.convert(hints[key], value, loc, key)
            if converted is not _BAD:
                values[key] = converted
        for name, f in fields.items():
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            if required and name not in values:
                self.report("is required", loc, name)
                values[name] = ""  # the required keys are text (a topic's name, an email)
        return cls(**values)

    def convert(self, hint: Any, value: Any, loc: tuple[str | int, ...], key: str) -> Any:
        origin = typing.get_origin(hint)
        if dataclasses.is_dataclass(hint):
            built = self.build(hint, value, (*loc, key))
            return _BAD if built is None else built
        if origin is list:
            (item_type,) = typing.get_args(hint)
            if not isinstance(value, list):
                self.report(f"must be a list, not {_kind(value)}", loc, key)
                return _BAD
            if dataclasses.is_dataclass(item_type):
                items = [self.build(item_type, v, (*loc, key, i)) for i, v in enumerate(value)]
                return [item for item in items if item is not None]
            out = [self.convert(item_type, v, loc, key) for v in value]
            return _BAD if any(v is _BAD for v in out) else out
        if origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            return self.convert(args[0], value, loc, key)
        if hint in (int, float) and isinstance(value, bool):
            self.report("must be a number, not true/false", loc, key)
            return _BAD
        number = hint in (int, float) and isinstance(value, (int, float))
        if number and not (hint is float or isinstance(value, int)):
            self.report(f"must be a whole number, not {_kind(value)} ({value!r})", loc, key)
            return _BAD
        if not number and not isinstance(value, hint):
            self.report(f"must be {_kind_name(hint)}, not {_kind(value)} ({value!r})", loc, key)
            return _BAD
        if number:
            problem = _range_problem(tuple(p for p in loc if isinstance(p, str)), key, value)
            if problem:
                self.report(problem, loc, key)
                return _BAD
            return float(value) if hint is float else value
        return value


def _range_problem(table: tuple[str, ...], key: str, value: float) -> str | None:
    """Why `value` is out of the sane range for `table.key`, or None when it is fine."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number, not {value!r}"
    bounds = RANGES.get((".".join(table), key))
    if bounds is None:
        return None
    least, most, open_below = bounds
    if least <= value <= most and not (open_below and value == least):
        return None
    shown = repr(value) if len(repr(value)) <= 24 else f"{repr(value)[:12]}... (a huge number)"
    if key == "port":
        return f"must be a port number, {least} to {most}, not {shown}"
    if open_below:
        return f"must be more than {least} and at most {most}, not {shown}"
    return f"must be from {least} to {most}, not {shown}"


def _unknown_key(key: str, known: list[str], loc: tuple[str | int, ...], value: Any) -> str:
    """The message for a key the table does not have, with the near one for a typo."""
    near = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if not loc:  # a top-level table: [smpt], [[topic]]
        brackets = ("[[", "]]") if isinstance(value, list) else ("[", "]")
        name = f"{brackets[0]}{key}{brackets[1]}"
        hint = f"; did you mean {brackets[0]}{near[0]}{brackets[1]}?" if near else ""
        return f"unknown table {name}{hint} (tables: {', '.join(known)})"
    if key == "password":
        var = "DIGEST_BOUNCES_PASSWORD" if loc == ("bounces",) else "DIGEST_SMTP_PASSWORD"
        return f"unknown key (put the password in {var} or a password_file)"
    hint = f"; did you mean {near[0]!r}?" if near else ""
    return f"unknown key{hint} (known keys: {', '.join(known)})"


def is_http_url(text: str) -> bool:
    """True for an http(s) URL with a host (and a valid port, if any), in one line of
    text: what a list, API or public base address must be."""
    if not re.match(r"^https?://[^/\s]+", text) or _control_char(text) or " " in text:
        return False
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018  (raises ValueError for a port out of range)
    except ValueError:
        return False
    return bool(parts.hostname)


def _control_char(text: str) -> str | None:
    """The first line break or control character in `text`, or None."""
    for c in text:
        if unicodedata.category(c) in ("Cc", "Zl", "Zp"):
            return c
    return None


_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_HOSTNAME_RE = re.compile(rf"^{_LABEL}(\.{_LABEL})*\.?$")


def hostname_problem(text: str) -> str | None:
    """Why `text` is not a host name (IDN allowed) or IP address, or None when it is."""
    try:
        ipaddress.ip_address(text.strip("[]"))
        return None
    except ValueError:
        pass
    try:
        ascii_name = text.encode("idna").decode("ascii")
    except UnicodeError:
        return f"{text!r} is not a host name"
    if len(ascii_name) > 253 or not _HOSTNAME_RE.fullmatch(ascii_name):
        return f"{text!r} is not a host name"
    return None


def sender_problem(text: str) -> str | None:
    """Why `text` cannot be a From address ("name@domain" or "Name <name@domain>"), or None.

    Single-label domains such as "localhost" are allowed: a relay on a private network
    may accept them.
    """
    import email_validator  # a dependency already (subscriber addresses)

    _name, address = parseaddr(text)
    if not address or "@" not in address:
        return f"{text!r} is not an email address"
    local, _, domain = address.rpartition("@")
    try:
        # The domain is checked below: email_validator refuses "localhost".
        email_validator.validate_email(f"{local}@example.org", check_deliverability=False)
    except email_validator.EmailNotValidError as e:
        return f"{text!r} is not an email address: {e}"
    if hostname_problem(domain):
        return f"{text!r} is not an email address: {domain!r} is not a host name"
    return None


def _validate(config: Config, loader: _Loader) -> None:
    """Checks that need the values, not only the types; every problem goes to `loader`."""
    _check_text(config, loader)
    src = config.source
    if src.list not in LIST_WORDS and not is_http_url(src.list):
        loader.report(
            f"{src.list!r} is not 'daily', 'trending' or an http(s) URL", ("source",), "list"
        )
    if not is_http_url(src.api_url):
        loader.report(f"{src.api_url!r} is not an http(s) URL", ("source",), "api_url")
    if src.prefer not in ("page", "api"):
        loader.report(f"{src.prefer!r} must be 'page' or 'api'", ("source",), "prefer")
    if config.backfill.source not in ("page", "api"):
        loader.report("must be 'page' or 'api'", ("backfill",), "source")
    if not is_http_url(config.feeds.base_url):
        # It starts every link in the feeds and emails: "javascript:" or a bare host would
        # put a dead or dangerous link in front of every reader.
        loader.report(
            f"{config.feeds.base_url!r} is not an http(s) URL like 'https://papers.example.org'",
            ("feeds",),
            "base_url",
        )
    smtp = config.smtp
    if smtp.security not in ("starttls", "tls", "none"):
        loader.report("must be 'starttls', 'tls' or 'none'", ("smtp",), "security")
    if smtp.host:
        problem = hostname_problem(smtp.host)
        if problem:
            loader.report(problem, ("smtp",), "host")
    problem = sender_problem(smtp.sender)
    if problem:
        loader.report(problem, ("smtp",), "sender")
    for key in ("password_file", "ca_file"):
        name = getattr(smtp, key)
        if name and not Path(name).is_file():
            loader.report(f"{name}: file not found", ("smtp",), key)
    if bool(smtp.dkim_key_file) != bool(smtp.dkim_selector):
        missing = "dkim_selector" if smtp.dkim_key_file else "dkim_key_file"
        loader.report("DKIM needs both dkim_key_file and dkim_selector", ("smtp",), missing)
    if smtp.dkim_selector and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", smtp.dkim_selector):
        loader.report(
            f"{smtp.dkim_selector!r} is not a DKIM selector (letters, digits, . _ -)",
            ("smtp",),
            "dkim_selector",
        )
    if smtp.dkim_key_file and not Path(smtp.dkim_key_file).is_file():
        loader.report(f"{smtp.dkim_key_file}: file not found", ("smtp",), "dkim_key_file")
    _validate_bounces(config, loader)
    email = config.email
    if email.no_topics_gets not in ("everything", "nothing"):
        loader.report("must be 'everything' or 'nothing'", ("email",), "no_topics_gets")
    if email.domain:
        problem = hostname_problem(email.domain)
        if problem:
            loader.report(problem, ("email",), "domain")
    if email.operator:
        try:
            normalize_address(email.operator)
        except DigestError:
            loader.report(f"{email.operator!r} is not an email address", ("email",), "operator")
    _validate_topics(config, loader, term_problem)
    known = {t.name for t in config.topics}
    for i, sub in enumerate(config.subscribers):
        try:
            normalize_address(sub.email)
        except DigestError as e:
            loader.report(str(e), ("subscribers", i), "email")
        if sub.frequency not in FREQUENCIES:
            loader.report(
                f"{sub.frequency!r}: must be one of {', '.join(FREQUENCIES)}",
                ("subscribers", i),
                "frequency",
            )
        for name in sub.topics:
            if name not in known and not loader.broken_topics:
                loader.report(
                    f"subscriber {sub.email!r} follows unknown topic {name!r}",
                    ("subscribers", i),
                    "topics",
                )
    _validate_schedule(config, loader)
    folder = config.templates.dir
    if folder and not Path(folder).is_dir():
        loader.report(f"{folder}: folder not found", ("templates",), "dir")
    if config.web.host:
        problem = hostname_problem(config.web.host)
        if problem:
            loader.report(problem, ("web",), "host")
    for proxy in config.web.trusted_proxies:
        # uvicorn takes anything, and quietly never matches a misspelt address.
        try:
            if proxy != "*":
                ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            loader.report(
                f"{proxy!r} is not an IP address or network (or '*')", ("web",), "trusted_proxies"
            )


def _validate_bounces(config: Config, loader: _Loader) -> None:
    b = config.bounces
    if b.imap_security not in ("tls", "starttls", "none"):
        loader.report("must be 'tls', 'starttls' or 'none'", ("bounces",), "imap_security")
    for key in ("imap_host", "domain"):
        value = getattr(b, key)
        if value:
            problem = hostname_problem(value)
            if problem:
                loader.report(problem, ("bounces",), key)
    if b.imap_host and not b.imap_user:
        loader.report("an IMAP mailbox needs its user (imap_user)", ("bounces",), "imap_user")
    if not b.folder.strip():
        loader.report(f"{b.folder!r} is not a mailbox folder name", ("bounces",), "folder")
    for key in ("password_file", "webhook_secret_file", "ca_file"):
        name = getattr(b, key)
        if name and not Path(name).is_file():
            loader.report(f"{name}: file not found", ("bounces",), key)


def _validate_topics(config: Config, loader: _Loader, term_problem: Any) -> None:
    seen: set[str] = set()
    for i, topic in enumerate(config.topics):
        loc = ("topics", i)
        if not _NAME_RE.fullmatch(topic.name):  # fullmatch: "$" lets a final newline in
            loader.report(
                f"topic name {topic.name!r} must be lower-case letters, digits, "
                "'-' or '_' (it becomes a feed file name)",
                loc,
                "name",
            )
        elif topic.name in seen:
            loader.report(f"topic {topic.name!r} is named twice", loc, "name")
        elif topic.name in ("all", "feeds"):
            # feeds/all.xml is every paper and feeds/feeds.opml the list of feeds.
            loader.report(f"topic name {topic.name!r} is reserved", loc, "name")
        seen.add(topic.name)
        for key in ("keywords", "phrases", "exclude", "authors", "organizations"):
            for term in getattr(topic, key):
                if not term.strip():
                    loader.report(f"topic {topic.name!r} has an empty term", loc, key)
                    continue
                problem = term_problem(term)
                if problem:
                    loader.report(f"topic {topic.name!r}: {problem}", loc, key)
        for seed in topic.like:
            if not ARXIV_ID_RE.fullmatch(seed):
                loader.report(
                    f"topic {topic.name!r}: like {seed!r} is not an arXiv id (such as 2407.21783)",
                    loc,
                    "like",
                )
        no_terms = not (
            topic.keywords or topic.phrases or topic.authors or topic.organizations or topic.like
        )
        if no_terms and not loader.reported_under(loc):  # e.g. `keyword` for `keywords`
            loader.report(
                f"topic {topic.name!r} has no terms: give keywords, phrases, "
                "authors, organizations or like (seed papers)",
                loc,
            )
        if not topic.fields and not loader.reported(loc, "fields"):
            loader.report(
                f"topic {topic.name!r} looks in no fields, so it can never match "
                f"(leave `fields` out for the default, or choose from {', '.join(TOPIC_FIELDS)})",
                loc,
                "fields",
            )
        for f in topic.fields:
            if f not in TOPIC_FIELDS:
                loader.report(
                    f"topic {topic.name!r}: unknown field {f!r} "
                    f"(choose from {', '.join(TOPIC_FIELDS)})",
                    loc,
                    "fields",
                )


def _validate_schedule(config: Config, loader: _Loader) -> None:
    """The time zone, the cron line, the send time and days: what `digest serve` needs."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from apscheduler.triggers.cron import CronTrigger  # type: ignore[import-untyped]

    s = config.schedule
    loc = ("schedule",)
    tz: Any = None
    if s.timezone:
        try:
            tz = ZoneInfo(s.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            loader.report(
                f"unknown time zone {s.timezone!r} (use a name like 'Europe/Berlin' or 'UTC')",
                loc,
                "timezone",
            )
    else:
        import tzlocal

        try:
            tz = tzlocal.get_localzone()
        except (ZoneInfoNotFoundError, ValueError, LookupError) as e:
            loader.report(
                f"empty, and the machine's time zone cannot be found ({e}): "
                "set a name like 'Europe/Berlin' here, or fix the TZ variable",
                loc,
                "timezone",
            )
    try:
        CronTrigger.from_crontab(s.fetch, timezone=tz or "UTC")
    except ValueError as e:
        loader.report(f"{s.fetch!r} is not a crontab line like '0 */2 * * *': {e}", loc, "fetch")
    m = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", s.send_time)
    if not m:
        loader.report(f"{s.send_time!r} is not a time like '08:00'", loc, "send_time")
    days = [d.strip().lower()[:3] for d in s.send_days]
    if not days or any(d not in WEEKDAYS for d in days):
        loader.report(
            f"{s.send_days!r}: give day names from {', '.join(WEEKDAYS)}", loc, "send_days"
        )
    weekly = s.weekly_day.strip().lower()[:3]
    if weekly not in WEEKDAYS:
        loader.report(
            f"{s.weekly_day!r}: give a day name from {', '.join(WEEKDAYS)}", loc, "weekly_day"
        )
    elif days and all(d in WEEKDAYS for d in days) and weekly not in days:
        loader.report(
            f"{s.weekly_day!r} is not one of send_days ({', '.join(days)}): weekly readers "
            "would never get their edition",
            loc,
            "weekly_day",
        )


def _check_text(config: Config, loader: _Loader) -> None:
    """No line breaks or control characters in any text value: a CR LF in the sender or
    the subject prefix would write new mail headers."""
    for f in dataclasses.fields(Config):
        value = getattr(config, f.name)
        items = list(enumerate(value)) if isinstance(value, list) else [(None, value)]
        for index, item in items:
            if not dataclasses.is_dataclass(item):
                continue
            loc: tuple[str | int, ...] = (f.name,) if index is None else (f.name, index)
            for g in dataclasses.fields(item):
                if (f.name, g.name) == ("topics", "name"):
                    continue  # its own check says what a name may hold
                field_value = getattr(item, g.name)
                texts = field_value if isinstance(field_value, list) else [field_value]
                for text in texts:
                    c = _control_char(text) if isinstance(text, str) else None
                    if c:
                        loader.report(
                            f"must be one line of text, without control characters (found {c!r})",
                            loc,
                            g.name,
                        )
                        break


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
