"""What playpulse costs on AWS per event: DynamoDB write request units, S3 PUT requests
and Lambda invocations, next to the naive design (one DynamoDB write per event).

Runs on moto in server mode on 127.0.0.1 (started here, stopped at the end): the
simulated workload (bench/process.py's generator) is appended to a Kinesis stream, then
the Lambda processor handler consumes it through the event source mapping's runner
(``playpulse aws run-processor``) into a DynamoDB store and an S3 lake. Counted:

- **write request units**: what DynamoDB reports (``ReturnConsumedCapacity=TOTAL``;
  moto reports 1 per item written whatever its size) and, as DynamoDB bills on-demand
  writes, 1 per started KB of each item written, per index it is in
  (``DynamoDBStore.estimated_write_units``);
- **S3 PUT requests** and **handler invocations**: the requests moto's recorder saw
  (every PUT to the bucket, lake files and quarantine objects) and the runner's count;
- **the naive design** in the same run: each event put as one DynamoDB item (the
  minimum a one-write-per-event pipeline writes, before any counter): written for real
  for a sample of ``--naive-sample`` events with BatchWriteItem (moto's reported units
  and the size-based units), and the size-based units computed for every event.

Priced at AWS's published on-demand rates for us-east-1 (``--wru-usd``, ``--put-usd``,
``--invoke-usd``): DynamoDB $0.625 per million write request units, S3 $0.005 per 1,000
PUTs, Lambda $0.20 per million requests (duration not included).

**The floor** (:func:`write_floor`, no moto): the same workload replayed through the
processor into a store that records each :class:`~playpulse.store.base.StoreBatch`, one
batch per shard's Lambda batch as the runner delivers them. Per kind of item (counter
items, set members, dedup keys, states) it counts the distinct items of the whole run and
the items batches touch, and the counter-item writes if each shard held its counter
deltas for K batches before writing them (K batches of 1,000 records are about K seconds
at a shard's 1,000 records a second). What a layout of one DynamoDB item per counter
(updated with ``ADD``) cannot write less than: each distinct counter item once.
``--floor-only`` prints these tables alone (seconds, no moto).

    python bench/aws.py --events 100000 --write-docs

The Lambda batch size defaults to the stack template's (``StackOptions().batch_size``),
so the figures are those of the deployed stack.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
import urllib.request
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchdocs import command_lines, machine, write_docs  # bench/ is on sys.path
from playpulse.aws.clients import client
from playpulse.aws.processor_handler import KinesisBatchHandler
from playpulse.aws.runner import EventSourceRunner, MappingOptions
from playpulse.aws.template import StackOptions
from playpulse.config import Settings
from playpulse.lake.factory import open_lake
from playpulse.processor.pipeline import Processor
from playpulse.quarantine.store import QuarantineStore
from playpulse.store.base import ItemKey, StoreBatch
from playpulse.store.dynamodb import DynamoDBStore, create_table
from playpulse.store.memory import MemoryStore
from playpulse.stream.base import Batch
from playpulse.stream.kinesis import KinesisStream, hash_key
from playpulse.stream.memory import MemoryStream
from playpulse.testing import load_module
from process import build_workload

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Costs:
    """What one run wrote, and the naive design's units for the same events."""

    events: int
    invocations: int
    records: int
    wru_reported: float
    wru_estimated: int
    write_requests: int
    s3_puts: int
    naive_wru: int
    naive_sample: int
    naive_sample_reported: float
    naive_sample_estimated: int
    process_s: float
    by_kind: dict[str, int]


def _recorder(endpoint: str, action: str) -> str:
    method = "GET" if action == "download-recording" else "POST"
    req = urllib.request.Request(f"{endpoint}/moto-api/recorder/{action}", method=method)
    with urllib.request.urlopen(req, timeout=60) as response:
        return str(response.read().decode())


def _s3_puts(recording: str, bucket: str) -> int:
    # The server's threads append whole entries, but a newline may land after another
    # thread's entry: decode entry after entry rather than line by line.
    decoder = json.JSONDecoder()
    puts = 0
    at = 0
    while True:
        while at < len(recording) and recording[at].isspace():
            at += 1
        if at >= len(recording):
            break
        entry, at = decoder.raw_decode(recording, at)
        host = entry.get("headers", {}).get("Host", "")
        url = entry.get("url", "")
        if entry.get("method") == "PUT" and (f"/{bucket}/" in url or host.startswith(bucket)):
            puts += 1
    return puts


def _item_units(item_bytes: int) -> int:
    return max(1, math.ceil(item_bytes / 1024))


def naive_writes(table: str, records: list[tuple[str, bytes]], sample: int) -> tuple[float, int]:
    """Put the first ``sample`` events as one item each (``pk`` = event id, the payload);
    DynamoDB's reported units and the size-based units."""
    ddb = client("dynamodb")
    reported = 0.0
    estimated = 0
    for start in range(0, min(sample, len(records)), 25):
        items = []
        for key, value in records[start : min(start + 25, sample)]:
            event_id = json.loads(value)["event_id"]
            items.append(
                {"pk": {"S": f"EVENT#{event_id}"}, "sk": {"S": key}, "payload": {"B": value}}
            )
            estimated += _item_units(len(event_id) + 6 + len(key) + len(value) + 20)
        answer = ddb.batch_write_item(
            RequestItems={table: [{"PutRequest": {"Item": i}} for i in items]},
            ReturnConsumedCapacity="TOTAL",
        )
        reported += sum(c.get("CapacityUnits", 0.0) for c in answer.get("ConsumedCapacity", []))
    return reported, estimated


# --------------------------------------------------------------------------------------
# The floor: what the processor's store batches name, whatever the layout


WINDOWS = (1, 2, 5, 10, 50)


class KinesisRoutedStream(MemoryStream):
    """A :class:`MemoryStream` that puts a key in the partition Kinesis puts it in on a
    stream created with ``num_partitions`` shards (equal hash-key ranges of the key's MD5),
    so that its batches hold the records the Kinesis run's batches hold."""

    def partition_for(self, key: str) -> int:
        return min(hash_key(key) // (2**128 // self.num_partitions), self.num_partitions - 1)


def _packed(value: object) -> int:
    """Bytes of ``value`` as JSON, zlib-compressed at level 6 (as the store's packs)."""
    return len(zlib.compress(json.dumps(value).encode(), 6))


@dataclass
class Written:
    """What one store batch names: its shard, counter items, set members, dedup keys,
    state keys with the bytes written (0 for a delete); and what a write-once pack of the
    batch's counter deltas, of its members, of its state blobs would take, in bytes
    zlib-compressed at level 6 (as the store's packs)."""

    partition: int
    counters: set[ItemKey]
    members: set[tuple[str, str]]
    dedup: set[str]
    states: dict[str, int]
    counters_packed: int
    members_packed: int
    states_packed: int


class RecordingStore(MemoryStore):
    """A :class:`MemoryStore` that keeps what each applied batch names (:class:`Written`)."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[Written] = []
        self.totals: dict[ItemKey, Counter[str]] = {}

    def apply(self, batch: StoreBatch) -> None:
        """Record ``batch`` (one partition's: the replay applies one at a time), apply it."""
        blobs = [blob for blob in batch.states.values() if blob]
        deltas = sorted((pk, sk, dict(amounts)) for (pk, sk), amounts in batch.increments.items())
        for pk, sk, amounts in deltas:
            self.totals.setdefault((pk, sk), Counter()).update(amounts)
        self.written.append(
            Written(
                partition=min(batch.offsets, default=-1),
                counters=set(batch.increments),
                members=set(batch.members),
                dedup={event_id for event_id, _ in batch.dedup},
                states={key: len(blob or b"") for key, blob in batch.states.items()},
                counters_packed=_packed(deltas),
                members_packed=_packed(sorted(batch.members)),
                states_packed=len(zlib.compress(b"".join(blobs), 6)) if blobs else 0,
            )
        )
        super().apply(batch)


@dataclass
class Floor:
    """The write floor of a run: ``events`` replayed in ``batches`` store batches.

    Per kind, ``*_distinct``: distinct items of the whole run (counter items (pk, sk),
    set members (set key, member), dedup keys, state keys); ``*_touched``: the sum over
    batches of the items each names (each batch writes what it touched). ``state_bytes``:
    state bytes written; ``*_packed_bytes``: counter deltas, members and state blobs as
    write-once packs, one per batch and kind, zlib-compressed (bytes, summed over
    batches); ``counter_snapshot_bytes``: every counter item's final values in one
    zlib-compressed snapshot.
    ``counter_writes``: K -> counter-item writes if each shard summed its deltas over K
    consecutive batches of its own and wrote each item touched once per window;
    ``counter_once_per_shard``: each shard writing each of its items once in the run.
    ``counter_kinds``: distinct counter items by ``pk`` prefix and ``sk`` prefix."""

    events: int
    batches: int
    counters_distinct: int
    counters_touched: int
    members_distinct: int
    members_touched: int
    dedup_distinct: int
    dedup_touched: int
    states_distinct: int
    states_touched: int
    state_bytes: int
    counters_packed_bytes: int
    members_packed_bytes: int
    state_packed_bytes: int
    counter_snapshot_bytes: int
    counter_writes: dict[int, int]
    counter_once_per_shard: int
    counter_kinds: Counter[str] = field(default_factory=Counter)


def windowed_writes(per_shard: Sequence[Sequence[set[ItemKey]]], k: int) -> int:
    """Counter-item writes when each shard (a list of its batches' item sets, in order)
    writes, per window of ``k`` consecutive batches, each item the window touched once."""
    return sum(
        len(set().union(*batches[start : start + k]))
        for batches in per_shard
        for start in range(0, len(batches), k)
    )


def write_floor(
    records: Sequence[tuple[str, bytes]],
    partitions: int,
    batch_size: int,
    windows: Sequence[int] = WINDOWS,
) -> Floor:
    """Replay ``records`` (key, stored event) through the processor as the Lambda runner
    delivers them (``partitions`` shards, Kinesis' routing; each shard's records in
    batches of ``batch_size``, shard after shard) into a :class:`RecordingStore`, and
    count what they name (:class:`Floor`). No lake. Raises ``ValueError`` for a
    ``batch_size`` or window below 1."""
    if batch_size < 1 or min(windows, default=1) < 1:
        raise ValueError(f"batch size and windows must be >= 1, got {batch_size}, {windows}")
    stream = KinesisRoutedStream(num_partitions=partitions)
    for start in range(0, len(records), 500):
        stream.append(records[start : start + 500])
    store = RecordingStore()
    with tempfile.TemporaryDirectory() as tmp:
        processor = Processor(stream, store, None, QuarantineStore(Path(tmp) / "q.db"))
        processor.start()
        for p in range(partitions):
            offset = 0
            while chunk := stream.read(p, offset, batch_size):
                processor.process_batch(Batch(p, chunk))
                offset = chunk[-1].offset + 1
        processor.close()
    written = store.written
    per_shard = [[w.counters for w in written if w.partition == p] for p in range(partitions)]
    counters: set[ItemKey] = set().union(*(w.counters for w in written))
    return Floor(
        events=len(records),
        batches=len(written),
        counters_distinct=len(counters),
        counters_touched=sum(len(w.counters) for w in written),
        members_distinct=len(set().union(*(w.members for w in written))),
        members_touched=sum(len(w.members) for w in written),
        dedup_distinct=len(set().union(*(w.dedup for w in written))),
        dedup_touched=sum(len(w.dedup) for w in written),
        states_distinct=len(set().union(*(w.states for w in written))),
        states_touched=sum(len(w.states) for w in written),
        state_bytes=sum(sum(w.states.values()) for w in written),
        counters_packed_bytes=sum(w.counters_packed for w in written),
        members_packed_bytes=sum(w.members_packed for w in written),
        state_packed_bytes=sum(w.states_packed for w in written),
        counter_snapshot_bytes=_packed(
            sorted((pk, sk, dict(amounts)) for (pk, sk), amounts in store.totals.items())
        ),
        counter_writes={k: windowed_writes(per_shard, k) for k in windows},
        counter_once_per_shard=sum(len(set().union(*batches)) for batches in per_shard),
        counter_kinds=Counter(f"{pk.split('#')[0]}/{sk.split('#')[0]}" for pk, sk in counters),
    )


def floor_report(f: Floor, batch_size: int) -> list[str]:
    """The floor as Markdown tables (per event: divided by ``f.events``)."""
    per = 1 / f.events
    kinds = ", ".join(f"{kind} {n:,}" for kind, n in f.counter_kinds.most_common(8))
    lines = [
        f"| kind ({f.events:,} events, {f.batches} store batches) | distinct over the run "
        "(per event) | touched per event, each batch writing what it touched | "
        "packed: one write-once zlib pack per batch and kind, bytes per event |",
        "|---|---|---|---|",
        f"| counter items (pk, sk) | {f.counters_distinct:,} ({f.counters_distinct * per:.3f}) "
        f"| {f.counters_touched * per:.3f} | {f.counters_packed_bytes * per:.1f} |",
        f"| set members | {f.members_distinct:,} ({f.members_distinct * per:.3f}) "
        f"| {f.members_touched * per:.3f} | {f.members_packed_bytes * per:.1f} |",
        f"| dedup keys | {f.dedup_distinct:,} ({f.dedup_distinct * per:.3f}) "
        f"| {f.dedup_touched * per:.3f} | - |",
        f"| state keys | {f.states_distinct:,} ({f.states_distinct * per:.3f}) "
        f"| {f.states_touched * per:.3f} ({f.state_bytes * per:,.0f} bytes) "
        f"| {f.state_packed_bytes * per:.1f} |",
        "",
        f"Distinct counter items by pk/sk prefix: {kinds}. All of them with their final "
        f"values in one zlib-compressed snapshot: {f.counter_snapshot_bytes / 1024:,.0f} KB.",
        "",
        "| counter deltas held per shard for | counter-item writes per event |",
        "|---|---|",
        *(
            f"| {k} batch{'es' if k > 1 else ''} (about {k * batch_size / 1000:g} s at "
            f"1,000 records/s) | {writes * per:.3f} |"
            for k, writes in f.counter_writes.items()
        ),
        f"| the whole run (each shard writes each of its items once) | "
        f"{f.counter_once_per_shard * per:.3f} |",
        f"| the whole run, all shards together (the floor of one item per counter) | "
        f"{f.counters_distinct * per:.3f} |",
    ]
    return lines


def run(records: list[tuple[str, bytes]], batch_size: int, shards: int, naive_sample: int) -> Costs:
    """Process ``records`` (key, stored event) on moto as the stack would (see the module
    docstring) and count what it wrote."""
    moto = load_module(ROOT / "tests" / "moto_server.py", "moto_server")
    # The server records requests (moto's recorder, read from its environment); the
    # recording is reset just before the processing starts and stopped after it.
    os.environ["MOTO_ENABLE_RECORDING"] = "True"
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MOTO_RECORDER_FILEPATH"] = str(Path(tmp) / "recording.jsonl")
        server = moto.MotoServer()
        try:
            os.environ.update(server.env)
            name = server.unique("pp-bench")
            stream = KinesisStream(name, create=True, shards=shards)
            create_table(name)
            client("s3").create_bucket(Bucket=name)
            naive_table = f"{name}-naive"
            create_table(naive_table)
            for i in range(0, len(records), 500):
                stream.append(records[i : i + 500])
            settings = Settings(
                data_dir=Path(tmp) / "data",
                stream_url=f"kinesis://{name}",
                store_url=f"dynamodb://{name}",
                lake_url=f"s3://{name}/lake",
            )
            store = DynamoDBStore(name)
            quarantine = QuarantineStore(Path(tmp) / "quarantine.db")
            handler = KinesisBatchHandler(stream, store, open_lake(settings), quarantine)
            runner = EventSourceRunner(stream, handler, MappingOptions(batch_size=batch_size))
            _recorder(server.endpoint, "reset-recording")
            _recorder(server.endpoint, "start-recording")
            started = time.perf_counter()
            stats = runner.run_once()
            process_s = time.perf_counter() - started
            _recorder(server.endpoint, "stop-recording")
            puts = _s3_puts(_recorder(server.endpoint, "download-recording"), name)
            sample_reported, sample_estimated = naive_writes(naive_table, records, naive_sample)
            naive_total = sum(_item_units(len(v) + len(k) + 60) for k, v in records)
            return Costs(
                events=len(records),
                invocations=stats.invocations,
                records=stats.records,
                wru_reported=store.write_units,
                wru_estimated=store.estimated_write_units,
                write_requests=store.write_requests,
                s3_puts=puts,
                naive_wru=naive_total,
                naive_sample=min(naive_sample, len(records)),
                naive_sample_reported=sample_reported,
                naive_sample_estimated=sample_estimated,
                process_s=process_s,
                by_kind=dict(store.estimated_units_by_kind),
            )
        finally:
            server.close()


def report(c: Costs, wru_usd: float, put_usd: float, invoke_usd: float) -> list[str]:
    per_m = 1e6 / c.events
    ours = c.wru_estimated * per_m * wru_usd / 1e6
    puts = c.s3_puts * per_m * put_usd / 1e3
    invokes = c.invocations * per_m * invoke_usd / 1e6
    naive = c.naive_wru * per_m * wru_usd / 1e6
    ratio = c.wru_estimated / c.naive_wru
    return [
        "| measure | playpulse | naive (1 write per event) |",
        "|---|---|---|",
        f"| DynamoDB write request units, by item size | {c.wru_estimated:,} "
        f"({c.wru_estimated / c.events:.3f} per event) | {c.naive_wru:,} "
        f"({c.naive_wru / c.events:.3f} per event) |",
        f"| DynamoDB write units as moto reports them | {c.wru_reported:,.0f} | "
        f"{c.naive_sample_reported:,.0f} for the first {c.naive_sample:,} events "
        f"({c.naive_sample_estimated:,} by size) |",
        f"| DynamoDB write requests (calls) | {c.write_requests:,} | {c.events:,} items |",
        "| of which (units per event) | "
        + ", ".join(
            f"{kind} {units / c.events:.4f}"
            for kind, units in sorted(c.by_kind.items(), key=lambda kv: -kv[1])
        )
        + " | - |",
        f"| S3 PUT requests | {c.s3_puts:,} | - |",
        f"| Lambda invocations | {c.invocations:,} | - |",
        f"| cost per million events (WRU + PUT + invocations) | ${ours + puts + invokes:.2f} "
        f"(${ours:.2f} + ${puts:.2f} + ${invokes:.2f}) | ${naive:.2f} (WRU only) |",
        "",
        f"playpulse's write request units are **{ratio:.3f}x** the naive design's "
        f"(target: at most 0.1x). {c.events:,} events, {c.records:,} records delivered, "
        f"processed on moto in {c.process_s:.0f} s.",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument(
        "--batch-size",
        type=int,
        default=StackOptions().batch_size,
        help="Lambda BatchSize (default: the stack template's)",
    )
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--naive-sample", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--wru-usd", type=float, default=0.625, help="per million WRU")
    parser.add_argument("--put-usd", type=float, default=0.005, help="per 1,000 PUTs")
    parser.add_argument("--invoke-usd", type=float, default=0.20, help="per million calls")
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument(
        "--floor-only", action="store_true", help="only the floor tables (no moto, no docs)"
    )
    args = parser.parse_args()
    if args.floor_only and args.write_docs:
        parser.error("--floor-only does not write the docs: the docs need the moto run")
    records = build_workload(args.events, args.seed).records
    started = time.perf_counter()
    floor = write_floor(records, args.shards, args.batch_size)
    floor_lines = floor_report(floor, args.batch_size)
    floor_s = time.perf_counter() - started
    print("\n".join(floor_lines))
    print(f"(floor replay: {floor_s:.0f} s)\n")
    if args.floor_only:
        return
    costs = run(records, args.batch_size, args.shards, args.naive_sample)
    lines = report(costs, args.wru_usd, args.put_usd, args.invoke_usd)
    print("\n".join(lines))
    if args.write_docs:
        command = " ".join(["python bench/aws.py", *sys.argv[1:]])
        counters = costs.by_kind.get("counters", 0) / costs.events
        section = [
            "## AWS cost per event (bench/aws.py)",
            "",
            f"Machine: {machine()}. Kinesis, DynamoDB and S3 on moto in server mode; "
            f"{args.shards} shards, Lambda batch size {args.batch_size}"
            + (
                " (the stack template's default)."
                if args.batch_size == StackOptions().batch_size
                else " (not the stack template's default)."
            ),
            "",
            *lines,
            "",
            "### The floor: what the processor's store batches name",
            "",
            "The same events replayed through the processor (no moto: "
            "`bench/aws.py`'s `write_floor`), one store batch per shard's Lambda batch, "
            "counting the items each batch names whatever the layout writes for them. "
            f"The run above wrote {counters:.3f} counter units per event in "
            f"{costs.invocations} invocations; the replay: {floor.batches} store batches.",
            "",
            *floor_lines,
            *command_lines(command),
        ]
        write_docs(ROOT / "docs" / "benchmarks.md", "aws", "\n".join(section))


if __name__ == "__main__":
    main()
