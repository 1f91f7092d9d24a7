"""Crash test: SIGKILL a real processor process again and again while it consumes.

A simulated workload (duplicates, out-of-order and late deliveries at the simulator's
default rates) is validated and appended to a 4-partition SQLite stream, and the stream
file is copied to a second data dir.

- The *reference* run processes the copy in this process, without interruption.
- The *crash* run starts ``crash_worker.py`` (the processor as ``playpulse up`` opens it)
  on the original data dir as a subprocess and SIGKILLs it a random time after its first
  commit, ``KILLS`` times, each time starting it again on the same files. Every kill must
  find the worker still consuming; after each one the store's committed offsets must
  have grown and must hold every commit the worker reported. Then the worker runs to the
  end and must exit 0.

Both runs use the same options (a small ``batch_size``, so there are many commits to
interrupt). Afterwards the two data dirs must hold the same results: every store item
(floats within ``FLOAT_TOLERANCE``, an absent attribute counting as 0), every set's
members, the committed offsets, the lake's events (same ``(event_id, late)`` multiset,
no stream record twice) and plays (same versions, same newest row per play), and the
quarantine.

The kill moments follow a seed that is printed in every assertion message; set
``PLAYPULSE_CRASH_SEED`` to rerun with a given one (the workload is always the same).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import duckdb
import pytest

from playpulse.config import Settings
from playpulse.events.codec import validate_event
from playpulse.lake.schema import SCHEMAS
from playpulse.lake.writer import LakeWriter
from playpulse.processor.pipeline import ProcessorOptions
from playpulse.quarantine.store import QuarantineStore
from playpulse.service import close_processor, open_processor
from playpulse.sources.simulator import SimulationConfig, simulate
from playpulse.stream.sqlite import SQLiteStream

pytestmark = pytest.mark.slow

KILL_SEED = int(os.environ.get("PLAYPULSE_CRASH_SEED") or random.SystemRandom().randrange(2**32))
SIMULATION_SEED = 20260612
EVENTS = 30_000
NUM_PARTITIONS = 4
#: Records per partition per poll: small, so that there are many commits to interrupt.
BATCH_SIZE = 250
OPTIONS = ProcessorOptions(batch_size=BATCH_SIZE)
KILLS = 20
#: A kill comes a random time of up to this long after the worker's first commit (less
#: when the work left would not last for the kills still to come).
MAX_KILL_DELAY_S = 0.5
#: The whole test gives up after this long.
GLOBAL_DEADLINE_S = 240.0
#: How long a worker may take to start and commit its first batch.
FIRST_COMMIT_DEADLINE_S = 60.0
#: Largest difference between two float attributes that still counts as equal.
FLOAT_TOLERANCE = 1e-6
#: Differences listed per kind in a failure message.
SHOW = 8

WORKER = Path(__file__).with_name("crash_worker.py")


def context() -> str:
    return f"(kill seed {KILL_SEED}; rerun with PLAYPULSE_CRASH_SEED={KILL_SEED})"


# --------------------------------------------------------------------------- the stream


def build_stream(path: Path) -> int:
    """Append the simulated workload, validated, to a new stream at ``path`` in receive
    order (keyed by actor, as the collector does); return the number of records."""
    config = SimulationConfig(seed=SIMULATION_SEED).with_target_events(EVENTS)
    records = []
    for sim in simulate(config):
        accepted = validate_event(json.dumps(sim.payload), sim.received_at)
        records.append((accepted.event.actor_id, accepted.payload))
    stream = SQLiteStream(path, num_partitions=NUM_PARTITIONS)
    try:
        for start in range(0, len(records), 1_000):
            stream.append(records[start : start + 1_000])
        assert sum(p.count for p in stream.partitions()) == len(records)
    finally:
        stream.close()
    return len(records)


def copy_sqlite(source: Path, target: Path) -> None:
    """Copy a closed SQLite file with the backup API (WAL contents included)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    src = sqlite3.connect(source)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


def settings(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir, num_partitions=NUM_PARTITIONS)


def committed_offsets(store_path: Path) -> dict[int, int]:
    """The store's committed offsets (next offset per partition) of the processor."""
    db = sqlite3.connect(store_path, timeout=30)
    try:
        rows = db.execute(
            "SELECT partition, next_offset FROM offsets WHERE consumer = ?", (OPTIONS.consumer,)
        ).fetchall()
    finally:
        db.close()
    return {int(p): int(o) for p, o in rows}


# --------------------------------------------------------------------------- the worker


class Worker:
    """``crash_worker.py`` on ``data_dir`` as a subprocess, its output in ``log_path``.

    It imports its modules at once but opens the data dir only after :meth:`go`.
    """

    def __init__(self, data_dir: Path, log_path: Path) -> None:
        self.log_path = log_path
        env = {k: v for k, v in os.environ.items() if not k.startswith("PLAYPULSE_")}
        env["PYTHONUNBUFFERED"] = "1"
        with log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(WORKER), str(data_dir), str(NUM_PARTITIONS), str(BATCH_SIZE)],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=data_dir,
                env=env,
            )

    def lines(self) -> list[str]:
        """Complete lines written so far (a kill may cut the last one short)."""
        text = self.log_path.read_text(errors="replace")
        return text.split("\n")[:-1]

    def tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def go(self) -> None:
        """Let the worker open the data dir and process."""
        assert self.proc.stdin is not None
        # A worker that died already is reported by whoever waits for it next.
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.write(b"go\n")
        self._close_stdin()

    def _close_stdin(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()

    def reported(self) -> dict[int, int]:
        """The highest offset the worker reported committed, per partition."""
        out: dict[int, int] = {}
        for line in self.lines():
            if line.startswith("commit "):
                _, partition, offset = line.split()
                out[int(partition)] = max(out.get(int(partition), 0), int(offset))
        return out

    def wait_first_commit(self, deadline: float) -> None:
        while not self.reported():
            if self.proc.poll() is not None:
                pytest.fail(
                    f"worker exited with {self.proc.returncode} before its first commit "
                    f"{context()}:\n{self.tail()}"
                )
            if time.monotonic() > deadline:
                pytest.fail(f"worker made no commit in time {context()}:\n{self.tail()}")
            time.sleep(0.002)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._close_stdin()


# --------------------------------------------------------------------------- comparison


def _same(a: float, b: float) -> bool:
    if a.is_integer() and b.is_integer():  # counts (and integral sums) exactly
        return a == b
    return abs(a - b) <= FLOAT_TOLERANCE


def _query(db_path: Path, sql: str) -> list[tuple[Any, ...]]:
    if not db_path.exists():
        return []
    db = sqlite3.connect(db_path)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def _lake(data_dir: Path, table: str, sql: str) -> list[dict[str, Any]]:
    """``sql`` with ``{files}`` standing for the live files of ``table`` (no rows if none)."""
    files = [str(p) for p in LakeWriter(settings(data_dir).lake_path, SCHEMAS).live_files(table)]
    if not files:
        return []
    source = f"read_parquet({files!r}, hive_partitioning = false)"
    with duckdb.connect() as con:
        # Through Arrow: DuckDB's own fetch of zoned timestamps needs pytz.
        arrow = con.sql(sql.format(files=source)).to_arrow_table()
    rows: list[dict[str, Any]] = arrow.to_pylist()
    return rows


def _short(value: Any, chars: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= chars else text[:chars] + "..."


def _same_value(a: Any, b: Any) -> bool:
    """Equal, floats within the tolerance, also inside lists and structs."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, int | float) and isinstance(b, int | float) and _same(a, b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_value(a[k], b[k]) for k in a)
    return bool(a == b)


def _diff_rows(
    kind: str, ref: dict[str, dict[str, Any]], crash: dict[str, dict[str, Any]]
) -> list[str]:
    """Rows by key; a difference names the key and the columns that differ."""
    keys = sorted(k for k in ref.keys() | crash.keys() if not _same_value(ref.get(k), crash.get(k)))
    if not keys:
        return []
    lines = [f"{kind}: {len(keys)} keys differ (reference vs crash run):"]
    for key in keys[:SHOW]:
        a, b = ref.get(key), crash.get(key)
        if a is None or b is None:
            lines.append(f"  {key!r}: {_short(a)} vs {_short(b)}")
            continue
        columns = [c for c in a.keys() | b.keys() if not _same_value(a.get(c), b.get(c))]
        lines.append(
            f"  {key!r}: "
            + "; ".join(
                f"{c}: {_short(a.get(c, '<absent>'))} vs {_short(b.get(c, '<absent>'))}"
                for c in sorted(columns)
            )
        )
    return lines


def _diff_maps(
    kind: str, ref: dict[Any, Any], crash: dict[Any, Any], same: Any, missing: Any = None
) -> list[str]:
    keys = sorted(
        (
            k
            for k in ref.keys() | crash.keys()
            if not same(ref.get(k, missing), crash.get(k, missing))
        ),
        key=repr,
    )
    if not keys:
        return []
    lines = [f"{kind}: {len(keys)} keys differ (reference vs crash run):"]
    lines += [
        f"  {k!r}: {_short(ref.get(k, missing))} vs {_short(crash.get(k, missing))}"
        for k in keys[:SHOW]
    ]
    return lines


def compare_outputs(ref_dir: Path, crash_dir: Path) -> list[str]:
    """Every difference between the results in two data dirs, as readable lines."""
    out: list[str] = []
    ref_s, crash_s = settings(ref_dir), settings(crash_dir)

    def items(path: Path) -> dict[tuple[str, str, str], float]:
        rows = _query(path, "SELECT pk, sk, attr, value FROM items")
        return {(pk, sk, attr): float(v) for pk, sk, attr, v in rows}

    ref_items, crash_items = items(ref_s.store_path), items(crash_s.store_path)
    out += _diff_maps("store items", ref_items, crash_items, _same, missing=0.0)

    def members(path: Path) -> dict[str, frozenset[str]]:
        sets: dict[str, set[str]] = {}
        for key, member in _query(path, "SELECT set_key, member FROM members"):
            sets.setdefault(key, set()).add(member)
        return {k: frozenset(v) for k, v in sets.items()}

    ref_sets, crash_sets = members(ref_s.store_path), members(crash_s.store_path)
    out += _diff_maps(
        "set member counts",
        {k: len(v) for k, v in ref_sets.items()},
        {k: len(v) for k, v in crash_sets.items()},
        lambda a, b: a == b,
        missing=0,
    )
    out += _diff_maps("set members", ref_sets, crash_sets, lambda a, b: a == b, frozenset())

    offsets_sql = "SELECT consumer, partition, next_offset FROM offsets"
    ref_offsets = {(c, p): o for c, p, o in _query(ref_s.store_path, offsets_sql)}
    crash_offsets = {(c, p): o for c, p, o in _query(crash_s.store_path, offsets_sql)}
    out += _diff_maps("committed offsets", ref_offsets, crash_offsets, lambda a, b: a == b)

    def events(data_dir: Path) -> dict[tuple[str, bool], int]:
        sql = "SELECT event_id, late, count(*) AS n FROM {files} GROUP BY ALL"
        return {(r["event_id"], r["late"]): r["n"] for r in _lake(data_dir, "events", sql)}

    ref_events, crash_events = events(ref_dir), events(crash_dir)
    out += _diff_maps(
        "lake events (event_id, late) -> rows", ref_events, crash_events, lambda a, b: a == b, 0
    )
    twice_sql = (
        "SELECT stream_partition, stream_offset, count(*) AS n FROM {files} "
        "GROUP BY ALL HAVING n > 1"
    )
    for name, data_dir in (("reference", ref_dir), ("crash run", crash_dir)):
        twice = _lake(data_dir, "events", twice_sql)
        if twice:
            out.append(f"lake events of the {name}: {len(twice)} stream records more than once")
            out += [
                f"  partition {r['stream_partition']} offset {r['stream_offset']}: {r['n']} rows"
                for r in twice[:SHOW]
            ]
    for name, lake_events, store in (
        ("reference", ref_events, ref_items),
        ("crash run", crash_events, crash_items),
    ):
        rows = sum(lake_events.values())
        counted = store.get(("PIPELINE", "TOTAL", "events"), 0.0)
        if rows != counted:
            out.append(f"{name}: {rows} lake event rows but PIPELINE/TOTAL events = {counted}")

    def versions(data_dir: Path) -> dict[tuple[str, int], int]:
        sql = "SELECT play_key, version, count(*) AS n FROM {files} GROUP BY ALL"
        return {(r["play_key"], r["version"]): r["n"] for r in _lake(data_dir, "plays", sql)}

    ref_versions, crash_versions = versions(ref_dir), versions(crash_dir)
    out += _diff_maps(
        "lake play versions (play_key, version) -> rows",
        ref_versions,
        crash_versions,
        lambda a, b: a == b,
        0,
    )
    newest_sql = (
        "SELECT * FROM {files} "
        "QUALIFY row_number() OVER (PARTITION BY play_key ORDER BY version DESC) = 1"
    )

    def newest(data_dir: Path) -> dict[str, dict[str, Any]]:
        return {row["play_key"]: row for row in _lake(data_dir, "plays", newest_sql)}

    out += _diff_rows("lake plays, newest row per play_key", newest(ref_dir), newest(crash_dir))

    def quarantined(path: Path) -> dict[str, int]:
        quarantine = QuarantineStore(path)
        try:
            return {"total": quarantine.count(None), **quarantine.counts_by_reason()}
        finally:
            quarantine.close()

    out += _diff_maps(
        "quarantine counts",
        quarantined(ref_s.quarantine_path),
        quarantined(crash_s.quarantine_path),
        lambda a, b: a == b,
        0,
    )
    return out


# --------------------------------------------------------------------------- the test


def test_sigkilled_processor_ends_with_the_reference_results(tmp_path: Path) -> None:
    deadline = time.monotonic() + GLOBAL_DEADLINE_S
    crash_dir, ref_dir, logs = tmp_path / "crash", tmp_path / "reference", tmp_path / "logs"
    logs.mkdir()
    total = build_stream(settings(crash_dir).stream_path)
    copy_sqlite(settings(crash_dir).stream_path, settings(ref_dir).stream_path)

    # Reference: one uninterrupted run, in this process.
    reference = open_processor(settings(ref_dir), OPTIONS)
    try:
        started = time.monotonic()
        stats = reference.process_available()
        reference_s = time.monotonic() - started
    finally:
        close_processor(reference)
    assert stats.read == total
    # The workload must exercise what a crash could break: duplicates and late events.
    assert stats.duplicates > 0, f"no duplicates in the workload: {stats}"
    assert stats.late > 0, f"no late events in the workload (try another seed): {stats}"
    records_per_s = total / reference_s

    rng = random.Random(KILL_SEED)
    store_path = settings(crash_dir).store_path
    workers: list[Worker] = []
    # Per kill: seconds after the first commit, records applied when it came.
    history: list[tuple[float, int]] = []
    try:
        offsets: dict[int, int] = {}
        workers.append(Worker(crash_dir, logs / "run-00.log"))
        for kill in range(KILLS):
            if time.monotonic() > deadline:
                pytest.fail(f"deadline passed after {kill} kills {context()}: {history}")
            applied = sum(offsets.values())
            worker = workers[-1]
            worker.go()
            # The next one imports meanwhile; it opens the files only after this kill.
            name = f"run-{kill + 1:02d}.log" if kill + 1 < KILLS else "final.log"
            workers.append(Worker(crash_dir, logs / name))
            worker.wait_first_commit(min(deadline, time.monotonic() + FIRST_COMMIT_DEADLINE_S))
            # Spread the kills so that the work left outlasts them at the reference pace
            # (each run also commits at least one batch before its kill).
            left_s = (total - applied - (KILLS - kill) * BATCH_SIZE) / records_per_s
            delay = rng.uniform(0.0, min(MAX_KILL_DELAY_S, max(0.0, left_s) / (KILLS - kill + 1)))
            time.sleep(delay)
            if worker.proc.poll() is not None:
                pytest.fail(
                    f"kill {kill + 1}: the worker ended (exit {worker.proc.returncode}) "
                    f"before it was killed; {applied} of {total} records were applied "
                    f"when it started {context()}: {history}\n{worker.tail()}"
                )
            worker.kill()
            previous, offsets = offsets, committed_offsets(store_path)
            history.append((round(delay, 3), sum(offsets.values())))
            where = f"kill {kill + 1} {context()}: {history}"
            for partition, offset in worker.reported().items():
                assert offsets.get(partition, 0) >= offset, (
                    f"partition {partition}: the worker reported offset {offset} committed "
                    f"but the store holds {offsets.get(partition)} after {where}"
                )
            for partition, offset in previous.items():
                assert offsets.get(partition, 0) >= offset, f"offsets went back at {where}"
            assert sum(offsets.values()) > applied, f"no progress at {where}"
            assert sum(offsets.values()) < total, f"nothing left to consume at {where}"

        final = workers[-1]
        final.go()
        try:
            code = final.proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pytest.fail(f"the final run did not finish in time {context()}:\n{final.tail()}")
        assert code == 0, f"final run exited with {code} {context()}:\n{final.tail()}"
        assert final.lines()[-1:] == [f"done {total}"], f"{context()}:\n{final.tail()}"
    finally:
        for worker in workers:
            if worker.proc.poll() is None:
                worker.kill()

    differences = compare_outputs(ref_dir, crash_dir)
    assert not differences, (
        f"after {KILLS} SIGKILLs the results differ from the uninterrupted run {context()}\n"
        f"kills (s after the first commit, records applied): {history}\n" + "\n".join(differences)
    )
