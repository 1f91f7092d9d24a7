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
from dataclasses import dataclass
from pathlib import Path

from benchdocs import command_lines, machine, write_docs  # bench/ is on sys.path
from playpulse.aws.clients import client
from playpulse.aws.processor_handler import KinesisBatchHandler
from playpulse.aws.runner import EventSourceRunner, MappingOptions
from playpulse.aws.template import StackOptions
from playpulse.config import Settings
from playpulse.lake.factory import open_lake
from playpulse.quarantine.store import QuarantineStore
from playpulse.store.dynamodb import DynamoDBStore, create_table
from playpulse.stream.kinesis import KinesisStream
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
        return response.read().decode()


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


def run(events: int, batch_size: int, shards: int, naive_sample: int, seed: int) -> Costs:
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
            workload = build_workload(events, seed)
            for i in range(0, len(workload.records), 500):
                stream.append(workload.records[i : i + 500])
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
            sample_reported, sample_estimated = naive_writes(
                naive_table, workload.records, naive_sample
            )
            naive_total = sum(_item_units(len(v) + len(k) + 60) for k, v in workload.records)
            return Costs(
                events=len(workload.records),
                invocations=stats.invocations,
                records=stats.records,
                wru_reported=store.write_units,
                wru_estimated=store.estimated_write_units,
                write_requests=store.write_requests,
                s3_puts=puts,
                naive_wru=naive_total,
                naive_sample=min(naive_sample, len(workload.records)),
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
    args = parser.parse_args()
    costs = run(args.events, args.batch_size, args.shards, args.naive_sample, args.seed)
    lines = report(costs, args.wru_usd, args.put_usd, args.invoke_usd)
    print("\n".join(lines))
    if args.write_docs:
        command = " ".join(["python bench/aws.py", *sys.argv[1:]])
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
            *command_lines(command),
        ]
        write_docs(ROOT / "docs" / "benchmarks.md", "aws", "\n".join(section))


if __name__ == "__main__":
    main()
