"""Arrow tables to JSON-ready rows: dates and times as ISO strings, no NaN."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pyarrow as pa


def json_value(value: Any) -> Any:
    """``value`` with dates and times as ISO 8601 strings (UTC times end in ``Z``),
    durations as seconds, decimals as floats and NaN or infinity as ``None``; lists and
    dicts are converted item by item."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return json_value(float(value))
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def table_rows(table: pa.Table) -> list[dict[str, Any]]:
    """Every row of ``table`` as a JSON-ready dict (column order kept)."""
    return [{name: json_value(value) for name, value in row.items()} for row in table.to_pylist()]
