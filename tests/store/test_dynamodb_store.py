"""DynamoDBStore beyond the shared contract: crashes mid-apply, redelivery, zombies,
56-digit positions, throttling, dedup keys across store objects and the write units a
batch costs. Against moto in server mode (``aws_env``); failures are injected with
botocore event hooks on the store's real client."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from playpulse.aws.clients import client
from playpulse.config import Settings
from playpulse.errors import StoreError
from playpulse.store import StoreBatch
from playpulse.store.dynamodb import DynamoDBStore, create_table, position_text
from playpulse.store.factory import open_store, store_exists

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
WRITES = ("PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem")


class Crash(Exception):
    """What the injected failure raises (the process 'dies' there)."""


@pytest.fixture
def table(aws_env: Any) -> str:
    name = aws_env.unique("store")
    create_table(name)
    return name


@pytest.fixture
def stores(table: str) -> Iterator[Callable[..., DynamoDBStore]]:
    """Opens store objects on ``table``, each with a client of its own; closes them."""
    made: list[DynamoDBStore] = []

    def open_one() -> DynamoDBStore:
        store = DynamoDBStore(table, client=client("dynamodb"))
        made.append(store)
        return store

    yield open_one
    for store in made:
        store.close()


def batch_n(n: int, consumer: str = "proc", base: int = 0) -> StoreBatch:
    """Batch ``n`` of a consumer reading partitions 0 and 1 (positions from ``base``)."""
    batch = StoreBatch(consumer, offsets={0: base + 10 * n, 1: base + 10 * n + 5})
    for i in range(5):
        batch.add(f"CONTENT#{i}", "DAY#2026-11-21", plays=1, playing_time_s=0.1 * (n + 1))
    batch.add("VENDOR#v1", "METRICS#2026-11-21", orders=1)
    batch.members |= {("U#a", f"u{n}"), ("U#a", "u0")}
    batch.dedup += [(f"e{n}-{i}", T0 + timedelta(minutes=n)) for i in range(3)]
    batch.states[f"PLAY#{n}"] = f"state {n}".encode()
    if n > 0:
        batch.states[f"PLAY#{n - 1}"] = None
    return batch


def expected(batches: list[int]) -> dict[str, Any]:
    """What the store holds after ``batch_n(n)`` for each n in ``batches``, once each."""
    plays = float(len(batches))
    time_s = math.fsum(0.1 * (n + 1) for n in batches)
    last = max(batches)
    return {
        "content": [(f"CONTENT#{i}", plays, time_s) for i in range(5)],
        "vendor": {"orders": plays},
        "members": len({0, *batches}),
        "seen": {f"e{n}-{i}" for n in batches for i in range(3)},
        "states": {f"PLAY#{last}": f"state {last}".encode()},
    }


def contents(store: DynamoDBStore, upto: int) -> dict[str, Any]:
    rows = store.scan("CONTENT#", "DAY#2026-11-21")
    return {
        "content": [(pk, a["plays"], a["playing_time_s"]) for pk, a in rows],
        "vendor": store.item("VENDOR#v1", "METRICS#2026-11-21"),
        "members": store.count_members("U#a"),
        "seen": store.seen([f"e{n}-{i}" for n in range(upto + 1) for i in range(3)]),
        "states": store.states(f"PLAY#{n}" for n in range(upto + 1)),
    }


def assert_holds(store: DynamoDBStore, batches: list[int]) -> None:
    got, want = contents(store, max(batches) + 1), expected(batches)
    assert [(pk, p) for pk, p, _ in got["content"]] == [(pk, p) for pk, p, _ in want["content"]]
    for (_, _, t_got), (_, _, t_want) in zip(got["content"], want["content"], strict=True):
        assert math.isclose(t_got, t_want, rel_tol=1e-12)
    assert {k: got[k] for k in ("vendor", "members", "seen", "states")} == {
        k: want[k] for k in ("vendor", "members", "seen", "states")
    }


def crash_after(store: DynamoDBStore, writes: int, *, when: str) -> list[str]:
    """Make ``store``'s client fail every write call after the first ``writes`` ones:
    ``when="before"`` the call is not sent; ``"after"`` it is sent and done, but the
    answer is lost. Returns the log of the write calls that went through."""
    done: list[str] = []

    def hook(model: Any, **kwargs: Any) -> None:
        if model.name not in WRITES:
            return
        if len(done) >= writes:
            raise Crash(f"crashed at {model.name}")
        if when == "before":
            done.append(model.name)

    def after(model: Any, **kwargs: Any) -> None:
        if model.name not in WRITES:
            return
        if len(done) >= writes:
            raise Crash(f"answer of {model.name} lost")
        done.append(model.name)

    events = store._ddb.meta.events
    if when == "before":
        events.register("before-call.dynamodb", hook)
    else:
        events.register("after-call.dynamodb", after)
    return done


def count_writes(store: DynamoDBStore) -> list[str]:
    done: list[str] = []

    def hook(model: Any, **kwargs: Any) -> None:
        if model.name in WRITES:
            done.append(model.name)

    store._ddb.meta.events.register("before-call.dynamodb", hook)
    return done


# --- crashes ---------------------------------------------------------------------------


def test_opening_a_missing_table_names_it(aws_env):
    with pytest.raises(StoreError, match="'no-such-table' does not exist"):
        DynamoDBStore("no-such-table")


def test_the_factory_opens_dynamodb_urls(aws_env, table, tmp_path):
    settings = Settings(data_dir=tmp_path, store_url=f"dynamodb://{table}")
    assert store_exists(settings)
    store = open_store(settings)
    try:
        assert isinstance(store, DynamoDBStore)
        assert store.table == table
    finally:
        store.close()
    assert not store_exists(Settings(data_dir=tmp_path, store_url="dynamodb://missing-table"))


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_crash_at_any_write_of_apply_is_finished_or_redone_exactly_once(aws_env, when):
    """For every write of an apply: the process dies there (the write not sent, or sent
    with its answer lost). A new store object's offsets() finishes a journal left behind;
    the processor then re-sends the batch if its offsets say so. Every count is exactly
    once."""
    probe_table = aws_env.unique("probe")
    probe = DynamoDBStore(probe_table, create=True, client=client("dynamodb"))
    probe.apply(batch_n(0))
    log = count_writes(probe)
    probe.apply(batch_n(1))
    probe.close()
    total = len(log)
    assert total >= 8  # journal, marker, items, states, members, dedup, offsets, marker

    outcomes = {"finished from the journal": 0, "sent again": 0}
    for writes in range(total):
        name = aws_env.unique("crash")
        dying = DynamoDBStore(name, create=True, client=client("dynamodb"))
        dying.apply(batch_n(0))
        crash_after(dying, writes, when=when)
        with pytest.raises(StoreError):
            dying.apply(batch_n(1))
        dying.close()

        restarted = DynamoDBStore(name, client=client("dynamodb"))
        try:
            offsets = restarted.offsets("proc")
            assert offsets in ({0: 0, 1: 5}, {0: 10, 1: 15}), (writes, offsets)
            if offsets == {0: 0, 1: 5}:  # the batch never became durable: sent again
                outcomes["sent again"] += 1
                restarted.apply(batch_n(1))
            else:
                outcomes["finished from the journal"] += 1
            restarted.apply(batch_n(1))  # a redelivery on top changes nothing
            assert restarted.offsets("proc") == {0: 10, 1: 15}
            assert_holds(restarted, [0, 1])
            restarted.apply(batch_n(2))
            assert_holds(restarted, [0, 1, 2])
        finally:
            restarted.close()
    # Crashes before the marker are sent again; from the marker on, the journal finishes.
    assert all(outcomes.values()), outcomes


def test_apply_itself_finishes_a_journal_left_by_a_crash(stores):
    dying = stores()
    dying.apply(batch_n(0))
    done: list[str] = []

    def die_on_items(model: Any, **kwargs: Any) -> None:
        if model.name == "UpdateItem":
            raise Crash("died applying items")
        if model.name in WRITES:
            done.append(model.name)

    dying._ddb.meta.events.register("before-call.dynamodb", die_on_items)
    with pytest.raises(StoreError):
        dying.apply(batch_n(1))
    # State packs, journal chunks, then the marker.
    assert done[:3] == ["BatchWriteItem", "BatchWriteItem", "PutItem"]

    restarted = stores()
    restarted.apply(batch_n(2))  # finishes batch 1's journal first, then applies 2
    assert restarted.offsets("proc") == {0: 20, 1: 25}
    assert_holds(restarted, [0, 1, 2])


# --- redelivery, zombies, positions ------------------------------------------------------


def test_a_retried_batch_adds_nothing_across_store_objects(stores):
    first, second = stores(), stores()
    first.apply(batch_n(0))
    first.apply(batch_n(1))
    second.apply(batch_n(1))
    second.apply(batch_n(0))
    first.apply(batch_n(1))
    assert_holds(second, [0, 1])
    assert second.offsets("proc") == {0: 10, 1: 15}


def test_a_zombies_older_batch_is_fenced_item_by_item(stores):
    """A zombie passed the offsets check, then the new owner applied newer batches to the
    same items before the zombie wrote: every item write of the zombie is refused."""
    zombie, owner = stores(), stores()
    owner.apply(batch_n(0))
    owner.apply(batch_n(1))
    raced: list[bool] = []

    def owner_overtakes(model: Any, **kwargs: Any) -> None:
        if model.name == "PutItem" and not raced:  # the zombie's journal marker
            raced.append(True)
            owner.apply(batch_n(2))
            owner.apply(batch_n(3))

    zombie._ddb.meta.events.register("before-call.dynamodb", owner_overtakes)
    zombie.apply(batch_n(2))  # passes the offsets check (1 applied), then is overtaken

    assert raced
    assert owner.offsets("proc") == {0: 30, 1: 35}
    assert_holds(owner, [0, 1, 2, 3])  # batch 2 counted once, state of batch 3 kept


def test_56_digit_positions(stores):
    store = stores()
    base = 49_590_338_271_490_256_608_559_692_538_361_571_095_921_575_989_136_588_898
    assert len(str(base)) == 56
    store.apply(batch_n(0, base=base))
    store.apply(batch_n(1, base=base))
    store.apply(batch_n(1, base=base))  # again
    store.apply(batch_n(0, base=base))  # older
    assert store.offsets("proc") == {0: base + 10, 1: base + 15}
    assert_holds(store, [0, 1])
    assert position_text(base) < position_text(base + 1) < position_text(10**60)
    with pytest.raises(StoreError, match="outside"):
        store.apply(StoreBatch("proc", offsets={0: 10**64}))
    with pytest.raises(StoreError, match="outside"):
        store.apply(StoreBatch("proc", offsets={0: -1}))


def test_a_batch_without_offsets_is_applied_once_on_recovery(stores):
    dying = stores()

    def die_after_marker(model: Any, **kwargs: Any) -> None:
        if model.name == "UpdateItem":
            raise Crash("died")

    dying.apply(batch_n(0))
    dying._ddb.meta.events.register("before-call.dynamodb", die_after_marker)
    batch = StoreBatch("manual")
    batch.add("CONTENT#0", "DAY#2026-11-21", plays=100)
    with pytest.raises(StoreError):
        dying.apply(batch)
    restarted = stores()
    assert restarted.offsets("manual") == {}  # finishes the journal
    assert restarted.offsets("manual") == {}
    assert restarted.item("CONTENT#0", "DAY#2026-11-21")["plays"] == 101.0


# --- throttling ------------------------------------------------------------------------


def test_throttling_is_retried(stores):
    from botocore.exceptions import ClientError

    store = stores()
    throttled: list[str] = []

    def throttle(model: Any, **kwargs: Any) -> None:
        if model.name in ("UpdateItem", "Query", "PutItem") and len(throttled) < 6:
            throttled.append(model.name)
            code = "ProvisionedThroughputExceededException"
            raise ClientError({"Error": {"Code": code, "Message": "slow down"}}, model.name)

    store._ddb.meta.events.register("before-call.dynamodb", throttle)
    store.apply(batch_n(0))
    assert len(throttled) == 6
    assert_holds(store, [0])


def test_unprocessed_items_of_batch_write_item_are_sent_again(stores):
    """The hook takes one request out of every BatchWriteItem call and hands it back as
    unprocessed (as DynamoDB does when throttled): it is stored only if resent."""
    store = stores()
    held: list[Any] = []

    def hold_back(params: dict[str, Any], model: Any, **kwargs: Any) -> None:
        if model.name == "BatchWriteItem":
            (requests,) = params["RequestItems"].values()
            if len(requests) > 1:
                held.append(requests.pop())

    def unprocessed(parsed: dict[str, Any], model: Any, **kwargs: Any) -> None:
        if model.name == "BatchWriteItem" and held and not parsed.get("UnprocessedItems"):
            parsed["UnprocessedItems"] = {store.table: [held.pop()]}

    store._ddb.meta.events.register("before-parameter-build.dynamodb", hold_back)
    store._ddb.meta.events.register("after-call.dynamodb", unprocessed)
    batch = StoreBatch("proc", offsets={0: 1})
    batch.members |= {("U#many", f"u{i}") for i in range(60)}
    store.apply(batch)
    assert store.count_members("U#many") == 60


# --- numbers -----------------------------------------------------------------------------


def test_amounts_add_exactly_in_decimal_and_extremes_take_the_slow_path(stores):
    store = stores()
    for _ in range(10):
        store.apply(StoreBatch("p", increments={("P", "ADD"): {"x": 0.1}}))
        store.apply(StoreBatch("p", increments={("P", "SLOW"): {"x": 0.1, "big": 1e200}}))
    store.apply(StoreBatch("p", increments={("P", "SLOW"): {"tiny": 5e-324}}))
    store.apply(StoreBatch("p", increments={("P", "SLOW"): {"x": -1e-300}}))
    # Ten decimal 0.1s are exactly 1 (in floats 0.9999999999999999), on both paths.
    assert store.item("P", "ADD") == {"x": 1.0}
    got = store.item("P", "SLOW")
    assert got["x"] == 1.0
    assert got["big"] == pytest.approx(1e201, rel=1e-15)
    assert got["tiny"] == 5e-324
    with pytest.raises(StoreError, match="reserved"):
        store.apply(StoreBatch("p", increments={("P", "S"): {"_f#x": 1.0}}))
    with pytest.raises(StoreError, match="reserved"):
        store.apply(StoreBatch("p", increments={("~pp#SET#a", "S"): {"n": 1.0}}))


# --- dedup keys --------------------------------------------------------------------------


def test_dedup_keys_are_seen_and_expired_by_every_store_object(stores):
    writer, reader = stores(), stores()
    assert reader.seen(["a"]) == set()  # the reader's index is loaded (empty)
    writer.apply(StoreBatch("p", dedup=[("a", T0), ("b", T0 + timedelta(hours=1))]))
    writer.apply(StoreBatch("p", dedup=[("a", T0 + timedelta(hours=2))]))  # renewed
    assert reader.dedup_expiries(["a", "b", "c"]) == {
        "a": T0 + timedelta(hours=2),
        "b": T0 + timedelta(hours=1),
    }
    assert reader.expire_dedup(T0 + timedelta(hours=1, seconds=1)) == 1  # b
    writer.apply(StoreBatch("p", dedup=[("c", T0)]))  # after the expiry: kept
    for store in (writer, reader, stores()):
        assert store.seen(["a", "b", "c"]) == {"a", "c"}
    assert stores().expire_dedup(T0 + timedelta(days=1)) == 2


# --- cost --------------------------------------------------------------------------------


def test_write_units_per_batch_are_far_below_one_per_event(stores):
    """2,000 events of a batch: their dedup keys and the aggregated counters (40 items)
    cost under 200 write units, a tenth of the naive one write per event."""
    store = stores()
    events = 2000
    batch = StoreBatch("proc", offsets={0: events})
    for i in range(events):
        batch.add(f"CONTENT#{i % 20}", "DAY#2026-11-21", plays=1, playing_time_s=30.0)
        batch.add(f"CONTENT#{i % 20}", "TOTAL", plays=1, playing_time_s=30.0)
        batch.dedup.append((f"event-{i:08d}-0123456789abcdef0123456789abcdef", T0))
    before_reported, before_estimated = store.write_units, store.estimated_write_units
    store.apply(batch)
    reported = store.write_units - before_reported
    estimated = store.estimated_write_units - before_estimated
    assert 0 < reported < events / 10
    assert 0 < estimated < events / 10
    assert store.seen([f"event-{i:08d}-0123456789abcdef0123456789abcdef" for i in range(events)])
    assert store.item("CONTENT#3", "TOTAL") == {"plays": 100.0, "playing_time_s": 3000.0}


# --- layout ------------------------------------------------------------------------------


def test_vendor_items_are_in_the_by_vendor_index_and_internal_items_stay_out_of_scans(stores):
    store = stores()
    store.apply(batch_n(0))
    store.apply(batch_n(1))
    assert store.vendor_items("VENDOR#v1") == [("METRICS#2026-11-21", {"orders": 2.0})]
    assert store.vendor_items("VENDOR#v1", "METRICS#2026-12") == []
    assert store.item("VENDOR#v1", "METRICS#2026-11-21") == {"orders": 2.0}
    # States, members, dedup and journal items are not counter items.
    assert store.scan("", "sPLAY#1") == []
    assert store.scan("", "mu0") == []
    assert [pk for pk, _ in store.scan("", "DAY#2026-11-21")] == [f"CONTENT#{i}" for i in range(5)]


def test_a_table_keeps_its_own_number_of_state_shards(aws_env):
    name = aws_env.unique("shards")
    create_table(name, state_shards=3)
    create_table(name, state_shards=3)  # again: the same layout is fine
    with pytest.raises(StoreError, match="in 3 shards, not 5"):
        create_table(name, state_shards=5)
    writer = DynamoDBStore(name, client=client("dynamodb"))
    reader = DynamoDBStore(name, client=client("dynamodb"))
    try:
        assert writer.state_shards == reader.state_shards == 3
        # 40 incompressible states of 30 KB: 4 pack items, over the 3 shards.
        states: dict[str, bytes | None] = {
            f"PLAY#{i:03d}": bytes([i]) + os.urandom(30_000) for i in range(40)
        }
        writer.apply(StoreBatch("p", offsets={0: 1}, states=states))
        assert reader.state_keys("PLAY#") == sorted(states)
        assert reader.states(["PLAY#007", "PLAY#100"]) == {"PLAY#007": states["PLAY#007"]}
        pages = (
            client("dynamodb")
            .get_paginator("scan")
            .paginate(TableName=name, ProjectionExpression="pk")
        )
        pks = [
            item["pk"]["S"]
            for page in pages
            for item in page["Items"]
            if item["pk"]["S"].startswith("~pp#SPACK#")
        ]
        assert len(pks) == 4
        assert set(pks) == {"~pp#SPACK#0", "~pp#SPACK#1", "~pp#SPACK#2"}
    finally:
        writer.close()
        reader.close()


def test_dedup_items_past_their_ttl_are_ignored_before_dynamodb_deletes_them(stores, table):
    writer = stores()
    writer.apply(StoreBatch("p", dedup=[("old", T0)]))
    writer.apply(StoreBatch("p", dedup=[("new", T0)]))
    ddb = client("dynamodb")
    items = ddb.query(
        TableName=table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": "~pp#DEDUP"}},
    )["Items"]
    assert len(items) == 2
    ttl = int(items[0]["expires_at"]["N"])
    assert ttl > datetime.now(UTC).timestamp() + 86_400  # write time + 2 days
    # Time passes for the first item only: its TTL is now in the past.
    ddb.update_item(
        TableName=table,
        Key={"pk": items[0]["pk"], "sk": items[0]["sk"]},
        UpdateExpression="SET expires_at = :past",
        ExpressionAttributeValues={":past": {"N": "1000"}},
    )
    assert stores().seen(["old", "new"]) == {"new"}


def test_replace_swaps_many_items_and_keeps_offsets_dedup_keys_and_fencing(stores):
    store = stores()
    for n in range(3):
        store.apply(batch_n(n))
    big = StoreBatch("live", offsets={0: 1})
    for i in range(300):
        big.add(f"CONTENT#x{i:03d}", "TOTAL", plays=1)
        big.members.add(("U#big", f"u{i}"))
        big.states[f"OLD#{i:03d}"] = b"old"
    store.apply(big)

    new = StoreBatch("reprocess")
    new.add("CONTENT#0", "DAY#2026-11-21", plays=42)
    new.members.add(("U#a", "only"))
    new.states["PLAY#new"] = b"new"
    store.replace(new)

    assert store.scan("CONTENT#", "TOTAL") == []
    assert store.scan("", "DAY#2026-11-21") == [("CONTENT#0", {"plays": 42.0})]
    assert (store.count_members("U#big"), store.count_members("U#a")) == (0, 1)
    assert store.state_keys("") == ["PLAY#new"]
    assert store.offsets("proc") == {0: 20, 1: 25}
    assert store.offsets("live") == {0: 1}
    assert store.seen(["e0-0", "e2-2"]) == {"e0-0", "e2-2"}
    store.apply(batch_n(2))  # a redelivery after the replace: still a no-op
    assert store.item("CONTENT#0", "DAY#2026-11-21") == {"plays": 42.0}


# --- state packs -------------------------------------------------------------------------


def pack_items(table: str) -> list[dict[str, Any]]:
    """The table's state pack items, oldest first."""
    pages = client("dynamodb").get_paginator("scan").paginate(TableName=table)
    items = [
        item for page in pages for item in page["Items"] if item["pk"]["S"].startswith("~pp#SPACK#")
    ]
    return sorted(items, key=lambda item: item["sk"]["S"])


def expire_pack(table: str, item: dict[str, Any]) -> None:
    """Time passes for one pack item: its TTL is in the past (DynamoDB has not deleted
    it yet)."""
    client("dynamodb").update_item(
        TableName=table,
        Key={"pk": item["pk"], "sk": item["sk"]},
        UpdateExpression="SET expires_at = :past",
        ExpressionAttributeValues={":past": {"N": "1000"}},
    )


def test_a_batchs_states_are_one_pack_seen_by_every_store_object_and_deletes_hide_them(
    stores, table
):
    writer, reader = stores(), stores()
    assert reader.state_keys("") == []  # the reader's index is loaded (empty)
    first = {f"PLAY#0#{i:03d}": f"open play {i} ".encode() * 20 for i in range(300)}
    writer.apply(StoreBatch("p", offsets={0: 1}, states=dict(first)))
    assert len(pack_items(table)) == 1  # 300 states, one item (not one each)
    assert reader.state_keys("PLAY#0#") == sorted(first)
    assert reader.states(["PLAY#0#007", "PLAY#0#999"]) == {"PLAY#0#007": first["PLAY#0#007"]}

    second: dict[str, bytes | None] = {f"PLAY#0#{i:03d}": None for i in range(100)}
    second["PLAY#0#150"] = b"changed"
    second["SESS#0#u1"] = b"session"
    writer.apply(StoreBatch("p", offsets={0: 2}, states=second))
    want = {k: v for k, v in first.items() if k >= "PLAY#0#100"}
    want["PLAY#0#150"] = b"changed"
    for store in (reader, writer, stores()):
        assert store.state_keys("PLAY#") == sorted(want)
        assert store.states([*first, "SESS#0#u1"]) == {**want, "SESS#0#u1": b"session"}
    # A key deleted and written again, in one batch after the other.
    writer.apply(StoreBatch("p", offsets={0: 3}, states={"PLAY#0#000": b"back"}))
    assert stores().states(["PLAY#0#000", "PLAY#0#001"]) == {"PLAY#0#000": b"back"}


def test_the_packs_of_a_batch_that_never_committed_are_ignored(stores, table):
    dying = stores()
    dying.apply(StoreBatch("p", offsets={0: 1}, states={"PLAY#a": b"a1"}))

    def die_at_the_marker(model: Any, **kwargs: Any) -> None:
        if model.name == "PutItem":
            raise Crash("died after writing the packs")

    dying._ddb.meta.events.register("before-call.dynamodb", die_at_the_marker)
    batch = StoreBatch("p", offsets={0: 2}, states={"PLAY#a": b"a2", "PLAY#b": b"b2"})
    with pytest.raises(StoreError):
        dying.apply(batch)
    assert len(pack_items(table)) == 2  # the dead batch's pack is there ...

    restarted = stores()
    assert restarted.offsets("p") == {0: 1}
    # ... but nobody sees it: not a new store object, not the one that wrote it.
    for store in (restarted, stores()):
        assert store.state_keys("PLAY#") == ["PLAY#a"]
        assert store.states(["PLAY#a", "PLAY#b"]) == {"PLAY#a": b"a1"}
    restarted.apply(StoreBatch("p", offsets={0: 2}, states={"PLAY#a": b"a2", "PLAY#b": b"b2"}))
    assert stores().states(["PLAY#a", "PLAY#b"]) == {"PLAY#a": b"a2", "PLAY#b": b"b2"}


def test_live_states_are_carried_forward_before_their_packs_expire(stores, table):
    """A store that carries every older pack's live states (``carry_age`` 0): once the
    first pack is past its TTL, what was live in it is still there, and what the second
    batch deleted stays deleted. A pack past its TTL whose states nobody carried is gone
    for every reader, deleted by DynamoDB or not."""
    carrier = DynamoDBStore(table, client=client("dynamodb"), carry_age=timedelta(0))
    try:
        carrier.apply(StoreBatch("p", offsets={0: 1}, states={"A": b"a", "B": b"b"}))
        carrier.apply(StoreBatch("p", offsets={0: 2}, states={"B": None, "C": b"c"}))
    finally:
        carrier.close()
    first, second = pack_items(table)
    expire_pack(table, first)
    for store in (stores(), stores()):
        assert store.state_keys("") == ["A", "C"]
        assert store.states(["A", "B", "C"]) == {"A": b"a", "C": b"c"}

    plain = stores()  # carries only what is older than two days: nothing here
    plain.apply(StoreBatch("p", offsets={0: 3}, states={"D": b"d"}))
    third = pack_items(table)[-1]
    assert third["sk"]["S"] > second["sk"]["S"]
    expire_pack(table, third)
    assert stores().states(["A", "C", "D"]) == {"A": b"a", "C": b"c"}
    with pytest.raises(StoreError, match="carry_age"):
        DynamoDBStore(table, carry_age=timedelta(days=20))


def test_keep_states_alive_carries_an_idle_tables_states_past_their_ttl(stores, table):
    """No batch comes: the runtimes' keep-alive carries the live states of old packs
    forward (no offsets, counters or journal), so they outlive their first packs' TTL;
    a deleted state stays deleted. With the default carry age (2 days) it writes
    nothing here."""
    writer = stores()
    writer.apply(StoreBatch("p", offsets={0: 1}, states={"A": b"a", "B": b"b"}))
    writer.apply(
        StoreBatch("p", offsets={0: 2}, states={"B": None}, increments={("T", "S"): {"n": 1}})
    )
    before = pack_items(table)
    assert stores().keep_states_alive() == 0
    assert pack_items(table) == before

    keeper = DynamoDBStore(table, client=client("dynamodb"), carry_age=timedelta(0))
    try:
        assert keeper.keep_states_alive() == 1  # A; B's tombstone is not carried
    finally:
        keeper.close()
    for item in before:
        expire_pack(table, item)
    reader = stores()
    assert reader.state_keys("") == ["A"]
    assert reader.states(["A", "B"]) == {"A": b"a"}
    assert reader.offsets("p") == {0: 2}
    assert reader.item("T", "S") == {"n": 1.0}


def test_a_batchs_states_cost_their_compressed_bytes_not_one_write_each(stores):
    store = stores()
    batch = StoreBatch("p", offsets={0: 1})
    for i in range(1000):
        batch.states[f"PLAY#0#play-{i:05d}"] = f'{{"user": "u{i % 50}", "events": 3}}'.encode()
    store.apply(batch)
    assert store.estimated_units_by_kind["states"] < 30  # 1,000 states of 30 bytes
    assert store.estimated_write_units < 40  # with the journal, commit and offsets
    assert len(stores().state_keys("PLAY#0#")) == 1000


# --- key registry ------------------------------------------------------------------------


def test_scan_reads_the_key_registry_which_holds_each_key_about_once(stores, table):
    writer, other = stores(), stores()
    units: list[int] = []
    for n in range(3):
        batch = StoreBatch("p", offsets={0: n + 1})
        for i in range(50):
            batch.add(f"CONTENT#{i:02d}", "DAY#2026-11-21", plays=1)
            batch.add(f"USER#{i:02d}", "DAY#2026-11-21", plays=1)
        batch.add(f"CONTENT#new{n}", "DAY#2026-11-21", plays=1)
        before = writer.estimated_units_by_kind.get("key registry", 0)
        writer.apply(batch)
        units.append(writer.estimated_units_by_kind["key registry"] - before)
    # The first batch registers 101 keys; the next ones only their one new key.
    assert units == [1, 1, 1]
    registry = client("dynamodb").query(
        TableName=table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": "~pp#KEYS#DAY#2026-11-21"}},
    )["Items"]
    assert len(registry) == 3
    # Another store object registers what it writes only if the registry lacks it.
    other.apply(StoreBatch("q", increments={("CONTENT#00", "DAY#2026-11-21"): {"plays": 1}}))
    assert "key registry" not in other.estimated_units_by_kind

    rows = other.scan("CONTENT#", "DAY#2026-11-21")
    assert [pk for pk, _ in rows] == sorted(
        [f"CONTENT#{i:02d}" for i in range(50)] + [f"CONTENT#new{n}" for n in range(3)]
    )
    assert rows[0] == ("CONTENT#00", {"plays": 4.0})
    assert len(stores().scan("", "DAY#2026-11-21")) == 103
    assert other.scan("USER#", "DAY#2026-11-22") == []


def test_keys_registered_by_a_batch_that_never_came_are_skipped_by_scan(stores):
    dying = stores()

    def die_at_the_marker(model: Any, **kwargs: Any) -> None:
        if model.name == "PutItem":
            raise Crash("died after the registry")

    dying._ddb.meta.events.register("before-call.dynamodb", die_at_the_marker)
    batch = StoreBatch("p", offsets={0: 1})
    batch.add("CONTENT#ghost", "TOTAL", plays=1)
    with pytest.raises(StoreError):
        dying.apply(batch)
    restarted = stores()
    assert restarted.scan("CONTENT#", "TOTAL") == []
    retry = StoreBatch("p", offsets={0: 1})
    retry.add("CONTENT#ghost", "TOTAL", plays=1)
    restarted.apply(retry)
    assert stores().scan("CONTENT#", "TOTAL") == [("CONTENT#ghost", {"plays": 1.0})]


def test_a_store_object_does_not_put_again_the_members_it_put(stores):
    store, other = stores(), stores()
    puts: list[int] = []
    for n in range(3):
        batch = StoreBatch("p", offsets={0: n + 1})
        batch.members |= {("U#title", f"u{i}") for i in range(40)} | {("U#title", f"v{n}")}
        before = store.estimated_units_by_kind.get("members", 0)
        store.apply(batch)
        puts.append(store.estimated_units_by_kind["members"] - before)
    assert puts == [41, 1, 1]
    other.apply(StoreBatch("q", members={("U#title", "u0"), ("U#title", "w")}))
    assert other.estimated_units_by_kind["members"] == 2  # it knows none of them
    assert stores().count_members("U#title") == 44


def test_a_table_with_states_of_the_layout_before_packs_is_refused(table):
    # A state item as the layout before state packs wrote it (one item per key).
    client("dynamodb").put_item(
        TableName=table,
        Item={"pk": {"S": "~pp#STATE#3"}, "sk": {"S": "sPLAY#0#p1"}, "b": {"B": b"x"}},
    )
    with pytest.raises(StoreError, match=r"before state packs.*new table"):
        DynamoDBStore(table, client=client("dynamodb"))
