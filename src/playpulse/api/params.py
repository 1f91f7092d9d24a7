"""Query-string parameters of the read API, turned into :class:`QueryParams`.

Parameters are parsed here rather than by FastAPI so that every problem is answered in
the API's own error shape (``{"error": {"code": "invalid_params", "message"}}``, 422)
with one clear message per parameter. The OpenAPI description of the parameters is
:data:`OPENAPI_PARAMETERS`.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Any, get_args
from zoneinfo import ZoneInfo

from pydantic import ValidationError
from starlette.datastructures import QueryParams as StarletteQueryParams

from playpulse.api.auth import ApiError
from playpulse.events.model import ContentType, iana_zones
from playpulse.query.catalog import QueryError, QueryParams

CONTENT_TYPES: tuple[str, ...] = get_args(ContentType)

_FILTERS = ("content_id", "creator", "content_type", "vendor_id")
KNOWN = ("from", "to", "tz", "limit", *_FILTERS, "key")

OPENAPI_PARAMETERS: list[dict[str, Any]] = [
    {
        "name": "from",
        "in": "query",
        "required": False,
        "description": "Start of the range (inclusive): a date (midnight in `tz`) or an ISO "
        "time; a time without offset is read in `tz`. Default: `to` minus 31 days.",
        "schema": {"type": "string", "examples": ["2026-11-01", "2026-11-01T08:00:00Z"]},
    },
    {
        "name": "to",
        "in": "query",
        "required": False,
        "description": "End of the range (exclusive), as `from`. Default: now plus one day.",
        "schema": {"type": "string"},
    },
    {
        "name": "tz",
        "in": "query",
        "required": False,
        "description": "IANA time zone for day and hour buckets and for dates in `from`/`to`.",
        "schema": {"type": "string", "default": "UTC", "examples": ["Europe/Berlin"]},
    },
    {
        "name": "limit",
        "in": "query",
        "required": False,
        "description": "Rows of ranked queries (top content, creators, products, users, "
        "titles of the retention curve).",
        "schema": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 10},
    },
    {
        "name": "content_id",
        "in": "query",
        "required": False,
        "description": "Only this content.",
        "schema": {"type": "string"},
    },
    {
        "name": "creator",
        "in": "query",
        "required": False,
        "description": "Only this creator (author, artist, show, channel).",
        "schema": {"type": "string"},
    },
    {
        "name": "content_type",
        "in": "query",
        "required": False,
        "description": "Only this content type.",
        "schema": {"type": "string", "enum": list(CONTENT_TYPES)},
    },
    {
        "name": "vendor_id",
        "in": "query",
        "required": False,
        "description": "Only this vendor (shop queries).",
        "schema": {"type": "string"},
    },
]


def _invalid(message: str) -> ApiError:
    return ApiError(422, "invalid_params", message)


def _when(name: str, value: str, zone: ZoneInfo) -> datetime:
    try:
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), time(), zone)
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise _invalid(
            f"{name}: '{value}' is not a date (2026-11-01) or an ISO time (2026-11-01T08:00:00Z)"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=zone)


def parse_params(query: StarletteQueryParams) -> QueryParams:
    """The :class:`QueryParams` of a request's query string, with the window resolved.

    Empty values count as absent. Raises a 422 :class:`ApiError` naming the parameter for
    an unknown or repeated parameter, a bad value, or a range whose start is not before
    its end.
    """
    values: dict[str, str] = {}
    for name, value in query.multi_items():
        if name not in KNOWN:
            raise _invalid(f"unknown parameter '{name}'; known: {', '.join(KNOWN)}")
        if name in values:
            raise _invalid(f"parameter '{name}' is given more than once")
        if value.strip():
            values[name] = value.strip()
    tz = values.get("tz", "UTC")
    if tz not in iana_zones():
        raise _invalid(f"tz: '{tz}' is not an IANA time zone such as 'Europe/Berlin'")
    zone = ZoneInfo(tz)
    fields: dict[str, Any] = {"tz": tz}
    if "from" in values:
        fields["start"] = _when("from", values["from"], zone)
    if "to" in values:
        fields["end"] = _when("to", values["to"], zone)
    if "limit" in values:
        if not values["limit"].isdigit():
            raise _invalid(f"limit: '{values['limit']}' is not a whole number from 1 to 10000")
        fields["limit"] = int(values["limit"])
    content_type = values.get("content_type")
    if content_type is not None and content_type not in CONTENT_TYPES:
        raise _invalid(f"content_type: '{content_type}' is not one of {', '.join(CONTENT_TYPES)}")
    fields.update({k: values[k] for k in _FILTERS if k in values})
    try:
        params = QueryParams(**fields)
    except ValidationError as exc:
        names = {"start": "from", "end": "to"}
        problems = "; ".join(
            f"{names.get(str(e['loc'][0]), e['loc'][0])}: {e['msg']}" for e in exc.errors()
        )
        raise _invalid(problems) from None
    try:
        start, end = params.window()
    except QueryError as exc:
        raise _invalid(f"from/to: {exc}") from None
    # Fix the default window now, so the answer and its echoed parameters agree.
    return params.model_copy(update={"start": start, "end": end})


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def describe(params: QueryParams) -> dict[str, Any]:
    """The resolved parameters, as echoed in responses (``from``/``to`` in UTC, ISO)."""
    start, end = params.window()
    out: dict[str, Any] = {
        "from": _iso(start),
        "to": _iso(end),
        "tz": params.tz,
        "limit": params.limit,
    }
    out.update({k: getattr(params, k) for k in _FILTERS if getattr(params, k) is not None})
    return out
