"""Query-string parameters of the read API, turned into :class:`QueryParams`.

Parameters are parsed here rather than by FastAPI so that every problem is answered in
the API's own error shape (``{"error": {"code": "invalid_params", "message"}}``, 422)
with one clear message per parameter. The OpenAPI description of the parameters is
:data:`OPENAPI_PARAMETERS`.

Whatever the query string holds, :func:`parse_params` returns parameters every query can
run with or raises that 422, never anything else: values are bounded in length
(:data:`MAX_CHARS`), numbers are ASCII digits, times lie within
[:data:`EARLIEST`, :data:`LATEST`] and zones are known to Python and to DuckDB.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, get_args

import duckdb
from pydantic import ValidationError
from starlette.datastructures import QueryParams as StarletteQueryParams

from playpulse.api.auth import ApiError
from playpulse.events.model import MAX_ID_CHARS, ContentType, Text, iana_zones
from playpulse.query.catalog import QueryError, QueryParams
from playpulse.query.window import read_bound

CONTENT_TYPES: tuple[str, ...] = get_args(ContentType)

_FILTERS = (
    "content_id",
    "creator",
    "content_type",
    "vendor_id",
    "user_id",
    "device_type",
    "platform",
    "country",
)
KNOWN = ("from", "to", "tz", "limit", *_FILTERS, "key")

#: Earliest accepted ``from``/``to``, UTC. Events are from 2000 on (the event model
#: rejects older ones); the bounds keep the per-hour offset tables of the queries small
#: (a window of 8,000 years would take ~70 million rows) and epoch times positive.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
#: Latest accepted ``from``/``to``, UTC.
LATEST = datetime(2100, 1, 1, tzinfo=UTC)
#: ``limit`` accepts whole numbers in this range.
LIMIT_RANGE = (1, 10_000)
_TEXT_CHARS: int = get_args(Text)[1].max_length
#: Longest accepted value of each parameter, in characters (filters: the longest value an
#: event can carry; ``key``: longer than any read key needs; ``limit``: 16 digits, see
#: :func:`parse_whole_number`).
MAX_CHARS: dict[str, int] = {
    "from": 64,
    "to": 64,
    "tz": 64,
    "content_id": MAX_ID_CHARS,
    "creator": _TEXT_CHARS,
    "content_type": 32,
    "vendor_id": MAX_ID_CHARS,
    "user_id": MAX_ID_CHARS,
    "device_type": 32,
    "platform": 64,
    "country": 16,
    "key": 1024,
}
#: Longest parameter name or value quoted back in an error message, in characters.
SHOWN_CHARS = 64


@lru_cache(maxsize=1)
def query_zones() -> frozenset[str]:
    """Time zones a query can use: known to Python (:func:`iana_zones`) and to DuckDB
    (``localtime``, for one, is a file of Python's zone database but no zone of DuckDB's)."""
    with duckdb.connect() as con:
        duckdb_zones = {str(row[0]) for row in con.sql("FROM pg_timezone_names()").fetchall()}
    return iana_zones() & duckdb_zones


OPENAPI_PARAMETERS: list[dict[str, Any]] = [
    {
        "name": "from",
        "in": "query",
        "required": False,
        "description": "Start of the range (inclusive): a date (midnight in `tz`) or an ISO "
        "time; a time without offset is read in `tz`. Default: midnight (in `tz`) of the "
        "day of the earliest event; without data, `to` minus 31 days. The answer's `window` "
        "says which was used.",
        "schema": {
            "type": "string",
            "maxLength": MAX_CHARS["from"],
            "anyOf": [{"format": "date"}, {"format": "date-time"}],
            "examples": ["2026-11-01", "2026-11-01T08:00:00Z"],
        },
    },
    {
        "name": "to",
        "in": "query",
        "required": False,
        "description": "End of the range (exclusive), as `from`. Default: the midnight (in "
        "`tz`) after the day of the newest event; without data, now plus one day. Both lie "
        "between 1970-01-01 and 2100-01-01 (UTC).",
        "schema": {
            "type": "string",
            "maxLength": MAX_CHARS["to"],
            "anyOf": [{"format": "date"}, {"format": "date-time"}],
        },
    },
    {
        "name": "tz",
        "in": "query",
        "required": False,
        "description": "IANA time zone for day and hour buckets and for dates in `from`/`to`.",
        "schema": {
            "type": "string",
            "maxLength": MAX_CHARS["tz"],
            "default": "UTC",
            "examples": ["Europe/Berlin"],
        },
    },
    {
        "name": "limit",
        "in": "query",
        "required": False,
        "description": "Rows of ranked queries (top content, creators, products, users, "
        "titles of the retention curve).",
        "schema": {
            "type": "integer",
            "minimum": LIMIT_RANGE[0],
            "maximum": LIMIT_RANGE[1],
            "default": 10,
        },
    },
    {
        "name": "content_id",
        "in": "query",
        "required": False,
        "description": "Only this content.",
        "schema": {"type": "string", "maxLength": MAX_CHARS["content_id"]},
    },
    {
        "name": "creator",
        "in": "query",
        "required": False,
        "description": "Only this creator (author, artist, show, channel).",
        "schema": {"type": "string", "maxLength": MAX_CHARS["creator"]},
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
        "schema": {"type": "string", "maxLength": MAX_CHARS["vendor_id"]},
    },
    {
        "name": "user_id",
        "in": "query",
        "required": False,
        "description": "Only this listener's plays (and sessions).",
        "schema": {"type": "string", "maxLength": MAX_CHARS["user_id"]},
    },
    {
        "name": "device_type",
        "in": "query",
        "required": False,
        "description": "Only plays on this device type (`unknown`: the events do not say); "
        "sessions are not filtered by it.",
        "schema": {"type": "string", "maxLength": MAX_CHARS["device_type"]},
    },
    {
        "name": "platform",
        "in": "query",
        "required": False,
        "description": "Only plays on this platform (`unknown`: the events do not say); "
        "sessions are not filtered by it.",
        "schema": {"type": "string", "maxLength": MAX_CHARS["platform"]},
    },
    {
        "name": "country",
        "in": "query",
        "required": False,
        "description": "Only plays in this country (ISO 3166-1 alpha-2 such as `DE`; "
        "`unknown`: the events do not say); sessions are not filtered by it.",
        "schema": {"type": "string", "maxLength": MAX_CHARS["country"]},
    },
]


def _invalid(message: str) -> ApiError:
    return ApiError(422, "invalid_params", message)


def shown(value: str) -> str:
    """``value`` quoted for an error message, cut after :data:`SHOWN_CHARS` characters;
    lone surrogates (no UTF-8 for them) as ``\\udc80``."""
    text = value[:SHOWN_CHARS].encode("utf-8", "backslashreplace").decode("utf-8")
    if len(value) <= SHOWN_CHARS:
        return f"'{text}'"
    return f"'{text}...' ({len(value)} characters)"


def parse_whole_number(name: str, raw: str, low: int, high: int) -> int:
    """``raw`` as an int from ``low`` to ``high``: ASCII digits only (not ``²``,
    Arabic-Indic digits, ``+1`` or ``1_000``), leading zeros allowed, at most 16 digits.
    Raises a 422 :class:`ApiError` naming ``name`` otherwise."""
    digits = raw.strip()
    if digits.isascii() and digits.isdigit() and len(digits) <= 16:
        number = int(digits)
        if low <= number <= high:
            return number
    raise _invalid(f"{name}: {shown(raw)} is not a whole number from {low} to {high}")


def _when(name: str, value: str, tz: str) -> datetime:
    """``value`` in UTC, read as ``playpulse query --from/--to`` reads it
    (:func:`playpulse.query.window.read_bound`: a date is midnight in ``tz``, a time
    without offset is read in ``tz``, an offset or ``Z`` wins), within
    [:data:`EARLIEST`, :data:`LATEST`]."""
    try:
        moment = read_bound(value, tz)
    except QueryError:
        raise _invalid(
            f"{name}: {shown(value)} is not a date (2026-11-01) or an ISO time "
            "(2026-11-01T08:00:00Z)"
        ) from None
    try:
        utc = moment.astimezone(UTC)
    except OverflowError:  # near year 1 or 9999, the offset leaves datetime's range
        utc = None
    if utc is None or not EARLIEST <= utc <= LATEST:
        raise _invalid(
            f"{name}: {shown(value)} is outside the supported range, {_iso(EARLIEST)} to "
            f"{_iso(LATEST)} (events are from 2000 on)"
        )
    return utc


def _values(query: StarletteQueryParams) -> dict[str, str]:
    values: dict[str, str] = {}
    for name, value in query.multi_items():
        if name not in KNOWN:
            raise _invalid(f"unknown parameter {shown(name)}; known: {', '.join(KNOWN)}")
        if name in values:
            raise _invalid(f"parameter '{name}' is given more than once")
        value = value.strip()
        longest = MAX_CHARS.get(name)
        if longest is not None and len(value) > longest:
            raise _invalid(f"{name}: {shown(value)} is longer than {longest} characters")
        try:
            value.encode()
        except UnicodeEncodeError:  # a lone surrogate: not text any query can compare
            raise _invalid(f"{name}: {shown(value)} is not valid Unicode text") from None
        if value:
            values[name] = value
    return values


def parse_params(query: StarletteQueryParams) -> QueryParams:
    """The :class:`QueryParams` of a request's query string. A bound left out stays
    ``None``: the query resolves it on the data (:func:`playpulse.query.window.
    resolve_window`).

    Empty values count as absent. Raises a 422 :class:`ApiError` naming the parameter for
    an unknown or repeated parameter, a value that is too long, not a number, not a date,
    not a zone, outside [:data:`EARLIEST`, :data:`LATEST`], and a range whose start is
    not before its end.
    """
    values = _values(query)
    tz = values.get("tz", "UTC")
    if tz not in query_zones():
        raise _invalid(f"tz: {shown(tz)} is not an IANA time zone such as 'Europe/Berlin'")
    fields: dict[str, Any] = {"tz": tz}
    if "from" in values:
        fields["start"] = _when("from", values["from"], tz)
    if "to" in values:
        fields["end"] = _when("to", values["to"], tz)
    if "limit" in values:
        fields["limit"] = parse_whole_number("limit", values["limit"], *LIMIT_RANGE)
    content_type = values.get("content_type")
    if content_type is not None and content_type not in CONTENT_TYPES:
        raise _invalid(
            f"content_type: {shown(content_type)} is not one of {', '.join(CONTENT_TYPES)}"
        )
    fields.update({k: values[k] for k in _FILTERS if k in values})
    try:
        params = QueryParams(**fields)
    except ValidationError as exc:  # pragma: no cover - every field is checked above
        names = {"start": "from", "end": "to"}
        problems = "; ".join(
            f"{names.get(str(e['loc'][0]), e['loc'][0])}: {e['msg']}" for e in exc.errors()
        )
        raise _invalid(problems) from None
    if params.start is None and params.end is not None and params.end <= EARLIEST:
        raise _invalid(f"to: {_iso(params.end)} leaves no room for a default `from`; give `from`")
    if params.start is not None and params.end is not None and params.start >= params.end:
        raise _invalid(
            f"from/to: start {params.start.isoformat()} is not before end {params.end.isoformat()}"
        )
    return params


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def describe(params: QueryParams) -> dict[str, Any]:
    """The resolved parameters, as echoed in responses (``from``/``to`` in UTC, ISO).
    ``params`` has both bounds (:meth:`playpulse.query.window.QueryWindow.params`);
    raises :class:`QueryError` otherwise."""
    if params.start is None or params.end is None:
        raise QueryError("describe() takes parameters with the window resolved")
    out: dict[str, Any] = {
        "from": _iso(params.start),
        "to": _iso(params.end),
        "tz": params.tz,
        "limit": params.limit,
    }
    out.update({k: getattr(params, k) for k in _FILTERS if getattr(params, k) is not None})
    return out
