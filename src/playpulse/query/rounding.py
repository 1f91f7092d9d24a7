"""Durations in query answers: seconds rounded to milliseconds, the same on every run.

Every catalog answer goes through :func:`round_seconds` (in
:func:`~playpulse.query.catalog.run_query`), so the CLI's table, JSON and CSV, the API and
the dashboard show the same figures. The catalog sums playing time as exact decimals of
microseconds, so a sum does not depend on the order DuckDB adds rows in; rounding the
exact figure then gives the same digits every time (docs/metrics.md, "Query windows and numbers").
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

import pyarrow as pa

#: Decimals kept of a duration in seconds (milliseconds).
SECONDS_DECIMALS = 3


def is_seconds_column(name: str) -> bool:
    """Whether column ``name`` holds a duration in seconds (the ``_s`` suffix of the
    catalog's column names: ``listening_s``, ``avg_session_s``, ``freshness_s``...)."""
    return name.endswith("_s")


_QUANTUM = Decimal(1).scaleb(-SECONDS_DECIMALS)


def _rounded(value: float | Decimal | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, Decimal):
        return float(value.quantize(_QUANTUM, rounding=ROUND_HALF_EVEN))
    return round(value, SECONDS_DECIMALS)


def round_seconds(table: pa.Table) -> pa.Table:
    """``table`` with every floating or decimal seconds column (:func:`is_seconds_column`)
    as float64 rounded half to even to :data:`SECONDS_DECIMALS` decimals; nulls stay
    null, other columns are untouched."""
    for i, field in enumerate(table.schema):
        kind = field.type
        if not is_seconds_column(field.name):
            continue
        if not (pa.types.is_floating(kind) or pa.types.is_decimal(kind)):
            continue
        # In Python: round() and float(Decimal) are correctly rounded (Arrow's round and
        # decimal cast scale in binary and can be an ulp off: 6.9879999999999995).
        values = [_rounded(v) for v in table.column(i).to_pylist()]
        column = pa.array(values, pa.float64())
        table = table.set_column(i, pa.field(field.name, pa.float64(), field.nullable), column)
    return table
