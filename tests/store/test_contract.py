"""The contract every real-time store backend must honour.

Every test here runs once per backend through the ``store_factory`` / ``store`` fixtures
of ``conftest.py`` (SQLite on a real file, memory; DynamoDB or Redis later).
"""

from __future__ import annotations

import math
import threading
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from playpulse.errors import StoreError
from playpulse.store import RealtimeStore, StoreBatch

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
US = timedelta(microseconds=1)
NAIVE = T0.replace(tzinfo=None)
INT64_MAX = 2**63 - 1


def make_batch(
    consumer: str = "proc",
    *,
    offsets: dict[int, int] | None = None,
    increments: Iterable[tuple[str, str, dict[str, float]]] = (),
    members: set[tuple[str, str]] | None = None,
    dedup: list[tuple[str, datetime]] | None = None,
    states: dict[str, bytes | None] | None = None,
) -> StoreBatch:
    batch = StoreBatch(consumer, offsets=dict(offsets or {}))
    for pk, sk, amounts in increments:
        batch.add(pk, sk, **amounts)
    batch.members |= members or set()
    batch.dedup.extend(dedup or [])
    batch.states.update(states or {})
    return batch


def storable(key: str) -> bool:
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def dump(store: RealtimeStore, batches: list[StoreBatch]) -> dict[str, Any]:
    """Everything ``store`` holds under the keys that ``batches`` mention."""
    pks = {pk for b in batches for pk, _ in b.increments}
    sks = {sk for b in batches for _, sk in b.increments}
    set_keys = {key for b in batches for key, _ in b.members}
    event_ids = sorted({event_id for b in batches for event_id, _ in b.dedup})
    state_keys = sorted({key for b in batches for key in b.states if storable(key)})
    consumers = {b.consumer for b in batches}
    return {
        "items": {pk: store.items(pk) for pk in pks},
        "item": {(pk, sk): store.item(pk, sk) for pk in pks for sk in sks},
        "scan": {sk: store.scan("", sk) for sk in sks},
        "members": {key: store.count_members(key) for key in set_keys},
        "seen": store.seen(event_ids),
        "states": store.states(state_keys),
        "state_keys": store.state_keys(""),
        "offsets": {consumer: store.offsets(consumer) for consumer in consumers},
    }


# --- a fresh store ---------------------------------------------------------------------


def test_new_store_is_empty(store):
    assert store.item("CONTENT#a", "TOTAL") == {}
    assert store.items("CONTENT#a") == []
    assert store.scan("", "TOTAL") == []
    assert store.count_members("U#a") == 0
    assert store.seen(["e1", "e2"]) == set()
    assert store.seen([]) == set()
    assert store.states(["PLAY#a"]) == {}
    assert store.state_keys("") == []
    assert store.offsets("proc") == {}
    assert store.expire_dedup(T0) == 0


def test_an_empty_batch_changes_nothing(store):
    store.apply(make_batch(offsets={0: 3}, increments=[("P", "S", {"n": 1.0})]))
    before = dump(store, [make_batch(increments=[("P", "S", {"n": 1.0})])])

    store.apply(StoreBatch("proc"))

    assert dump(store, [make_batch(increments=[("P", "S", {"n": 1.0})])]) == before
    assert store.offsets("proc") == {0: 3}


# --- items: additive attributes --------------------------------------------------------


def test_increments_add_up_across_batches(store):
    pk, sk = "CONTENT#book-42", "DAY#2026-11-21"
    store.apply(make_batch(increments=[(pk, sk, {"plays": 1, "playing_time_s": 12.5})]))
    store.apply(make_batch(increments=[(pk, sk, {"plays": 2}), (pk, "TOTAL", {"plays": 2})]))
    batch = make_batch(increments=[(pk, sk, {"playing_time_s": 0.25, "completions": 1})])
    batch.add(pk, sk, playing_time_s=0.25)  # add() sums within a batch
    store.apply(batch)

    assert store.item(pk, sk) == {"plays": 3.0, "playing_time_s": 13.0, "completions": 1.0}
    assert store.item(pk, "TOTAL") == {"plays": 2.0}
    assert all(type(v) is float for v in store.item(pk, sk).values())
    assert store.item(pk, "DAY#2026-11-22") == {}
    assert store.item("CONTENT#book-4", sk) == {}


def test_negative_increments_retract_and_values_return_to_exactly_zero(store):
    pk, sk = "CONTENT#a", "DAY#2026-11-21"
    store.apply(make_batch(increments=[(pk, sk, {"plays": 3, "playing_time_s": 90.75})]))
    store.apply(make_batch(increments=[(pk, sk, {"plays": -1, "playing_time_s": -0.75})]))
    assert store.item(pk, sk) == {"plays": 2.0, "playing_time_s": 90.0}

    store.apply(make_batch(increments=[(pk, sk, {"plays": -2, "playing_time_s": -90})]))

    # The attributes stay, at exactly zero (as a DynamoDB ADD or a Redis HINCRBYFLOAT).
    assert store.item(pk, sk) == {"plays": 0.0, "playing_time_s": 0.0}
    assert store.items(pk) == [(sk, {"plays": 0.0, "playing_time_s": 0.0})]
    assert store.scan("CONTENT#", sk) == [(pk, {"plays": 0.0, "playing_time_s": 0.0})]

    # Retracting below zero is allowed, and adding again starts from the stored value.
    store.apply(make_batch(increments=[(pk, sk, {"plays": -1})]))
    assert store.item(pk, sk)["plays"] == -1.0
    store.apply(make_batch(increments=[(pk, sk, {"plays": 4})]))
    assert store.item(pk, sk) == {"plays": 3.0, "playing_time_s": 0.0}


def test_zero_increments_create_no_attribute(store):
    batch = make_batch(increments=[("P", "S", {"plays": 0.0, "listeners": -0.0, "n": 1})])
    batch.add("P", "EMPTY", plays=0.0)
    batch.add("P", "CANCELLED", plays=1.5)
    batch.add("P", "CANCELLED", plays=-1.5)  # sums to zero within the batch
    store.apply(batch)

    assert store.item("P", "S") == {"n": 1.0}
    assert store.item("P", "EMPTY") == {}
    assert store.item("P", "CANCELLED") == {}
    assert store.items("P") == [("S", {"n": 1.0})]


def test_large_and_infinite_amounts(store):
    store.apply(make_batch(increments=[("P", "S", {"big": 1e300, "inf": math.inf})]))
    store.apply(make_batch(increments=[("P", "S", {"big": 1e300, "inf": 1.0})]))
    assert store.item("P", "S") == {"big": 2e300, "inf": math.inf}


# --- items: ordering and prefixes -------------------------------------------------------


SORT_KEYS = [
    "DAY#2026-11-3",
    "DAY#2026-11-21",
    "TOTAL",
    "DAY#2026-11-2",
    "DAY#2026-11-20",
    "DAY#2026-11-21#HOUR#07",
    "DAY#2026-11-1",
    "DAY#2026-11-29",
    "DAY#2026-11-210",
]


def test_items_are_ordered_by_sort_key(store):
    pk = "CONTENT#a"
    for i, sk in enumerate(SORT_KEYS):  # one batch each, in no particular order
        store.apply(make_batch(increments=[(pk, sk, {"plays": i + 1})]))

    got = store.items(pk)

    assert [sk for sk, _ in got] == sorted(SORT_KEYS)
    assert dict(got) == {sk: {"plays": float(i + 1)} for i, sk in enumerate(SORT_KEYS)}


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("", sorted(SORT_KEYS)),
        ("DAY#", sorted(sk for sk in SORT_KEYS if sk.startswith("DAY#"))),
        (
            "DAY#2026-11-2",
            [
                "DAY#2026-11-2",
                "DAY#2026-11-20",
                "DAY#2026-11-21",
                "DAY#2026-11-21#HOUR#07",
                "DAY#2026-11-210",
                "DAY#2026-11-29",
            ],
        ),
        ("DAY#2026-11-21", ["DAY#2026-11-21", "DAY#2026-11-21#HOUR#07", "DAY#2026-11-210"]),
        ("DAY#2026-11-21#", ["DAY#2026-11-21#HOUR#07"]),
        ("DAY#2026-11-3", ["DAY#2026-11-3"]),
        ("DAY#2026-11-22", []),
        ("DAY#2026-11-4", []),
        ("TOTAL", ["TOTAL"]),
        ("TOTALS", []),
        ("day#", []),  # case-sensitive
        ("A", []),
        ("Z", []),
    ],
)
def test_items_filters_by_sort_key_prefix(store, prefix, expected):
    pk = "CONTENT#a"
    batch = make_batch()
    for i, sk in enumerate(SORT_KEYS):
        batch.add(pk, sk, plays=i + 1)
        batch.add("CONTENT#ab", sk, plays=100)  # a partition key with pk as its prefix
        batch.add("CONTENT#", sk, plays=200)
    store.apply(batch)

    got = store.items(pk, prefix)

    assert [sk for sk, _ in got] == expected
    assert all(attrs == {"plays": SORT_KEYS.index(sk) + 1.0} for sk, attrs in got)


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("", ["a", "a\U0010ffff", "a\U0010ffffb", "b", "\ud7ffx", "\ue000", "\U0010ffff"]),
        ("a", ["a", "a\U0010ffff", "a\U0010ffffb"]),
        ("a\U0010ffff", ["a\U0010ffff", "a\U0010ffffb"]),
        ("\U0010ffff", ["\U0010ffff"]),
        ("\ud7ff", ["\ud7ffx"]),  # the next storable code point after U+D7FF is U+E000
        ("\ue000", ["\ue000"]),
    ],
)
def test_prefixes_work_for_every_code_point(store, prefix, expected):
    keys = ["b", "\U0010ffff", "a\U0010ffffb", "\ue000", "a", "\ud7ffx", "a\U0010ffff"]
    batch = make_batch()
    for key in keys:
        batch.add("P", key, n=1)
        batch.add(key, "S", n=1)
        batch.states[key] = key.encode()
    store.apply(batch)

    assert [sk for sk, _ in store.items("P", prefix)] == expected
    assert [pk for pk, _ in store.scan(prefix, "S")] == expected
    assert store.state_keys(prefix) == expected


def test_scan_finds_one_sort_key_across_partition_keys(store):
    day, other_day = "DAY#2026-11-21", "DAY#2026-11-2"
    batch = make_batch()
    for i, pk in enumerate(["CONTENT#b", "USER#a", "CONTENT#ab", "CONTENT#a", "CONTENTS#x"]):
        batch.add(pk, day, plays=i + 1, playing_time_s=10.0 * (i + 1))
        batch.add(pk, other_day, plays=100)
    batch.add("CONTENT#only-total", "TOTAL", plays=7)
    store.apply(batch)

    assert store.scan("CONTENT#", day) == [
        ("CONTENT#a", {"plays": 4.0, "playing_time_s": 40.0}),
        ("CONTENT#ab", {"plays": 3.0, "playing_time_s": 30.0}),
        ("CONTENT#b", {"plays": 1.0, "playing_time_s": 10.0}),
    ]
    assert [pk for pk, _ in store.scan("CONTENT#a", day)] == ["CONTENT#a", "CONTENT#ab"]
    assert [pk for pk, _ in store.scan("CONTENT", day)] == [
        "CONTENT#a",
        "CONTENT#ab",
        "CONTENT#b",
        "CONTENTS#x",
    ]
    assert [pk for pk, _ in store.scan("", day)] == [
        "CONTENT#a",
        "CONTENT#ab",
        "CONTENT#b",
        "CONTENTS#x",
        "USER#a",
    ]
    assert [attrs for _, attrs in store.scan("CONTENT#", other_day)] == [{"plays": 100.0}] * 3
    assert store.scan("", "DAY#2026-11") == []  # the sort key matches exactly, no prefix
    assert store.scan("USER#b", day) == []
    assert store.scan("", "TOTAL") == [("CONTENT#only-total", {"plays": 7.0})]


# --- sets -------------------------------------------------------------------------------


def test_members_form_a_set_with_an_exact_count(store):
    store.apply(make_batch(members={("U#a", "u1"), ("U#a", "u2"), ("U#b", "u1")}))
    store.apply(make_batch(members={("U#a", "u1"), ("U#a", "u3")}))  # u1 again
    store.apply(make_batch(members={("U#a", "u2")}))

    assert store.count_members("U#a") == 3
    assert store.count_members("U#b") == 1  # the same member in another set counts there
    assert store.count_members("U#") == 0  # no prefix matching
    assert store.count_members("U#c") == 0


def test_many_members_count_exactly(store):
    store.apply(make_batch(members={("U#a", f"user-{i}") for i in range(3000)}))
    store.apply(make_batch(members={("U#a", f"user-{i}") for i in range(2000, 4000)}))
    assert store.count_members("U#a") == 4000


# --- dedup keys -------------------------------------------------------------------------


def test_seen_returns_only_applied_ids(store):
    store.apply(make_batch(dedup=[("e1", T0), ("e2", T0 + US)]))
    store.apply(make_batch(dedup=[("e3", T0 + timedelta(hours=1))]))

    assert store.seen(["e1", "e2", "e3", "e4"]) == {"e1", "e2", "e3"}
    assert store.seen(["e4", "e", "e10", "E1"]) == set()
    assert store.seen(["e2", "e2"]) == {"e2"}
    assert store.seen(("e3",)) == {"e3"}


def test_dedup_expiries_give_each_applied_ids_latest_expiry(store):
    store.apply(make_batch(dedup=[("e1", T0), ("e2", T0 + US)]))
    store.apply(make_batch(dedup=[("e1", T0 + timedelta(days=7))]))  # renewed

    assert store.dedup_expiries(["e1", "e2", "e3"]) == {"e1": T0 + timedelta(days=7), "e2": T0 + US}
    assert store.dedup_expiries([]) == {}
    assert all(t.utcoffset() == timedelta(0) for t in store.dedup_expiries(["e1"]).values())


def test_expire_dedup_removes_exactly_the_keys_expiring_before(store):
    store.apply(
        make_batch(dedup=[("e1", T0 - US), ("e2", T0), ("e3", T0 + US), ("e4", T0 + 2 * US)])
    )
    all_ids = ["e1", "e2", "e3", "e4"]

    assert store.expire_dedup(T0 - US) == 0  # equal is kept
    assert store.seen(all_ids) == set(all_ids)
    assert store.expire_dedup(T0) == 1
    assert store.seen(all_ids) == {"e2", "e3", "e4"}
    assert store.expire_dedup(T0) == 0
    assert store.expire_dedup(T0 + 2 * US) == 2
    assert store.seen(all_ids) == {"e4"}
    assert store.expire_dedup(T0 + timedelta(days=365)) == 1
    assert store.seen(all_ids) == set()


@pytest.mark.parametrize(
    "instant",
    [
        datetime(1900, 1, 1, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 999_990, tzinfo=UTC),
        T0,
        datetime(2500, 1, 1, tzinfo=UTC),
        datetime(3000, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999_970, tzinfo=UTC),
    ],
    ids=lambda d: d.isoformat(),
)
def test_expiry_is_exact_to_the_microsecond_at_any_date(store, instant):
    ids = [f"e{i}" for i in range(20)]
    store.apply(make_batch(dedup=[(e, instant + i * US) for i, e in enumerate(ids)]))

    assert store.expire_dedup(instant + 10 * US) == 10
    assert store.seen(ids) == set(ids[10:])
    assert store.expire_dedup(instant + 19 * US) == 9
    assert store.seen(ids) == {ids[19]}


def test_a_later_batch_replaces_the_expiry_of_an_id(store):
    store.apply(make_batch(dedup=[("late", T0), ("early", T0 + timedelta(hours=2))]))
    store.apply(make_batch(dedup=[("late", T0 + timedelta(hours=2)), ("early", T0)]))

    assert store.expire_dedup(T0 + timedelta(hours=1)) == 1
    assert store.seen(["late", "early"]) == {"late"}


def test_the_last_expiry_of_an_id_within_a_batch_wins(store):
    store.apply(make_batch(dedup=[("e1", T0 + timedelta(hours=2)), ("e1", T0)]))
    assert store.expire_dedup(T0 + timedelta(hours=1)) == 1


def test_seen_works_with_thousands_of_ids(store):
    applied = [f"evt-{i:05d}" for i in range(2500)]
    store.apply(make_batch(dedup=[(e, T0) for e in applied]))
    asked = [f"evt-{i:05d}" for i in range(0, 5000, 2)] + applied[:10:2]  # + duplicates

    assert store.seen(applied) == set(applied)
    assert store.seen(asked) == set(applied[::2])
    assert store.expire_dedup(T0 + US) == 2500
    assert store.seen(applied) == set()


def test_naive_datetimes_raise_store_error(store):
    with pytest.raises(StoreError):
        store.apply(make_batch(dedup=[("e1", NAIVE)]))
    with pytest.raises(StoreError):
        store.expire_dedup(NAIVE)
    assert store.seen(["e1"]) == set()


# --- state blobs ------------------------------------------------------------------------


def test_states_upsert_delete_and_list_by_prefix(store):
    store.apply(
        make_batch(
            states={
                "PLAY#ab#1": b"open",
                "PLAY#a#1": b"\x00\xff binary",
                "SESSION#a": b"",
                "PLAY#a#2": b"x",
            }
        )
    )
    store.apply(make_batch(states={"PLAY#a#1": b"updated", "PLAY#a#2": None, "MISSING": None}))

    assert store.states(["PLAY#a#1", "PLAY#a#2", "PLAY#ab#1", "SESSION#a", "NOPE"]) == {
        "PLAY#a#1": b"updated",
        "PLAY#ab#1": b"open",
        "SESSION#a": b"",  # an empty blob is a state, not a deletion
    }
    assert all(type(v) is bytes for v in store.states(["PLAY#a#1", "SESSION#a"]).values())
    assert store.states([]) == {}
    assert store.state_keys("") == ["PLAY#a#1", "PLAY#ab#1", "SESSION#a"]
    assert store.state_keys("PLAY#a") == ["PLAY#a#1", "PLAY#ab#1"]
    assert store.state_keys("PLAY#a#") == ["PLAY#a#1"]
    assert store.state_keys("PLAY#ab") == ["PLAY#ab#1"]
    assert store.state_keys("PLAY#a#2") == []
    assert store.state_keys("play") == []

    store.apply(make_batch(states={"PLAY#a#2": b"back"}))
    assert store.states(["PLAY#a#2"]) == {"PLAY#a#2": b"back"}


def test_states_accepts_thousands_of_keys_and_any_iterable(store):
    states: dict[str, bytes | None] = {f"PLAY#{i:05d}": str(i).encode() for i in range(1500)}
    store.apply(make_batch(states=states))

    got = store.states(f"PLAY#{i:05d}" for i in range(0, 3000, 3))

    assert got == {f"PLAY#{i:05d}": str(i).encode() for i in range(0, 1500, 3)}
    assert len(store.state_keys("PLAY#")) == 1500


# --- offsets ----------------------------------------------------------------------------


def test_offsets_are_kept_per_consumer_and_overwritten_by_later_batches(store):
    store.apply(make_batch("proc", offsets={0: 10, 1: 20}))
    store.apply(make_batch("backfill", offsets={0: 3}))
    assert store.offsets("proc") == {0: 10, 1: 20}
    assert store.offsets("backfill") == {0: 3}

    store.apply(make_batch("proc", offsets={1: 25, 2: 1}))  # partition 0 untouched
    store.apply(make_batch("proc"))  # no offsets: nothing changes
    assert store.offsets("proc") == {0: 10, 1: 25, 2: 1}
    assert store.offsets("backfill") == {0: 3}
    assert store.offsets("other") == {}

    store.apply(make_batch("proc", offsets={0: 17, 3: INT64_MAX}))
    assert store.offsets("proc") == {0: 17, 1: 25, 2: 1, 3: INT64_MAX}

    got = store.offsets("proc")
    got[0] = 999  # a copy, not the store's own dict
    assert store.offsets("proc")[0] == 17


def test_a_replayed_or_older_batch_changes_nothing(store):
    """Idempotent per (consumer, partition, position): a redelivered batch, or one older
    than what the consumer applied, is a no-op; other consumers are apart."""
    first = make_batch(
        "proc",
        offsets={0: 10, 1: 20},
        increments=[("T", "S", {"n": 1.0})],
        members={("L", "a")},
        states={"K": b"1"},
    )
    store.apply(first)
    store.apply(first)  # the same batch again
    older = make_batch(
        "proc", offsets={0: 9, 1: 20}, increments=[("T", "S", {"n": 5.0})], states={"K": b"0"}
    )
    store.apply(older)
    assert store.item("T", "S") == {"n": 1.0}
    assert store.states(["K"]) == {"K": b"1"}
    assert store.offsets("proc") == {0: 10, 1: 20}
    # Another consumer's positions are its own; a batch without offsets always applies.
    store.apply(make_batch("other", offsets={0: 5}, increments=[("T", "S", {"n": 1.0})]))
    store.apply(make_batch("proc", increments=[("T", "S", {"n": 1.0})]))
    assert store.item("T", "S") == {"n": 3.0}


def test_a_batch_mixing_applied_and_new_positions_is_refused(store):
    store.apply(make_batch("proc", offsets={0: 10}, increments=[("T", "S", {"n": 1.0})]))
    mixed = make_batch("proc", offsets={0: 10, 1: 4}, increments=[("T", "S", {"n": 1.0})])
    with pytest.raises(StoreError, match="mixes applied positions"):
        store.apply(mixed)
    assert store.item("T", "S") == {"n": 1.0}
    assert store.offsets("proc") == {0: 10}


# --- atomicity --------------------------------------------------------------------------


def _baseline() -> StoreBatch:
    return make_batch(
        offsets={0: 5, 1: 7},
        increments=[
            ("CONTENT#a", "DAY#2026-11-21", {"plays": 2, "playing_time_s": 30}),
            ("CONTENT#inf", "TOTAL", {"x": math.inf}),
        ],
        members={("U#a", "u1")},
        dedup=[("old-1", T0)],
        states={"PLAY#a": b"open", "PLAY#b": b"open"},
    )


def _doomed() -> StoreBatch:
    """Valid changes of every kind, to which each failure case adds one bad part."""
    return make_batch(
        offsets={0: 9, 1: 11, 2: 1},
        increments=[
            ("CONTENT#a", "DAY#2026-11-21", {"plays": 1, "playing_time_s": 12}),
            ("CONTENT#b", "DAY#2026-11-21", {"plays": 1}),
        ],
        members={("U#a", "u2"), ("U#b", "u1")},
        dedup=[("new-1", T0 + US), ("new-2", T0 + 2 * US)],
        states={"PLAY#a": None, "PLAY#b": b"updated", "PLAY#c": b"new"},
    )


def _naive_expiry(batch: StoreBatch) -> None:
    batch.dedup.append(("new-3", NAIVE))  # after every valid increment and dedup key


def _nan_amount(batch: StoreBatch) -> None:
    batch.add("CONTENT#z", "DAY#2026-11-21", plays=math.nan)


def _sum_becomes_nan(batch: StoreBatch) -> None:
    batch.add("CONTENT#inf", "TOTAL", x=-math.inf)  # inf + -inf


def _offset_beyond_any_position(batch: StoreBatch) -> None:
    # Beyond every backend's positions (SQLite: 64 bits; DynamoDB: 64 digits, room for
    # Kinesis' 56-digit sequence numbers): the last thing a backend writes.
    batch.offsets[3] = 2**256


def _key_that_is_not_text(batch: StoreBatch) -> None:
    batch.states["PLAY#\ud800"] = b"a lone surrogate cannot be stored"


FAILURES = {
    "naive_expiry": _naive_expiry,
    "nan_amount": _nan_amount,
    "sum_becomes_nan": _sum_becomes_nan,
    "offset_beyond_any_position": _offset_beyond_any_position,
    "key_that_is_not_text": _key_that_is_not_text,
}


@pytest.mark.parametrize("failure", sorted(FAILURES))
def test_a_batch_that_fails_midway_applies_nothing(store, failure):
    baseline = _baseline()
    store.apply(baseline)
    doomed = _doomed()
    FAILURES[failure](doomed)
    before = dump(store, [baseline, doomed])

    with pytest.raises(StoreError):
        store.apply(doomed)

    assert dump(store, [baseline, doomed]) == before
    assert store.offsets("proc") == {0: 5, 1: 7}
    assert store.item("CONTENT#a", "DAY#2026-11-21") == {"plays": 2.0, "playing_time_s": 30.0}
    assert store.item("CONTENT#b", "DAY#2026-11-21") == {}
    assert store.seen(["old-1", "new-1", "new-2"]) == {"old-1"}
    assert store.states(["PLAY#a", "PLAY#b", "PLAY#c"]) == {
        "PLAY#a": b"open",
        "PLAY#b": b"open",
    }
    assert store.count_members("U#a") == 1
    assert store.count_members("U#b") == 0

    # The store is still usable, and the same batch without the bad part applies.
    store.apply(_doomed())
    assert store.offsets("proc") == {0: 9, 1: 11, 2: 1}
    assert store.item("CONTENT#a", "DAY#2026-11-21") == {"plays": 3.0, "playing_time_s": 42.0}
    assert store.item("CONTENT#inf", "TOTAL") == {"x": math.inf}
    assert store.seen(["old-1", "new-1", "new-2", "new-3"]) == {"old-1", "new-1", "new-2"}
    assert store.state_keys("PLAY#") == ["PLAY#b", "PLAY#c"]
    assert store.count_members("U#a") == 2


def test_keep_states_alive_changes_nothing_a_reader_sees(store):
    store.apply(
        make_batch(
            offsets={0: 3},
            increments=[("T", "S", {"n": 2})],
            members={("U", "m")},
            dedup=[("e-1", T0)],
            states={"PLAY#a": b"a", "PLAY#b": b"b"},
        )
    )
    store.apply(make_batch(offsets={0: 4}, states={"PLAY#b": None}))

    assert store.keep_states_alive() >= 0
    assert store.state_keys("") == ["PLAY#a"]
    assert store.states(["PLAY#a", "PLAY#b"]) == {"PLAY#a": b"a"}
    assert store.item("T", "S") == {"n": 2.0}
    assert store.count_members("U") == 1
    assert store.seen(["e-1", "e-2"]) == {"e-1"}
    assert store.offsets("proc") == {0: 4}


def test_concurrent_batches_from_threads_all_count(store):
    threads, per_thread = 8, 25
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(per_thread):
                batch = make_batch(f"c{t}", offsets={0: i + 1}, increments=[("T", "S", {"n": 1})])
                batch.members.add(("U", f"{t}-{i}"))
                batch.dedup.append((f"e-{t}-{i}", T0))
                store.apply(batch)
                store.item("T", "S")  # reads interleave with writes
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)

    assert not errors
    assert store.item("T", "S") == {"n": float(threads * per_thread)}
    assert store.count_members("U") == threads * per_thread
    assert all(store.offsets(f"c{t}") == {0: per_thread} for t in range(threads))
    assert store.expire_dedup(T0 + US) == threads * per_thread


# --- property: any sequence of batches behaves like plain dicts -------------------------

PKS = ["CONTENT#a", "CONTENT#ab", "USER#a"]
SKS = ["DAY#2026-11-2", "DAY#2026-11-21", "DAY#2026-11-3", "TOTAL"]
ATTRS = ["plays", "playing_time_s"]
SK_PREFIXES = ["", "DAY#", "DAY#2026-11-2", "DAY#2026-11-21", "T", "X"]
PK_PREFIXES = ["", "CONTENT#", "CONTENT#a", "USER#"]
SET_KEYS = ["U#a#DAY#2026-11-2", "U#a#DAY#2026-11-21"]
EVENT_IDS = [f"e{i}" for i in range(6)]
STATE_KEYS = ["PLAY#a", "PLAY#ab", "SESSION#a"]
STATE_PREFIXES = ["", "PLAY#a", "PLAY#ab", "S"]
CONSUMERS = ["proc", "backfill"]
BASES = [T0, datetime(3000, 1, 1, tzinfo=UTC), datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC)]

amounts = st.one_of(
    st.integers(-3, 3).map(float),
    st.sampled_from([0.1, -0.1, 0.5, -0.5, 0.0, -0.0, 1e9]),
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
)
instants = st.one_of(
    # Neighbouring microseconds, where rounding errors would show ...
    st.builds(lambda base, n: base + n * US, st.sampled_from(BASES), st.integers(-3, 3)),
    # ... and anywhere in the datetime range.
    st.datetimes(
        min_value=datetime(1, 1, 2),  # noqa: DTZ001 - hypothesis wants naive bounds
        max_value=datetime(9999, 12, 30),  # noqa: DTZ001
        timezones=st.just(UTC),
    ),
)


@st.composite
def batches(draw: st.DrawFn) -> StoreBatch:
    batch = StoreBatch(
        draw(st.sampled_from(CONSUMERS)),
        offsets=draw(st.dictionaries(st.integers(0, 3), st.integers(0, INT64_MAX), max_size=3)),
    )
    for pk, sk, attr, amount in draw(
        st.lists(
            st.tuples(st.sampled_from(PKS), st.sampled_from(SKS), st.sampled_from(ATTRS), amounts),
            max_size=8,
        )
    ):
        batch.add(pk, sk, **{attr: amount})
    batch.members = draw(
        st.sets(st.tuples(st.sampled_from(SET_KEYS), st.sampled_from(["u1", "u2", "u3"])))
    )
    batch.dedup = draw(st.lists(st.tuples(st.sampled_from(EVENT_IDS), instants), max_size=4))
    batch.states = draw(
        st.dictionaries(st.sampled_from(STATE_KEYS), st.none() | st.binary(max_size=6), max_size=3)
    )
    return batch


@dataclass
class Model:
    """The store's contract in plain dicts."""

    items: dict[tuple[str, str], dict[str, float]] = field(
        default_factory=lambda: defaultdict(dict)
    )
    members: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    dedup: dict[str, datetime] = field(default_factory=dict)
    states: dict[str, bytes] = field(default_factory=dict)
    offsets: dict[str, dict[int, int]] = field(default_factory=lambda: defaultdict(dict))

    def apply(self, batch: StoreBatch) -> None:
        for key, attrs in batch.increments.items():
            for attr, amount in attrs.items():
                if amount != 0:
                    self.items[key][attr] = self.items[key].get(attr, 0.0) + amount
        for set_key, member in batch.members:
            self.members[set_key].add(member)
        self.dedup.update(batch.dedup)
        for key, value in batch.states.items():
            if value is None:
                self.states.pop(key, None)
            else:
                self.states[key] = value
        self.offsets[batch.consumer].update(batch.offsets)

    def kind(self, batch: StoreBatch) -> str:
        """``apply``, ``replay`` (every offset at or below the applied one: a no-op) or
        ``mixed`` (refused)."""
        applied = self.offsets[batch.consumer]
        old = [p for p, o in batch.offsets.items() if p in applied and o <= applied[p]]
        if not old:
            return "apply"
        return "replay" if len(old) == len(batch.offsets) else "mixed"

    def expire(self, before: datetime) -> int:
        expired = [e for e, at in self.dedup.items() if at < before]
        for e in expired:
            del self.dedup[e]
        return len(expired)

    def rows(self, pairs: list[tuple[str, str]]) -> list[tuple[str, dict[str, float]]]:
        return [(name, self.items[key]) for name, key in sorted(pairs) if self.items.get(key)]


def assert_rows_close(got: list[tuple[str, dict[str, float]]], expected: list) -> None:
    assert [(k, sorted(a)) for k, a in got] == [(k, sorted(a)) for k, a in expected]
    for (key, attrs), (_, want) in zip(got, expected, strict=True):
        for attr, value in attrs.items():
            assert math.isclose(value, want[attr], rel_tol=1e-9, abs_tol=1e-9), (key, attr)


def assert_matches(store: RealtimeStore, model: Model) -> None:
    for pk in PKS:
        for prefix in SK_PREFIXES:
            expected = model.rows([(sk, (pk, sk)) for sk in SKS if sk.startswith(prefix)])
            assert_rows_close(store.items(pk, prefix), expected)
        for sk in SKS:
            assert_rows_close([("", store.item(pk, sk))], [("", model.items.get((pk, sk), {}))])
    for prefix in PK_PREFIXES:
        for sk in SKS:
            expected = model.rows([(pk, (pk, sk)) for pk in PKS if pk.startswith(prefix)])
            assert_rows_close(store.scan(prefix, sk), expected)
    for set_key in SET_KEYS:
        assert store.count_members(set_key) == len(model.members[set_key])
    assert store.seen(EVENT_IDS) == set(model.dedup)
    assert store.states(STATE_KEYS) == model.states
    for prefix in STATE_PREFIXES:
        assert store.state_keys(prefix) == sorted(k for k in model.states if k.startswith(prefix))
    for consumer in CONSUMERS:
        assert store.offsets(consumer) == model.offsets[consumer]


@settings(
    # 25 sequences of up to 10 steps per backend (DynamoDB on moto: about a second each).
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    steps=st.lists(
        st.one_of(
            batches().map(lambda b: ("apply", b)),
            instants.map(lambda t: ("expire", t)),
        ),
        max_size=10,
    )
)
def test_any_sequence_of_batches_matches_a_dict_model(store_factory, steps):
    store = store_factory()  # a fresh store per example
    model = Model()
    try:
        for op, arg in steps:
            if op == "apply":
                kind = model.kind(arg)
                if kind == "mixed":
                    with pytest.raises(StoreError, match="mixes applied positions"):
                        store.apply(arg)
                else:
                    store.apply(arg)
                if kind == "apply":
                    model.apply(arg)
            else:
                assert store.expire_dedup(arg) == model.expire(arg)
            assert_matches(store, model)
    finally:
        store.close()


def test_replace_swaps_derived_contents_but_keeps_offsets_and_dedup_keys(store):
    store.apply(
        make_batch(
            "live",
            offsets={0: 7},
            increments=[("CONTENT#a", "DAY#1", {"plays": 2.0}), ("TOTAL", "DAY#1", {"plays": 2.0})],
            members={("L#a", "u1")},
            dedup=[("e1", T0)],
            states={"S#old": b"old", "S#both": b"old"},
        )
    )
    new = make_batch(
        "rebuild",
        offsets={1: 3},
        increments=[("TOTAL", "DAY#1", {"plays": 5.0, "late": 0.0})],
        members={("L#b", "u2")},
        dedup=[("e2", T0)],
        states={"S#both": b"new"},
    )
    store.replace(new)
    assert store.items("CONTENT#a") == []
    assert store.item("TOTAL", "DAY#1") == {"plays": 5.0}  # not 7: replaced, not added
    assert (store.count_members("L#a"), store.count_members("L#b")) == (0, 1)
    assert store.seen(["e1", "e2"]) == {"e1", "e2"}
    assert store.states(["S#old", "S#both"]) == {"S#both": b"new"}
    assert store.offsets("live") == {0: 7}
    assert store.offsets("rebuild") == {1: 3}


def test_a_replace_that_fails_changes_nothing(store):
    store.apply(make_batch("live", increments=[("TOTAL", "DAY#1", {"plays": 2.0})]))
    bad = make_batch(increments=[("TOTAL", "DAY#1", {"plays": 1.0})], dedup=[("e", NAIVE)])
    with pytest.raises(StoreError):
        store.replace(bad)
    assert store.item("TOTAL", "DAY#1") == {"plays": 2.0}


def test_a_memory_snapshot_recreates_the_store(store):
    from playpulse.store.memory import MemoryStore

    memory = MemoryStore()
    batch = make_batch(
        "c",
        offsets={0: 4},
        increments=[("TOTAL", "DAY#1", {"plays": 3.0}), ("TOTAL", "DAY#2", {"plays": -1.0})],
        members={("L#a", "u1"), ("L#a", "u2")},
        dedup=[("e1", T0)],
        states={"S#1": b"x"},
    )
    memory.apply(batch)
    memory.apply(make_batch("c", increments=[("TOTAL", "DAY#2", {"plays": 3.0})]))
    store.replace(memory.snapshot("c"))
    assert dump(store, [batch]) == dump(memory, [batch])
