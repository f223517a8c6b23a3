"""The configured time zone, and "today" in it: the day a reader's morning email is for.

Its own small module so that sending (deliver/digest.py) does not import the scheduler.
"""

from __future__ import annotations

from datetime import date, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from digest.config import Config
from digest.errors import ConfigError


def schedule_timezone(config: Config) -> tzinfo:
    """Return the configured time zone, or the machine's when none is set.

    Raises ConfigError naming schedule.timezone for an unknown zone name.
    """
    name = config.schedule.timezone
    if not name:
        import tzlocal  # APScheduler 3's own dependency: TZ, else /etc/localtime

        return tzlocal.get_localzone()
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"unknown time zone {name!r} (use a name like 'Europe/Berlin' or 'UTC')",
            path=config.path,
            key="schedule.timezone",
        ) from None


def local_today(config: Config) -> date:
    """Today's date in schedule.timezone: the day `digest send` and `digest run` send for,
    the same day the scheduler's send job uses (08:00 in Tokyo is still yesterday in UTC)."""
    return datetime.now(schedule_timezone(config)).date()
