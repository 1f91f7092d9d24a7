"""Durations in answers are seconds rounded to milliseconds, exact and the same every run
(playpulse.query.rounding; the catalog sums playing time as decimals of microseconds)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from playpulse.config import Settings
from playpulse.query import CATALOG, QueryParams, run_query
from playpulse.query.engine import _CACHES
from playpulse.query.rounding import round_seconds
from playpulse.testing import load_module

_dataset = load_module(Path(__file__).with_name("dataset.py"), "playpulse_tests_query_dataset")
at, ev = _dataset.at, _dataset.ev


def test_round_seconds_rounds_seconds_columns_only() -> None:
    table = pa.table(
        {
            "listening_s": pa.array([Decimal("1.234500"), Decimal("2.000499"), None],
                                    pa.decimal128(38, 6)),
            "avg_session_s": [1 / 3, 2.0005, None],
            "skip_rate": [1 / 3, 0.5, None],
            "plays": [1, 2, 3],
        }
    )  # fmt: skip
    rounded = round_seconds(table)
    assert rounded.schema.field("listening_s").type == pa.float64()
    # Half to even on the exact decimal: 1.2345 -> 1.234 (4 is even).
    assert rounded.column("listening_s").to_pylist() == [1.234, 2.0, None]
    # 2.0005 is 2.000500000000000078 as a double: up.
    assert rounded.column("avg_session_s").to_pylist() == [0.333, 2.001, None]
    assert rounded.column("skip_rate").to_pylist() == [1 / 3, 0.5, None]
    assert rounded.column("plays").to_pylist() == [1, 2, 3]


# 240 plays of one listener, 10 minutes apart, each playing an odd number of microseconds
# (1 s + 1,001 us * i + 7 us * (i % 13)): floating-point sums of these depend on the
# order of addition, exact ones do not.
DURATIONS_US = [1_000_000 + 1_001 * i + 7 * (i % 13) for i in range(240)]


def many_plays() -> list[Any]:
    rows = []
    start = at("2026-06-01T00:00:00")
    track = {"content_id": "t", "content_type": "track", "creator": "Odd Band"}
    for i, us in enumerate(DURATIONS_US):
        began = start + timedelta(minutes=10 * i)
        ended = began + timedelta(microseconds=us)
        rows.append(
            ev(f"s{i}", "play_start", began.isoformat()[:-6], "u", playback_id=f"p{i}",
               content=track, position_s=0)
        )  # fmt: skip
        rows.append(
            ev(f"e{i}", "play_end", ended.isoformat()[:-6], "u", playback_id=f"p{i}",
               position_s=us / 1e6, reason="stopped")
        )  # fmt: skip
    return rows


@pytest.fixture(scope="module")
def odd(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    settings, _ = _dataset.build(tmp_path_factory.mktemp("odd"), many_plays())
    return settings


def test_listening_time_is_the_exact_sum_rounded_to_milliseconds(odd: Settings) -> None:
    exact = Decimal(sum(DURATIONS_US)) / 1_000_000
    expected = float(exact.quantize(Decimal("0.001")))
    for name in ("overview", "top_content", "top_creators", "user_sessions", "devices"):
        (row, *_) = run_query(name, QueryParams(), odd).to_pylist()
        assert row["listening_s"] == expected, name


def test_the_same_query_gives_the_same_answer_with_at_most_3_decimals(
    odd: Settings, lake: Settings
) -> None:
    for settings in (odd, lake):
        for name in sorted(set(CATALOG) - {"live"}):
            first = run_query(name, QueryParams(), settings).to_pylist()
            _CACHES.clear()  # a new process's cache: files loaded again, in any order
            second = run_query(name, QueryParams(), settings).to_pylist()
            assert first == second, name
            for row in first:
                for column, value in row.items():
                    if column.endswith("_s") and isinstance(value, float):
                        assert round(value, 3) == value, (name, column, value)


def test_tz_split_segments_sum_exactly_too(odd: Settings) -> None:
    # Kolkata (UTC+5:30) cuts segments at quarter hours: the total is the same.
    (row,) = run_query("overview", QueryParams(tz="Asia/Kolkata"), odd).to_pylist()
    (utc,) = run_query("overview", QueryParams(), odd).to_pylist()
    assert row["listening_s"] == utc["listening_s"]
