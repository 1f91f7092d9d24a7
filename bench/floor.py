"""The floor under any processor of this stack: what the steps every processor must do
cost on this machine, each done the cheapest way the libraries offer, computing no metric.

Every processor that takes events from the embedded stream into the store and the lake
has to read the records, turn the JSON into something it can compute on, remember each
event id for deduplication, and write the events to Parquet. Each step is timed alone
over the same stream (the best of ``repeats`` passes by CPU time, so a neighbour's burst
does not count):

1. ``read``: the stream's record batches straight from its SQLite file (one ``SELECT``
   per partition, the stream's own msgpack batch decoding), payload bytes only. Cheaper
   than ``Consumer.poll``, which builds a ``Record`` per event.
2. ``parse``: all payloads into one Arrow table with pyarrow's JSON reader and the lake's
   payload schema, on one thread: no Python object per event.
3. ``dedup``: one ``INSERT`` per event id into a ``WITHOUT ROWID`` SQLite table, in one
   transaction (WAL, ``synchronous=NORMAL``): the store's dedup table without its expiry
   index, so less than the store does.
4. ``lake``: that Arrow table written as one zstd Parquet file.

``decode (msgspec)`` times the alternative to ``parse`` that per-event Python logic
needs: each payload decoded and validated into the event model (``decode_stored``). It
is shown, not added: the floor takes the columnar path.

    python bench/floor.py --events 100000     # alone; bench/process.py runs it too
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from playpulse.events.codec import decode_stored
from playpulse.lake.schema import parse_payloads
from playpulse.lake.writer import dictionary_columns
from playpulse.store.sqlite import dedup_id
from playpulse.stream.sqlite import decode_record_batch

#: Steps summed into the floor (``decode (msgspec)`` is shown beside them).
FLOOR_STEPS = ("read", "parse", "dedup", "lake")


@dataclass
class FloorStep:
    """One step: ``cpu_s`` of this process's CPU for ``events`` events."""

    name: str
    events: int
    cpu_s: float

    @property
    def us_per_event(self) -> float:
        return 1e6 * self.cpu_s / self.events

    @property
    def events_per_cpu_s(self) -> float:
        return self.events / self.cpu_s if self.cpu_s > 0 else float("nan")


def _best_cpu_s(fn: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        fn()
        best = min(best, time.process_time() - started)
    return best


def _read_payloads(stream_path: Path) -> list[bytes]:
    db = sqlite3.connect(f"file:{stream_path}?mode=ro", uri=True)
    try:
        out: list[bytes] = []
        for (blob,) in db.execute(
            "SELECT records FROM record_batches ORDER BY partition, base_offset"
        ):
            out.extend(value for _, value in decode_record_batch(blob))
        return out
    finally:
        db.close()


def _parse(payloads: list[bytes]) -> pa.Table:
    return parse_payloads(payloads)


def _insert_ids(path: Path, keys: list[str]) -> None:
    """Each key's 64-bit id (the SQLite store's ``dedup_id``) into a rowid table with no
    other index, in id order, one transaction: how the store remembers dedup keys."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE dedup_ids (id INTEGER PRIMARY KEY, expires_at_us INTEGER)")
        db.execute("BEGIN")
        db.executemany(
            "INSERT OR IGNORE INTO dedup_ids VALUES (?, 0)",
            ((i,) for i in sorted(map(dedup_id, keys))),
        )
        db.execute("COMMIT")
    finally:
        db.close()


def measure_floor(stream_path: Path, work_dir: Path, repeats: int = 3) -> list[FloorStep]:
    """Time each step over every record of the SQLite stream at ``stream_path`` (files go
    to ``work_dir``); returns the steps of :data:`FLOOR_STEPS`, then ``decode (msgspec)``.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    payloads = _read_payloads(stream_path)
    n = len(payloads)
    table = _parse(payloads)
    ids = table["event_id"].to_pylist()
    runs = iter(range(1_000_000))

    def dedup() -> None:
        _insert_ids(work_dir / f"dedup-{next(runs)}.db", ids)

    def lake() -> None:
        pq.write_table(
            table,
            work_dir / f"events-{next(runs)}.parquet",
            compression="zstd",
            use_dictionary=dictionary_columns(table.schema),
        )

    return [
        FloorStep("read", n, _best_cpu_s(lambda: _read_payloads(stream_path), repeats)),
        FloorStep("parse", n, _best_cpu_s(lambda: _parse(payloads), repeats)),
        FloorStep("dedup", n, _best_cpu_s(dedup, repeats)),
        FloorStep("lake", n, _best_cpu_s(lake, repeats)),
        FloorStep(
            "decode (msgspec)",
            n,
            _best_cpu_s(lambda: [decode_stored(p) for p in payloads], repeats),
        ),
    ]


def floor_total(steps: list[FloorStep]) -> FloorStep:
    """The sum of the :data:`FLOOR_STEPS` steps."""
    summed = [s for s in steps if s.name in FLOOR_STEPS]
    return FloorStep("floor (sum)", summed[0].events, sum(s.cpu_s for s in summed))


_DESCRIPTIONS = {
    "read": "record batches from the stream's SQLite file, payload bytes only",
    "parse": "payloads to one Arrow table (pyarrow JSON reader, one thread)",
    "dedup": "each event id's 64-bit hash, 1 INSERT each in id order, one transaction",
    "lake": "the Arrow table to one zstd Parquet file (the lake's dictionary columns)",
    "decode (msgspec)": "shown, not summed: payloads to validated event structs",
    "floor (sum)": "read + parse + dedup + lake",
}


def floor_table(steps: list[FloorStep]) -> str:
    """A Markdown table of ``steps`` and their sum."""
    rows = [
        "| step | what | CPU us per event | events per CPU-s |",
        "|---|---|---|---|",
    ]
    for s in [*steps, floor_total(steps)]:
        name = f"**{s.name}**" if s.name == "floor (sum)" else s.name
        rows.append(
            f"| {name} | {_DESCRIPTIONS[s.name]} | {s.us_per_event:.2f} |"
            f" {s.events_per_cpu_s:,.0f} |"
        )
    return "\n".join(rows)


def main() -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from process import build_workload, fill_stream

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    workload = build_workload(args.events, args.seed)
    with tempfile.TemporaryDirectory(prefix="playpulse-bench-floor-") as tmp_name:
        tmp = Path(tmp_name)
        fill_stream(tmp / "stream.db", workload.records, 500).close()
        print(floor_table(measure_floor(tmp / "stream.db", tmp / "floor")))


if __name__ == "__main__":
    main()
