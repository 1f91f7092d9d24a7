"""The read API's parameter parser against odd and hostile query strings.

:func:`parse_params` either returns parameters every query can run with or raises a 422
:class:`ApiError` that names the parameter; nothing else escapes, whatever the input
(issue #10: ``limit=²``, a 5,000-digit ``limit`` and ``from``/``to`` near year 1 or 9999
with a non-UTC ``tz`` used to answer 500).
"""

from __future__ import annotations

import json
import string
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from fastapi.responses import JSONResponse
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from starlette.datastructures import QueryParams as Query

from playpulse.api.auth import ApiError
from playpulse.api.params import (
    EARLIEST,
    KNOWN,
    LATEST,
    LIMIT_RANGE,
    MAX_CHARS,
    describe,
    parse_params,
    parse_whole_number,
    query_zones,
)
from playpulse.config import Settings
from playpulse.events.model import iana_zones
from playpulse.query.window import resolve_window

ZONES = sorted(iana_zones())

#: Any text, including NUL, control characters, lone surrogates and non-ASCII digits.
odd_text = st.text(max_size=80)
long_text = st.integers(200, 6000).map(lambda n: "7" * n)
offsets = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))
any_datetime = st.datetimes(
    min_value=datetime(1, 1, 1),  # noqa: DTZ001 - naive bounds, zones drawn below
    max_value=datetime(9999, 12, 31, 23, 59, 59),  # noqa: DTZ001
    timezones=st.none() | st.just(UTC) | offsets,
)
moment = st.one_of(
    st.dates().map(lambda d: d.isoformat()),
    any_datetime.map(lambda t: t.isoformat()),
    st.sampled_from(["0001-01-01", "9999-12-31", "1970-01-01", "2100-01-01", "1969-12-31"]),
    odd_text,
    long_text,
)
zone = st.one_of(
    st.sampled_from(ZONES),
    st.sampled_from(["localtime", "../../etc/passwd", "Europe/../UTC", "UTC\x00", "utc"]),
    odd_text,
)
whole = st.one_of(
    st.integers(-(10**20), 10**20).map(str),
    # Digits str.isdigit accepts but int() reads otherwise, or not at all.
    st.text(alphabet="0123456789²³\u0661\u0662\u06f4\u07c0\u0966+-_. \t", max_size=30),
    long_text,
)
VALUES: dict[str, st.SearchStrategy[str]] = {
    "from": moment,
    "to": moment,
    "tz": zone,
    "limit": whole,
    "content_id": odd_text | long_text,
    "creator": odd_text | long_text,
    "content_type": st.sampled_from(["audiobook", "track", "episode", "video"]) | odd_text,
    "vendor_id": odd_text | long_text,
    "user_id": odd_text | long_text,
    "device_type": st.sampled_from(["mobile", "unknown"]) | odd_text | long_text,
    "platform": odd_text | long_text,
    "country": st.sampled_from(["DE", "unknown"]) | odd_text | long_text,
    "key": odd_text,
}


@st.composite
def query_items(draw: st.DrawFn) -> list[tuple[str, str]]:
    """Known parameters with odd values, sometimes an unknown or a repeated one."""
    names = draw(st.lists(st.sampled_from(KNOWN), unique=True, max_size=len(KNOWN)))
    items = [(name, draw(VALUES[name])) for name in names]
    if items and draw(st.booleans()):
        items.append(draw(st.sampled_from(items)))
    if draw(st.integers(0, 9)) == 0:
        items.append((draw(odd_text), draw(odd_text)))
    return items


#: A data dir that does not exist: queries answer on no data (and create nothing).
NO_DATA = Settings(data_dir=Path(__file__).parent / "no-such-data-dir")


def _rendered(body: dict[str, Any]) -> bytes:
    # What the API sends: Starlette's JSON response must be able to encode it.
    return JSONResponse(body).body


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=query_items())
@example(items=[("limit", "²")])
@example(items=[("limit", "5" * 5000)])
@example(items=[("limit", "١٢")])
@example(items=[("from", "0001-01-01"), ("tz", "Asia/Tokyo")])
@example(items=[("to", "9999-12-31"), ("tz", "America/New_York")])
@example(items=[("to", "9999-12-31T23:59:59-12:00")])
@example(items=[("to", "1970-01-10")])
@example(items=[("tz", "localtime")])
@example(items=[("creator", "\udc80")])
@example(items=[("content_id", "a\x00b")])
def test_the_parser_answers_parameters_or_a_422_naming_one(items: list[tuple[str, str]]) -> None:
    try:
        params = parse_params(Query(items))
    except ApiError as exc:
        error = exc
    else:
        error = None
    if error is not None:
        assert error.status == 422
        assert error.code == "invalid_params"
        first = error.message.split(":", 1)[0]
        assert first in {*KNOWN, "from/to"} or error.message.startswith(
            ("unknown parameter", "parameter '")
        ), error.message
        assert len(error.message) < 400
        _rendered({"error": {"code": error.code, "message": error.message}})
        return
    # A bound left out is resolved by the query; without data (here) as follows.
    window = resolve_window(params, NO_DATA)
    assert (params.start or window.start) == window.start
    assert (params.end or window.end) == window.end
    assert EARLIEST <= window.start < window.end
    assert window.end <= max(LATEST, datetime.now(UTC)) + timedelta(days=2)
    assert window.start.tzinfo is not None
    assert params.tz in query_zones()
    assert LIMIT_RANGE[0] <= params.limit <= LIMIT_RANGE[1]
    for name in ("content_id", "creator", "vendor_id"):
        value = getattr(params, name)
        assert value is None or len(value) <= MAX_CHARS[name]
    json.loads(_rendered(describe(window.params(params))))


@settings(max_examples=200, deadline=None)
@given(
    moment=any_datetime.filter(lambda t: t.tzinfo is not None),
    tz=st.sampled_from(sorted(query_zones())),
)
def test_an_iso_time_with_an_offset_is_that_instant_or_out_of_range(
    moment: datetime, tz: str
) -> None:
    end = datetime(2099, 12, 1, tzinfo=UTC)
    query = Query({"from": moment.isoformat(), "to": "2099-12-01T00:00:00Z", "tz": tz})
    try:
        instant = moment.astimezone(UTC)
    except OverflowError:
        instant = None
    if instant is None or not EARLIEST <= instant <= LATEST:
        with pytest.raises(ApiError, match=r"^from: .* is outside the supported range"):
            parse_params(query)
    elif instant >= end:
        with pytest.raises(ApiError, match=r"^from/to: .* is not before end"):
            parse_params(query)
    else:
        assert parse_params(query).start == instant


@settings(max_examples=200, deadline=None)
@given(raw=st.integers(-5, 20_000).map(str) | st.text(string.digits, min_size=1, max_size=20))
def test_limit_is_any_whole_number_in_range_and_nothing_else(raw: str) -> None:
    number = int(raw)
    if len(raw) <= 16 and LIMIT_RANGE[0] <= number <= LIMIT_RANGE[1]:
        assert parse_params(Query({"limit": raw})).limit == number
    else:
        with pytest.raises(ApiError, match=r"^limit: .* is not a whole number from 1 to 10000"):
            parse_params(Query({"limit": raw}))


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ({"limit": "²"}, "limit: '²' is not a whole number from 1 to 10000"),
        ({"limit": "١٢"}, "limit: '١٢' is not a whole number"),
        ({"limit": "5" * 5000}, "(5000 characters) is not a whole number from 1 to 10000"),
        ({"from": "0001-01-01", "tz": "Asia/Tokyo"}, "from: '0001-01-01' is outside the supp"),
        ({"to": "9999-12-31", "tz": "America/New_York"}, "to: '9999-12-31' is outside the supp"),
        ({"from": "1969-12-31T23:59:59Z"}, "from: '1969-12-31T23:59:59Z' is outside"),
        ({"tz": "../../etc/passwd"}, "tz: '../../etc/passwd' is not an IANA time zone"),
        ({"tz": "localtime"}, "tz: 'localtime' is not an IANA time zone"),
        ({"creator": "x" * 513}, "creator: 'xxxx"),
        ({"content_id": "c" * 257}, "is longer than 256 characters"),
        ({"creator": "\udc80"}, "creator: '\\udc80' is not valid Unicode text"),
        ({"x" * 1000: "1"}, "(1000 characters); known: from, to"),
    ],
)
def test_odd_values_get_a_clear_422(query: dict[str, str], fragment: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_params(Query(query))
    assert caught.value.status == 422
    assert fragment in caught.value.message


def test_rfc_3339_lowercase_separators_are_read():
    params = parse_params(Query({"from": "2026-11-01t08:00:00z", "to": "2026-11-02"}))
    assert params.start == datetime(2026, 11, 1, 8, tzinfo=UTC)


def test_the_window_bounds_themselves_are_accepted():
    params = parse_params(Query(urlencode({"from": "1970-01-01", "to": "2100-01-01"})))
    assert (params.start, params.end) == (EARLIEST, LATEST)


def test_a_nul_byte_in_a_filter_is_kept_as_text():
    # No event has such a content_id, but it is text: the query answers no rows.
    assert parse_params(Query({"content_id": "a\x00b"})).content_id == "a\x00b"


@pytest.mark.parametrize("raw", ["1", "007", " 3 ", "1000000"])
def test_whole_numbers(raw: str) -> None:
    assert parse_whole_number("n", raw, 1, 1_000_000) == int(raw)


@pytest.mark.parametrize("raw", ["0", "²", "1_000", "+1", "-1", "1.0", "", "1e3", "9" * 17])
def test_not_whole_numbers(raw: str) -> None:
    with pytest.raises(ApiError, match=r"^n: .* is not a whole number from 1 to 1000000$"):
        parse_whole_number("n", raw, 1, 1_000_000)
