"""Pure parts of the read API: parameter parsing and JSON encoding."""

from __future__ import annotations

import logging
import math
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pyarrow as pa
import pytest
from starlette.datastructures import QueryParams as Query

from playpulse.api.auth import ApiError, RedactKeyFilter
from playpulse.api.encode import json_value, table_rows
from playpulse.api.params import describe, parse_params
from playpulse.query import QueryError


def test_left_out_bounds_stay_open_for_the_query_to_resolve_on_the_data():
    params = parse_params(Query("to=2026-11-02"))
    assert params.start is None
    assert params.end == datetime(2026, 11, 2, tzinfo=UTC)
    with pytest.raises(QueryError, match="window resolved"):
        describe(params)
    resolved = params.model_copy(update={"start": datetime(2026, 11, 1, tzinfo=UTC)})
    assert describe(resolved) == {
        "from": "2026-11-01T00:00:00Z",
        "to": "2026-11-02T00:00:00Z",
        "tz": "UTC",
        "limit": 10,
    }


def test_a_range_that_ends_before_it_starts_is_422():
    with pytest.raises(ApiError) as caught:
        parse_params(Query("from=2026-11-02&to=2026-11-01"))
    assert caught.value.status == 422
    assert caught.value.message.startswith("from/to: start 2026-11-02T00:00:00+00:00 is not")


def test_empty_values_count_as_absent_and_key_is_ignored():
    params = parse_params(Query("from=&tz=&content_type=&key=secret&limit=3"))
    assert params.tz == "UTC"
    assert params.content_type is None
    assert params.limit == 3
    assert params.start is None
    resolved = params.model_copy(update={"start": datetime(2026, 1, 1, tzinfo=UTC)})
    assert "key" not in describe(resolved.model_copy(update={"end": datetime.now(UTC)}))


def test_dates_and_naive_times_are_in_tz():
    params = parse_params(Query("from=2026-03-29&to=2026-03-29T12:00&tz=Europe/Berlin"))
    assert params.start == datetime(2026, 3, 28, 23, tzinfo=UTC)
    assert params.end == datetime(2026, 3, 29, 10, tzinfo=UTC)  # after the DST switch


@pytest.mark.parametrize(
    "query", ["tz=Nowhere", "from=soon", "limit=-1", "limit=1.5", "content_type=song", "x=1"]
)
def test_bad_values_raise_422(query: str):
    with pytest.raises(ApiError) as caught:
        parse_params(Query(query))
    assert caught.value.status == 422
    assert caught.value.code == "invalid_params"


def test_json_values():
    assert json_value(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02T03:04:05Z"
    assert json_value(date(2026, 1, 2)) == "2026-01-02"
    assert json_value(float("nan")) is None
    assert json_value(math.inf) is None
    assert json_value(Decimal("1.5")) == 1.5
    assert json_value(timedelta(minutes=1)) == 60.0
    assert json_value({"a": [date(2026, 1, 2)]}) == {"a": ["2026-01-02"]}
    table = pa.table({"d": [date(2026, 1, 2)], "n": [1]})
    assert table_rows(table) == [{"d": "2026-01-02", "n": 1}]


def test_access_log_redaction():
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:1", "GET", "/v1/live?a=1&key=s3cret&b=2", "1.1", 200), None,
    )  # fmt: skip
    assert RedactKeyFilter().filter(record)
    assert "s3cret" not in record.getMessage()
    assert "/v1/live?a=1&key=***&b=2" in record.getMessage()
