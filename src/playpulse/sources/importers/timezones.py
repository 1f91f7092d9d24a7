"""The listener's time zone of imported history: ``--tz``, else the export's own hint.

No export carries the listener's zone (see ``shared/data/real/README.md``). The caller
may name it (``playpulse import --tz Europe/Berlin``, :func:`check_zone`); otherwise the
only hint is Spotify extended history's ``conn_country``, the country the play was
streamed from. A country maps to a zone when its zones, as listed by the IANA tz
database's ``zone1970.tab`` / ``zone.tab`` (``pytz.country_timezones``), all keep the same
UTC offsets (:func:`zone_of_country`): ``GB`` -> ``Europe/London``, ``DE`` ->
``Europe/Berlin`` (``Europe/Busingen`` keeps the same time), ``IN`` -> ``Asia/Kolkata``;
``US``, ``CA``, ``AU``, ``BR``, ``RU`` ... have several, so their plays get no zone.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import pytz  # type: ignore[import-untyped]  # no stubs; only its country table is used

from playpulse.errors import ConfigError

#: The offsets of a country's zones are compared daily over these years (the span of
#: streaming histories); zones that differ only before them count as one.
COMPARED_YEARS = (2005, 2030)


@cache
def _zones() -> frozenset[str]:
    return frozenset(available_timezones())


def check_zone(name: str) -> str:
    """``name`` when it is an IANA time zone name (``Europe/Berlin``); raises
    :class:`~playpulse.errors.ConfigError` naming it otherwise."""
    if name not in _zones():
        raise ConfigError(
            f"--tz '{name}' is not an IANA time zone name (such as Europe/Berlin or "
            "America/New_York)"
        )
    return name


def _offsets(zone: ZoneInfo) -> list[timedelta | None]:
    first, last = COMPARED_YEARS
    start = datetime(first, 1, 1, 12, tzinfo=UTC)
    days = (datetime(last, 1, 1, 12, tzinfo=UTC) - start).days
    return [(start + timedelta(days=d)).astimezone(zone).utcoffset() for d in range(days)]


@cache
def zone_of_country(code: str) -> str | None:
    """The time zone of ISO 3166-1 alpha-2 country ``code`` (upper case) when all its
    zones keep the same UTC offsets over :data:`COMPARED_YEARS` (the first listed, the
    country's principal zone), else ``None`` (several zones, or an unknown country)."""
    try:
        names: list[str] = list(pytz.country_timezones[code])
    except KeyError:
        return None
    try:
        zones = [ZoneInfo(n) for n in names]
    except ZoneInfoNotFoundError:
        return None
    if not zones:
        return None
    if len(zones) > 1:
        reference = _offsets(zones[0])
        if any(_offsets(z) != reference for z in zones[1:]):
            return None
    return names[0]
