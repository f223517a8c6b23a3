"""What time it is: now and today in UTC (the store's stamps, Hugging Face's calendar), and
where the readers are: the configured time zone, and "today" in it (the day a reader's
morning email is for).

A leaf: it takes the zone's name (`config.schedule.timezone`, which load_config has
checked), so sending does not import the scheduler and nothing here imports config.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from digest.errors import ConfigError


def now_utc() -> datetime:
    """Now in UTC, to the second (what the store stamps)."""
    return datetime.now(UTC).replace(microsecond=0)


def today_utc() -> date:
    """Return today's date in UTC (the calendar Hugging Face's API checks dates against)."""
    return datetime.now(UTC).date()


def schedule_timezone(name: str) -> tzinfo:
    """Return the time zone named `name` (schedule.timezone), or the machine's when empty.

    Raises ConfigError naming schedule.timezone for an unknown zone name (load_config
    refuses one already; this is for a Config built in code).
    """
    if not name:
        import tzlocal  # APScheduler 3's own dependency: TZ, else /etc/localtime

        return tzlocal.get_localzone()
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"unknown time zone {name!r} (use a name like 'Europe/Berlin' or 'UTC')",
            key="schedule.timezone",
        ) from None


def local_today(timezone: str) -> date:
    """Today's date in the zone `timezone` (schedule.timezone): the day `digest send` and
    `digest run` send for, the same day the scheduler's send job uses (08:00 in Tokyo is
    still yesterday in UTC)."""
    return datetime.now(schedule_timezone(timezone)).date()
