"""The client's pure wire helpers and its options."""

from __future__ import annotations

import gzip
import json
import random
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from playpulse.client import ClientOptions
from playpulse.client.transport import (
    SENT_AT_OVERHEAD,
    backoff_delay,
    build_body,
    parse_rejections,
    parse_retry_after,
    sent_at_suffix,
)

T = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def test_build_body_adds_sent_at_to_every_event() -> None:
    payloads = [b'{"event_type":"pause","event_id":"a"}', b'{"event_id":"b","x":{"y":1}}']
    body = json.loads(build_body(payloads, T, compress=False))
    assert body == [
        {"event_type": "pause", "event_id": "a", "sent_at": "2026-03-01T12:00:00.123456Z"},
        {"event_id": "b", "x": {"y": 1}, "sent_at": "2026-03-01T12:00:00.123456Z"},
    ]


def test_build_body_gzip_round_trips() -> None:
    payloads = [b'{"event_id":"%d"}' % i for i in range(100)]
    raw = build_body(payloads, T, compress=True)
    assert raw[:2] == b"\x1f\x8b"
    assert gzip.decompress(raw) == build_body(payloads, T, compress=False)


def test_sent_at_is_converted_to_utc() -> None:
    berlin = T.astimezone(timezone(timedelta(hours=1)))
    assert sent_at_suffix(berlin) == sent_at_suffix(T)


@given(st.datetimes(timezones=st.just(UTC)))
def test_sent_at_overhead_bounds_the_suffix(when: datetime) -> None:
    # The byte accounting of batches relies on this bound (minus the replaced "}").
    assert len(sent_at_suffix(when)) - 1 <= SENT_AT_OVERHEAD


@given(
    retry=st.integers(1, 200),
    base=st.floats(0, 10),
    extra=st.floats(0, 100),
    seed=st.integers(0, 2**32),
)
def test_backoff_stays_between_half_the_cap_and_the_cap(
    retry: int, base: float, extra: float, seed: int
) -> None:
    cap_max = base + extra
    delay = backoff_delay(retry, base, cap_max, random.Random(seed))
    cap = min(cap_max, base * 2.0 ** min(retry - 1, 62))
    assert cap / 2 - 1e-9 <= delay <= cap + 1e-9


def test_backoff_grows_exponentially_until_the_max() -> None:
    rng = random.Random(1)
    lows = [backoff_delay(n, 0.1, 1.0, rng) for n in range(1, 8)]
    assert 0.05 <= lows[0] <= 0.1
    assert 0.1 <= lows[1] <= 0.2
    assert all(0.5 <= d <= 1.0 for d in lows[4:])
    with pytest.raises(ValueError, match="counts from 1"):
        backoff_delay(0, 0.1, 1.0)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("2", 2.0),
        (" 0.25 ", 0.25),
        ("-3", 0.0),
        ("soon", None),
        ("nan", None),
        ("Sun, 01 Mar 2026 12:00:10 GMT", 10.0 - 0.123456),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    got = parse_retry_after(value, now=T)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)


def test_parse_rejections_keeps_well_formed_entries_inside_the_batch() -> None:
    body = json.dumps(
        {
            "accepted": 1,
            "rejected": [
                {"index": 1, "event_id": "b", "errors": []},
                {"index": 1, "event_id": "dup"},
                {"index": 7},
                {"index": True},
                {"index": "0"},
                "junk",
                {"index": 0, "event_id": None, "errors": [{"loc": "x", "msg": "y"}]},
            ],
        }
    ).encode()
    assert [r["index"] for r in parse_rejections(body, 3)] == [1, 0]
    assert parse_rejections(b"not json", 3) == []
    assert parse_rejections(b"[]", 3) == []
    assert parse_rejections(b'{"accepted": 3}', 3) == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"batch_size": 0},
        {"batch_size": 1001},
        {"flush_interval_s": 0},
        {"max_batch_bytes": 100},
        {"max_batch_bytes": 6_000_000},
        {"max_queue_size": 0},
        {"max_retries": -1},
        {"backoff_max_s": 0.1},
        {"timeout_s": 0},
    ],
)
def test_options_reject_out_of_range_values(kwargs: dict[str, float]) -> None:
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=f"ClientOptions.{name}"):
        ClientOptions(**kwargs)


def test_options_defaults() -> None:
    opts = ClientOptions()
    assert (opts.batch_size, opts.flush_interval_s, opts.max_queue_size) == (500, 1.0, 10_000)
    assert opts.max_batch_bytes == 512 * 1024
    assert opts.gzip is True
