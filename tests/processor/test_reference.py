"""The processor against an independent reference implementation, on simulated traffic.

At least 200,000 simulated events (pauses, seeks, buffering, speed changes, background
playback, duplicates, out-of-order and late deliveries) go through the real collector
validation into a real SQLite stream, and the real processor turns them into the SQLite
store and the Parquet lake. ``reference.py`` (written from docs/metrics.md alone,
importing nothing from ``playpulse.processor``) recomputes the figures from the raw
stream records; the store and the lake must agree with it exactly for counts and within
1e-6 s for times. 38 hand-made "edge plays" (one per edge rule of docs/metrics.md,
with values worked out by hand) ride along in the same stream, because the simulator's
traffic never reaches most edges.

Compared: every CONTENT#<id> and TOTAL item per UTC day (all play measures), every
unique-listener set per content per day and per day, the commerce funnel per vendor and
for the shop per day, PIPELINE/TOTAL (events, duplicates, late), the lake's events
(exactly the deduplicated records, with their late flags) and the lake's current play
versions (each finished play's measures, and sums per content and start day).

The seed is ``PLAYPULSE_REFERENCE_SEED`` (default 0), so another workload is one
environment variable away.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from playpulse.aws.processor_handler import KinesisBatchHandler
from playpulse.aws.runner import EventSourceRunner, MappingOptions
from playpulse.config import Settings
from playpulse.events.codec import validate_event
from playpulse.lake.schema import SCHEMAS
from playpulse.lake.writer import LakeWriter
from playpulse.processor import state as pstate
from playpulse.processor.pipeline import Processor, ProcessorOptions
from playpulse.quarantine.store import QuarantineStore
from playpulse.query.engine import connect
from playpulse.sources import SimulationConfig, simulate
from playpulse.store.base import RealtimeStore
from playpulse.store.memory import MemoryStore
from playpulse.store.sqlite import SQLiteStore
from playpulse.stream.base import EventStream
from playpulse.stream.memory import MemoryStream
from playpulse.stream.sqlite import SQLiteStream
from playpulse.testing import load_module


def _load_reference() -> Any:
    # pytest runs with --import-mode=importlib: tests/ is not a package on sys.path.
    return load_module(Path(__file__).with_name("reference.py"), "playpulse_tests_reference")


reference = _load_reference()

SEED = int(os.environ.get("PLAYPULSE_REFERENCE_SEED", "0"))
MIN_EVENTS = 200_000
# Cut the simulation short: still over 200,000 events, a little faster, and the sessions
# cut off at the end may leave open plays (counted, not yet skipped, not in the lake).
MAX_EVENTS = 205_000
TIME_TOLERANCE = 1e-6
SHOW = 8  # differing keys shown in a failure message

pytestmark = pytest.mark.slow


# --------------------------------------------------------------------------- edge plays
#
# The simulator's plays are well behaved: it never pauses during a stall, never sends a
# heartbeat while paused, never reopens an ended play, never lands a play at exactly
# 30 s or 95 %... So a few hand-made plays, one per edge rule of docs/metrics.md, are
# delivered (shuffled, after the simulated traffic) into the same stream. Each has its own
# user, playback id and content id, so its CONTENT#edge-... items isolate it. ``expect``
# holds values computed by hand from the docs: the reference must reproduce them
# (a check of the reference itself), and the processor must agree with the reference.
# Steps are (event_type, seconds after the play's start[, extra fields]).

EDGE_START = datetime(2026, 3, 6, 4, 0, tzinfo=UTC)
NEXT_BELOW_950 = math.nextafter(950.0, 0.0)


@dataclass
class Edge:
    name: str
    steps: list[tuple[Any, ...]]
    expect: dict[str, Any]
    duration_s: float = 3600.0
    start: datetime | None = None  # default: EDGE_START + index hours
    playback_id: bool = True
    content: bool = True
    user: str | None = None  # default: edge-<name>


def _play(playing: float, **rest: Any) -> dict[str, Any]:
    """Hand expectations with the defaults of a plain play (no stalls, foreground)."""
    out = {
        "playing_time_s": playing,
        "watch_time_s": playing,
        "startup_time_s": 0.0,
        "rebuffer_count": 0,
        "rebuffer_time_s": 0.0,
        "is_stream": playing >= 30,
        "completed": False,
        "end_reason": "stopped",
    }
    out.update(rest)
    out.setdefault("skipped", out["end_reason"] is not None and not out["is_stream"])
    return out


EDGES = [
    Edge("stream-30s", [("play_start", 0), ("play_end", 30)], _play(30.0)),
    Edge("skip-29.999s", [("play_start", 0), ("play_end", 29.999)], _play(29.999)),
    Edge(  # listed resume first: the tiebreak, not the input order, decides
        "pause-resume-same-instant",
        [("play_start", 0), ("resume", 10), ("pause", 10), ("play_end", 40)],
        _play(40.0),
    ),
    Edge(  # a heartbeat at the instant of a pause reports the state before the pause
        "heartbeat-pause-same-instant",
        [("play_start", 0), ("pause", 10), ("heartbeat", 10), ("resume", 20), ("play_end", 30)],
        _play(20.0),
    ),
    Edge(
        "heartbeat-while-paused",
        [("play_start", 0), ("pause", 10), ("heartbeat", 20), ("play_end", 30)],
        _play(20.0),
    ),
    Edge(  # 0-10 playing, 10-12 buffering, 12-20 paused, 20-25 buffering, 25-30 playing
        "stall-through-pause",
        [
            ("play_start", 0),
            ("heartbeat", 5),
            ("buffer_start", 10),
            ("pause", 12),
            ("resume", 20),
            ("buffer_end", 25),
            ("play_end", 30),
        ],
        _play(15.0, watch_time_s=22.0, rebuffer_count=1, rebuffer_time_s=7.0),
    ),
    Edge(
        "stall-while-paused",
        [
            ("play_start", 0),
            ("heartbeat", 10),
            ("pause", 20),
            ("buffer_start", 25),
            ("buffer_end", 30),
            ("resume", 40),
            ("play_end", 50),
        ],
        _play(30.0),
    ),
    Edge(
        "startup-stall",
        [
            ("play_start", 0),
            ("buffer_start", 0),
            ("buffer_end", 2),
            ("heartbeat", 12),
            ("play_end", 32),
        ],
        _play(30.0, watch_time_s=32.0, startup_time_s=2.0),
    ),
    Edge(  # no playing evidence at all: every stall is startup
        "stall-without-evidence",
        [("play_start", 0), ("buffer_start", 1), ("play_end", 10)],
        _play(1.0, watch_time_s=10.0, startup_time_s=9.0),
    ),
    Edge(
        "heartbeat-ends-stall",
        [
            ("play_start", 0),
            ("heartbeat", 5),
            ("buffer_start", 10),
            ("heartbeat", 15),
            ("play_end", 25),
        ],
        _play(20.0, watch_time_s=25.0, rebuffer_count=1, rebuffer_time_s=5.0),
    ),
    Edge(
        "buffer-start-while-stopped",
        [
            ("play_start", 0),
            ("heartbeat", 35),
            ("play_end", 35),
            ("buffer_start", 40),
            ("resume", 50),
            ("play_end", 60),
        ],
        _play(45.0),
    ),
    Edge(
        "gap-exactly-30min",
        [("play_start", 0), ("heartbeat", 1800), ("play_end", 1800)],
        _play(1800.0),
    ),
    Edge(
        "gap-30min-plus-1us",
        [
            ("play_start", 0),
            ("heartbeat", 10),
            ("heartbeat", 1810.000001),
            ("play_end", 1820.000001),
        ],
        _play(20.0),
    ),
    Edge(  # after an idle gap only play_start/resume/heartbeat restart counting
        "gap-then-seek",
        [
            ("play_start", 0, {"position_s": 0}),
            ("heartbeat", 10, {"position_s": 10}),
            ("seek", 2410, {"from_position_s": 10, "position_s": 100}),
            ("play_end", 2420),
        ],
        _play(10.0),
    ),
    Edge(
        "speed-2x",
        [
            ("play_start", 0, {"playback_rate": 1.0}),
            ("speed_change", 10, {"playback_rate": 2.0}),
            ("heartbeat", 20),
            ("play_end", 20),
        ],
        _play(20.0, content_time_s=30.0),
    ),
    Edge(
        "background",
        [
            ("play_start", 0, {"foreground": True}),
            ("visibility_change", 10, {"foreground": False}),
            ("heartbeat", 30),
            ("play_end", 30),
        ],
        _play(30.0, playing_time_foreground_s=10.0, playing_time_background_s=20.0),
    ),
    Edge(
        "foreground-unknown",
        [("play_start", 0), ("play_end", 40)],
        _play(40.0, playing_time_foreground_s=40.0, playing_time_background_s=0.0),
    ),
    Edge(
        "completed-at-95pct",
        [
            ("play_start", 0, {"position_s": 0}),
            ("seek", 5, {"from_position_s": 5, "position_s": 950.0}),
            ("play_end", 5),
        ],
        _play(5.0, completed=True),
        duration_s=1000.0,
    ),
    Edge(
        "not-completed-below-95pct",
        [
            ("play_start", 0, {"position_s": 0}),
            ("seek", 5, {"from_position_s": 5, "position_s": NEXT_BELOW_950}),
            ("play_end", 5),
        ],
        _play(5.0, completed=False),
        duration_s=1000.0,
    ),
    Edge(  # extrapolated: 0 + 19 s x 1.0 = 19 = 95 % of 20
        "completed-by-extrapolation",
        [("play_start", 0, {"position_s": 0}), ("play_end", 19)],
        _play(19.0, completed=True),
        duration_s=20.0,
    ),
    Edge(
        "completed-by-reason",
        [("play_start", 0, {"position_s": 0}), ("play_end", 10, {"reason": "completed"})],
        _play(10.0, completed=True, end_reason="completed"),
    ),
    Edge(  # play_end, then heartbeats reopen it; it ends idle at the final watermark
        "reopened-after-end",
        [("play_start", 0), ("play_end", 10), ("heartbeat", 20), ("heartbeat", 40)],
        _play(30.0, end_reason="idle"),
    ),
    Edge("error-end", [("play_start", 0), ("error", 5)], _play(5.0, end_reason="error")),
    Edge(  # 10 s on the 6th, 20 s on the 7th; counted as a play on the 6th
        "across-midnight",
        [("play_start", 0), ("heartbeat", 30), ("play_end", 30)],
        _play(30.0),
        start=datetime(2026, 3, 6, 23, 59, 50, tzinfo=UTC),
    ),
    Edge(  # the bookmark and the pause share an id: the play keeps the earliest (bookmark)
        "reused-event-id",
        [
            ("play_start", 0),
            ("bookmark", 20, {"position_s": 20, "event_id": "edge-reused-id"}),
            ("pause", 30, {"event_id": "edge-reused-id"}),
            ("play_end", 60),
        ],
        _play(60.0),
    ),
    Edge(
        "no-playback-id",
        [("play_start", 0), ("heartbeat", 30), ("play_end", 30)],
        _play(30.0),
        playback_id=False,
    ),
    # Readings of rules the docs leave open (see reference.py); the hand values follow
    # the reference's reading.
    Edge(  # a second buffer_start during a stall continues it: one rebuffer
        "ambiguous-double-buffer-start",
        [
            ("play_start", 0),
            ("heartbeat", 5),
            ("buffer_start", 10),
            ("buffer_start", 12),
            ("buffer_end", 15),
            ("play_end", 20),
        ],
        _play(15.0, watch_time_s=20.0, rebuffer_count=1, rebuffer_time_s=5.0),
    ),
    Edge(  # a zero-length stall while playing is still a stall the listener "waited through"
        "ambiguous-zero-length-stall",
        [
            ("play_start", 0),
            ("heartbeat", 5),
            ("buffer_start", 10),
            ("buffer_end", 10),
            ("play_end", 20),
        ],
        _play(20.0, rebuffer_count=1),
    ),
    Edge(  # "at or before the first playing evidence" compares times: startup
        "ambiguous-stall-at-first-evidence",
        [
            ("play_start", 0),
            ("heartbeat", 5),
            ("buffer_start", 5),
            ("buffer_end", 7),
            ("play_end", 20),
        ],
        _play(18.0, watch_time_s=20.0, startup_time_s=2.0),
    ),
    Edge(  # an idle gap ends a stall (it is a stop): the resume plays, 0 s of rebuffering
        "ambiguous-idle-while-stalled",
        [
            ("play_start", 0),
            ("heartbeat", 5),
            ("buffer_start", 10),
            ("resume", 2410),
            ("heartbeat", 2420),
            ("play_end", 2430),
        ],
        _play(30.0, rebuffer_count=1),
    ),
    Edge(  # so does a play_end: the reopening resume plays
        "ambiguous-end-while-stalled",
        [
            ("play_start", 0),
            ("heartbeat", 5),
            ("buffer_start", 10),
            ("play_end", 15),
            ("resume", 20),
            ("play_end", 30),
        ],
        _play(20.0, watch_time_s=25.0, rebuffer_count=1, rebuffer_time_s=5.0),
    ),
    Edge(  # the play_start was lost (a full offline buffer): no event names the content
        "no-content",
        [("heartbeat", 0), ("heartbeat", 30), ("play_end", 30)],
        _play(30.0),
        content=False,
    ),
]
# Not in EDGES (placed by the fixture): "late" (delivered after its user's newer
# "recent-before-old" play, more than 7 days behind that user's watermark: lake only) and
# the TAIL plays, one minute after every simulated event (so "open" holds its partition's
# final watermark, OPEN_AT): "open" is still open, and so is a play of the same user whose
# last event is exactly 30 minutes before OPEN_AT; one 1 us earlier is idle-closed.
LATE_START = datetime(2026, 2, 20, 12, 0, tzinfo=UTC)
EDGES += [
    Edge("recent-before-old", [("play_start", 0), ("play_end", 30)], _play(30.0)),
    Edge(  # old history of a user with no newer events: not late (per-user watermark)
        "imported-history",
        [("play_start", 0), ("heartbeat", 40), ("play_end", 40)],
        _play(40.0),
        start=LATE_START,
    ),
]
LATE = Edge(
    "late",
    [("play_start", 0), ("heartbeat", 40), ("play_end", 40)],
    {},
    user="edge-recent-before-old",
)
OPEN_AT = timedelta(seconds=20)  # the open play's last event, from the tail's start
TAIL = [
    (
        Edge("open", [("play_start", 0), ("heartbeat", 20)], _play(20.0, end_reason=None)),
        timedelta(0),
    ),
    (
        Edge(
            "idle-boundary-exact",
            [("play_start", 0), ("heartbeat", 20)],
            _play(20.0, end_reason=None),
            user="edge-open",
        ),
        OPEN_AT - timedelta(minutes=30, seconds=20),
    ),
    (
        Edge(
            "idle-boundary-over",
            [("play_start", 0), ("heartbeat", 20)],
            _play(20.0, end_reason="idle"),
            user="edge-open",
        ),
        OPEN_AT - timedelta(minutes=30, seconds=20, microseconds=1),
    ),
]


def _edge_key(edge: Edge) -> str:
    return f"edge-{edge.name}" if edge.playback_id else f"edge-{edge.name}|edge-{edge.name}|mobile"


def _edge_payloads(edge: Edge, start: datetime) -> list[dict[str, Any]]:
    content = {"content_id": f"edge-{edge.name}", "content_type": "audiobook"}
    content["duration_s"] = edge.duration_s
    out = []
    for i, step in enumerate(edge.steps):
        kind, at_s = step[0], step[1]
        extra = dict(step[2]) if len(step) > 2 else {}
        e: dict[str, Any] = {
            "event_id": extra.pop("event_id", f"edge-{edge.name}-{i}"),
            "event_type": kind,
            "occurred_at": (start + timedelta(microseconds=round(at_s * 1e6))).isoformat(),
            "user_id": edge.user or f"edge-{edge.name}",
            "context": {"device_type": "mobile", "platform": "ios"},
        }
        if "foreground" in extra:
            e["context"]["foreground"] = extra.pop("foreground")
        if edge.playback_id:
            e["playback_id"] = f"edge-{edge.name}"
        if edge.content and (kind in ("play_start", "chapter_change") or not edge.playback_id):
            e["content"] = dict(content)
        if kind == "play_end":
            e["reason"] = extra.pop("reason", "stopped")
        e.update(extra)
        out.append(e)
    return out


def edge_workload(max_occurred: datetime, received_at: datetime, seed: int) -> list[dict[str, Any]]:
    """Every edge play's events (plus a resent copy of one play and an open play),
    shuffled: each play's summary must not depend on delivery order; then a late play."""
    events: list[dict[str, Any]] = []
    for i, edge in enumerate(EDGES):
        events += _edge_payloads(edge, edge.start or EDGE_START + timedelta(hours=i))
    resent = _edge_payloads(EDGES[0], EDGE_START)
    for e in resent:  # a retried send: same events, a later sent_at -> duplicates
        e["sent_at"] = (received_at - timedelta(seconds=1)).isoformat()
    events += resent
    tail_start = max_occurred + timedelta(minutes=1)
    for edge, offset in TAIL:
        events += _edge_payloads(edge, tail_start + offset)
    random.Random(seed).shuffle(events)
    # After the shuffle: the late play must come after its user's newer play.
    return events + _edge_payloads(LATE, LATE_START)


@dataclass
class Run:
    store: RealtimeStore
    lake: LakeWriter
    ref: Any  # reference.Reference
    appended: int
    days: list[str]


def group_member(
    index: int,
    root: Path,
    options: ProcessorOptions,
    open_stream: Callable[[], EventStream],
    stop: threading.Event,
    errors: list[BaseException],
) -> None:
    """One member of a processor group, a thread's target: it joins ``0.5 * index`` s
    after the first and processes the stream ``open_stream`` opens into the store, lake
    and quarantine in ``root`` with connections of its own until ``stop``. Member 0
    leaves after its tenth poll that read something and joins again 2 s later, so
    partitions change hands mid-stream (with open plays and sessions in them). An error
    goes to ``errors`` and sets ``stop``."""
    try:
        time.sleep(0.5 * index)
        for life in range(2 if index == 0 else 1):
            stream = open_stream()
            store = SQLiteStore(root / "store.db")
            quarantine = QuarantineStore(root / "quarantine.db")
            member_options = dataclasses.replace(
                options, member=f"member-{index}", session_timeout=timedelta(seconds=3)
            )
            processor = Processor(
                stream, store, LakeWriter(root / "lake", SCHEMAS), quarantine, member_options
            )
            try:
                polls = 0
                while not stop.is_set():
                    stats = processor.process_available(max_batches=1)
                    polls += 1 if stats.read else 0
                    if life == 0 and index == 0 and polls >= 10:
                        break  # leave; come back after the others took over
                    if not stats.read:
                        stop.wait(0.02)
            finally:
                processor.close()
                stream.close()
                store.close()
                quarantine.close()
            if life == 0:
                stop.wait(2.0)
    except BaseException as exc:  # reported by the test
        errors.append(exc)
        stop.set()


def process_as_group(root: Path, processors: int, options: ProcessorOptions) -> None:
    """Process the stream in ``root`` with ``processors`` members of one consumer group
    (:func:`group_member`) until the store has applied everything."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def open_stream() -> EventStream:
        return SQLiteStream(root / "stream.db", num_partitions=4)

    threads = [
        threading.Thread(
            target=group_member,
            args=(i, root, options, open_stream, stop, errors),
            name=f"member-{i}",
        )
        for i in range(processors)
    ]
    for thread in threads:
        thread.start()
    stream = SQLiteStream(root / "stream.db", num_partitions=4)
    store = SQLiteStore(root / "store.db")
    try:
        ends = {info.partition: info.end_offset for info in stream.partitions()}
        deadline = time.monotonic() + 600
        while not stop.is_set() and store.offsets(options.consumer) != ends:
            assert time.monotonic() < deadline, "the group did not finish in 10 minutes"
            time.sleep(0.05)
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
        stream.close()
        store.close()
    if errors:
        raise errors[0]


@functools.cache
def workload() -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]:
    """The simulated records (actor, payload) and the edge plays' records, validated
    once for every variant of the module (about 5 s each time)."""
    records: list[tuple[str, bytes]] = []
    max_occurred = last_received = datetime.min.replace(tzinfo=UTC)
    for simulated in simulate(
        SimulationConfig(seed=SEED, max_events=MAX_EVENTS)
    ):  # default fault rates
        accepted = validate_event(json.dumps(simulated.payload), simulated.received_at)
        max_occurred = max(max_occurred, accepted.event.occurred_at)
        last_received = simulated.received_at
        records.append((accepted.event.actor_id, accepted.payload))
    # The tail plays must hold their partition's newest event time.
    assert max_occurred > EDGE_START + timedelta(hours=len(EDGES) + 1)
    received = max(last_received, max_occurred) + timedelta(minutes=5)
    edge = [
        validate_event(json.dumps(e), received) for e in edge_workload(max_occurred, received, SEED)
    ]
    return records, [(a.event.actor_id, a.payload) for a in edge]


@pytest.fixture(
    scope="module",
    params=[(1, "sqlite"), (2, "sqlite"), (3, "sqlite"), (1, "memory"), (1, "lambda")],
    ids=lambda p: f"{p[0]}-processors-{p[1]}",
)
def run(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Run]:
    """The workload through 1, 2 or 3 processors on SQLite files, one on the memory
    stream and store, or the Lambda processor handler driven by the event source
    mapping's runner in Lambda-sized batches (the lake is Parquet files in every case)."""
    processors: int
    backend: str
    processors, backend = request.param
    root = tmp_path_factory.mktemp(f"reference-seed{SEED}-{processors}-{backend}")
    started = time.monotonic()
    stream: EventStream
    store: RealtimeStore
    if backend == "sqlite":
        stream = SQLiteStream(root / "stream.db", num_partitions=4)
        store = SQLiteStore(root / "store.db")
    else:
        stream = MemoryStream(num_partitions=4)
        store = MemoryStore()
    records, edge_records = workload()
    for i in range(0, len(records), 500):  # like the collector: one append per request
        stream.append(records[i : i + 500])
    appended = len(records)
    assert appended >= MIN_EVENTS
    for i in range(0, len(edge_records), 50):
        stream.append(edge_records[i : i + 50])

    lake = LakeWriter(root / "lake", SCHEMAS)
    quarantine = QuarantineStore(root / "quarantine.db")
    if backend == "lambda":
        handler = KinesisBatchHandler(stream, store, lake, quarantine)
        EventSourceRunner(stream, handler, MappingOptions(batch_size=500)).run_once()
    elif processors == 1:
        processor = Processor(stream, store, lake, quarantine, ProcessorOptions(batch_size=4_000))
        processor.process_available()
    else:
        # Smaller batches: more of them, so partitions change hands mid-stream.
        process_as_group(root, processors, ProcessorOptions(batch_size=1_000))
    processed_at = time.monotonic()

    ref = reference.compute_once(stream)  # the same for every variant's stream
    first, last = min(ref.days), max(ref.days)
    days = []
    day = date.fromisoformat(first) - timedelta(days=1)
    while day <= date.fromisoformat(last) + timedelta(days=1):
        days.append(day.isoformat())
        day += timedelta(days=1)
    print(
        f"seed {SEED}: {appended} events; stream + processor {processed_at - started:.1f} s, "
        f"reference {time.monotonic() - processed_at:.1f} s; {len(ref.plays)} plays, "
        f"{ref.duplicates} duplicates, {ref.late} late"
    )
    yield Run(store, lake, ref, appended, days)
    store.close()
    quarantine.close()
    stream.close()


# --------------------------------------------------------------------------- helpers


def _is_count(name: str) -> bool:
    return name in reference.COUNT_MEASURES or not name.endswith("_s")


def _same(name: str, expected: float, actual: float) -> bool:
    if _is_count(name):
        return expected == actual
    return math.isclose(expected, actual, rel_tol=0.0, abs_tol=TIME_TOLERANCE)


def _diff_items(
    expected: Mapping[Any, Mapping[str, float]],
    actual: Mapping[Any, Mapping[str, float]],
    names: tuple[str, ...] | None = None,
) -> list[str]:
    """Differences between two item maps; an absent attribute counts as 0."""
    out = []
    for key in sorted(expected.keys() | actual.keys(), key=str):
        exp, act = expected.get(key, {}), actual.get(key, {})
        for name in names or sorted(exp.keys() | act.keys()):
            e, a = exp.get(name, 0), act.get(name, 0)
            if not _same(name, e, a):
                out.append(f"{key} {name}: reference {e!r} != processor {a!r}")
    return out


def _report(what: str, diffs: list[str], compared: int) -> str:
    head = "\n  ".join(diffs[:SHOW])
    return f"{len(diffs)} differences in {what} ({compared} compared); first:\n  {head}"


def _lake(run: Run, table: str, columns: str) -> list[dict[str, Any]]:
    files = [str(p) for p in run.lake.live_files(table)]
    if not files:
        return []
    rel = duckdb.sql(
        f"SELECT {columns} FROM read_parquet({files}, hive_partitioning = false, filename = true)"
    )
    return list(rel.to_arrow_table().to_pylist())


def _nonzero(items: Mapping[Any, Mapping[str, float]]) -> dict[Any, dict[str, float]]:
    return {k: dict(v) for k, v in items.items() if any(x != 0 for x in v.values())}


# --------------------------------------------------------------------------- tests


def test_the_workload_has_every_fault_and_feature(run):
    """Guard the test itself: the simulated traffic exercises what it should."""
    ref = run.ref
    assert run.appended >= MIN_EVENTS
    assert ref.duplicates > 1_000
    assert ref.late > 50
    plays = ref.plays.values()
    assert sum(p.rebuffer_count for p in plays) > 100
    assert sum(p.startup_us > 0 for p in plays) > 100
    assert sum(p.background_us > 0 for p in plays) > 100
    assert sum(p.content_time_s > p.playing_us / 1e6 + 1 for p in plays) > 50  # speed > 1
    assert sum(len(p.by_day) > 1 for p in plays) > 10  # plays across midnight UTC
    assert {p.end_reason for p in plays} >= {"completed", "stopped", "next", "error", "idle"}
    # Open plays: the cut-off simulation leaves a few (most go idle before the final
    # watermark, which skewed device clocks push hours ahead), the tail edge plays two.
    assert sum(not p.closed for p in plays) >= 3


def test_pipeline_totals_match(run):
    actual = run.store.item("PIPELINE", "TOTAL")
    expected = {"events": run.ref.events, "duplicates": run.ref.duplicates, "late": run.ref.late}
    diffs = _diff_items({"PIPELINE/TOTAL": expected}, {"PIPELINE/TOTAL": actual}, tuple(expected))
    assert not diffs, _report("pipeline totals", diffs, 3)


def test_every_content_day_and_total_day_item_matches(run):
    """CONTENT#<id> / DAY#<date> for every title and day, and TOTAL / DAY#<date>."""
    expected = _nonzero(
        {k: v for k, v in run.ref.items.items() if k[0] == "TOTAL" or k[0].startswith("CONTENT#")}
    )
    actual: dict[tuple[str, str], dict[str, float]] = {}
    for day in run.days:
        sk = f"DAY#{day}"
        for pk, attributes in run.store.scan("CONTENT#", sk):
            actual[(pk, sk)] = attributes
        total = run.store.item("TOTAL", sk)
        if total:
            actual[("TOTAL", sk)] = total
    actual = _nonzero(
        {k: {n: v.get(n, 0) for n in reference.PLAY_MEASURES} for k, v in actual.items()}
    )
    assert sum(1 for k in expected if k[0] != "TOTAL") > 2_000  # really every item
    diffs = _diff_items(expected, actual, reference.PLAY_MEASURES)
    assert not diffs, _report("CONTENT/TOTAL day items", diffs, len(expected | actual))


def test_unique_listeners_match(run):
    expected = {key: len(members) for key, members in run.ref.sets.items()}
    keys = set(expected)
    # Also every (content, day) the store has an item for, and every day's total, so that
    # a set the reference does not expect is caught too.
    for day in run.days:
        keys.add(f"LISTENERS#TOTAL#{day}")
        for pk, _ in run.store.scan("CONTENT#", f"DAY#{day}"):
            keys.add(f"LISTENERS#{pk}#{day}")
    diffs = []
    for key in sorted(keys):
        e, a = expected.get(key, 0), run.store.count_members(key)
        if e != a:
            diffs.append(f"{key}: reference {e} != processor {a}")
    assert not diffs, _report("unique listener sets", diffs, len(keys))


def test_commerce_funnel_per_vendor_and_shop_matches(run):
    expected = _nonzero(
        {k: v for k, v in run.ref.items.items() if k[0] == "SHOP" or k[0].startswith("VENDOR#")}
    )
    actual: dict[tuple[str, str], dict[str, float]] = {}
    for day in run.days:
        sk = f"METRICS#{day}"
        for pk, attributes in run.store.scan("VENDOR#", sk):
            actual[(pk, sk)] = attributes
        shop = run.store.item("SHOP", sk)
        if shop:
            actual[("SHOP", sk)] = shop
    assert len(expected) > 50
    diffs = _diff_items(expected, _nonzero(actual))
    assert not diffs, _report("commerce items", diffs, len(expected | actual))


def test_lake_events_are_exactly_the_deduplicated_events(run):
    rows = _lake(run, "events", "event_id, late, stream_partition, stream_offset")
    actual = {(r["stream_partition"], r["stream_offset"]): (r["event_id"], r["late"]) for r in rows}
    expected = run.ref.kept
    assert len(rows) == len(actual), "an event is in the lake twice"
    diffs = [
        f"partition/offset {key}: reference {expected.get(key)} != lake {actual.get(key)}"
        for key in sorted(expected.keys() | actual.keys())
        if expected.get(key) != actual.get(key)
    ]
    assert not diffs, _report("lake events", diffs, len(expected | actual))
    assert sum(late for _, late in actual.values()) == run.ref.late


PLAY_COLUMNS = (
    "play_key, version, content_id, epoch_us(started_at) AS started_at_us, end_reason, "
    "playing_time_s, watch_time_s, content_time_s, playing_time_foreground_s, "
    "playing_time_background_s, startup_time_s, rebuffer_count, rebuffer_time_s, "
    "completed, skipped, is_stream, event_count, event_date"
)


def _current_plays(run: Run) -> dict[str, dict[str, Any]]:
    current: dict[str, dict[str, Any]] = {}
    for row in _lake(run, "plays", PLAY_COLUMNS):
        old = current.get(row["play_key"])
        if old is None or row["version"] > old["version"]:
            current[row["play_key"]] = row
    return current


def test_lake_plays_match_every_finished_play(run):
    """The plays table holds the plays the processor considers finished, so only plays the
    reference also sees as closed (end reason, or idle at the final watermark) are
    comparable; every one of them must be there with the same measures, and no play the
    reference sees as open may be there as finished."""
    lake = _current_plays(run)
    finished = {k: p for k, p in run.ref.plays.items() if p.closed}
    assert len(finished) > 0.9 * len(run.ref.plays)
    expected = {k: p.lake_view() for k, p in finished.items()}
    names = tuple(next(iter(expected.values())))
    actual = {k: {n: row[n] for n in names} for k, row in lake.items()}
    diffs = []
    for key in sorted(expected.keys() | actual.keys()):
        exp, act = expected.get(key), actual.get(key)
        if exp is None or act is None:
            diffs.append(f"play {key}: reference {exp} != lake {act}")
            continue
        for name in names:
            e, a = exp[name], act[name]
            ok = _same(name, e, a) if isinstance(e, float) and not isinstance(e, bool) else e == a
            if not ok:
                diffs.append(f"play {key} {name}: reference {e!r} != lake {a!r}")
    assert not diffs, _report("lake plays", diffs, len(expected.keys() | actual.keys()))


def test_lake_playing_time_per_content_and_start_day_matches(run):
    """Per (content, start day) sums over the current versions of finished plays."""
    expected: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for p in run.ref.plays.values():
        if p.closed:
            item = expected[(str(p.content_id), reference.utc_day(p.started_us))]
            item["plays"] += 1
            item["playing_time_s"] += p.playing_us / 1e6
            item["watch_time_s"] += p.watch_us / 1e6
    actual: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for row in _current_plays(run).values():
        item = actual[(str(row["content_id"]), row["event_date"])]
        item["plays"] += 1
        item["playing_time_s"] += row["playing_time_s"]
        item["watch_time_s"] += row["watch_time_s"]
    diffs = _diff_items(expected, actual)
    assert not diffs, _report("lake plays per content and day", diffs, len(expected | actual))


def test_sessions_view_matches_every_reference_session(run):
    """The ``sessions`` view (closed sessions from the lake, open ones from the store)
    holds exactly the reference's sessions: late events that merged or extended closed
    sessions left no stale version behind."""
    con = connect(Settings(data_dir=run.lake.root.parent))
    try:
        rows = con.execute(
            "SELECT user_id, epoch_us(started_at), epoch_us(ended_at), events FROM sessions"
        ).fetchall()
    finally:
        con.close()
    if not isinstance(run.store, SQLiteStore):
        # The view reads open sessions from the data dir's store: the memory store's
        # come through the same reader.
        rows += pstate.open_sessions(run.store)
    actual = {(user, start): (end, n) for user, start, end, n in rows}
    assert len(actual) == len(rows), "a session appears twice"
    assert len(run.ref.sessions) > 1_000
    diffs = [
        f"session {key}: reference {run.ref.sessions.get(key)} != view {actual.get(key)}"
        for key in sorted(run.ref.sessions.keys() | actual.keys())
        if run.ref.sessions.get(key) != actual.get(key)
    ]
    assert not diffs, _report("sessions", diffs, len(run.ref.sessions.keys() | actual.keys()))


def test_the_reference_reproduces_the_hand_computed_edge_plays(run):
    """A check of the reference itself against values worked out by hand from the docs."""
    diffs = []
    for edge in [*EDGES, *(edge for edge, _ in TAIL)]:
        play = run.ref.plays.get(_edge_key(edge))
        if play is None:
            diffs.append(f"{edge.name}: no play")
            continue
        got = play.lake_view()
        for name, want in edge.expect.items():
            ok = _same(name, want, got[name]) if isinstance(want, float) else want == got[name]
            if not ok:
                diffs.append(f"{edge.name} {name}: hand {want!r} != reference {got[name]!r}")
    assert "edge-late" not in run.ref.plays
    midnight = run.ref.plays["edge-across-midnight"]
    assert {d: v[0] for d, v in midnight.by_day.items()} == {
        "2026-03-06": 10_000_000,
        "2026-03-07": 20_000_000,
    }
    assert not diffs, _report("hand-computed edge plays", diffs, len(EDGES) + len(TAIL))


def test_edge_plays_agree_with_the_reference(run):
    """The processor on every edge play: its lake row and its CONTENT#edge-... items.

    (Also covered by the tests above; repeated here so that an edge-rule disagreement is
    reported by rule name.)"""
    lake = _current_plays(run)
    diffs = []
    for edge in [*EDGES, *(edge for edge, _ in TAIL), LATE]:
        key = _edge_key(edge)
        play = run.ref.plays.get(key)
        row = lake.get(key)
        if play is not None and play.closed:
            if row is None:
                diffs.append(f"{edge.name}: finished for the reference, not in the lake")
            else:
                for name, e in play.lake_view().items():
                    a = row[name]
                    ok = _same(name, e, a) if isinstance(e, float) else e == a
                    if not ok:
                        diffs.append(f"{edge.name} {name}: reference {e!r} != lake {a!r}")
        elif row is not None:
            diffs.append(
                f"{edge.name}: in the lake as finished ({row['end_reason']}), reference {play}"
            )
        pk = f"CONTENT#edge-{edge.name}"
        expected = {sk: v for (p, sk), v in run.ref.items.items() if p == pk}
        actual = dict(run.store.items(pk, "DAY#"))
        diffs += [
            f"{edge.name} {d}"
            for d in _diff_items(_nonzero(expected), _nonzero(actual), reference.PLAY_MEASURES)
        ]
    assert not diffs, _report("edge plays", diffs, len(EDGES) + len(TAIL) + 1)


def _stale_rows(run: Run) -> int:
    """Rows of the plays and sessions tables no reader uses (older versions, tombstones)
    beside a newer version in the same partition folder: what compaction drops. (A play
    whose start moved to another day by a late event has versions in two folders; the
    older stays until its month is compacted, and readers take the newest.)"""
    folder = "parse_dirpath(filename) AS folder"
    plays = _lake(run, "plays", f"play_key AS k, version, {folder}")
    sessions = _lake(
        run, "sessions", f"user_id || epoch_us(started_at) AS k, version, deleted, {folder}"
    )
    stale = 0
    for rows in (plays, sessions):
        newest: dict[tuple[str, str], int] = {}
        for row in rows:
            key = (row["folder"], row["k"])
            newest[key] = max(newest.get(key, row["version"]), row["version"])
        stale += sum(
            1 for r in rows if r["version"] < newest[(r["folder"], r["k"])] or r.get("deleted")
        )
    return stale


def test_compaction_leaves_every_check_above_true(run):
    """Last (it changes the lake): compacting every table drops the rows no reader uses
    and leaves the lake's plays, sessions and events exactly as the checks above saw
    them."""
    assert _stale_rows(run) > 0  # late events rewrote plays and sessions
    committed = run.store.offsets(ProcessorOptions().consumer)
    merged = sum(run.lake.compact(table, committed) for table in SCHEMAS)
    assert merged > 0
    assert _stale_rows(run) == 0
    test_lake_events_are_exactly_the_deduplicated_events(run)
    test_lake_plays_match_every_finished_play(run)
    test_lake_playing_time_per_content_and_start_day_matches(run)
    test_sessions_view_matches_every_reference_session(run)
    test_edge_plays_agree_with_the_reference(run)
