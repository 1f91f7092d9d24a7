"""Imports are backfills, and ``playpulse reprocess`` (issue #11, Deliver 1):
:mod:`playpulse.processor.backfill` on real data dirs (SQLite stream and store, Parquet
lake), through :func:`~playpulse.sources.importers.import_paths`,
:func:`~playpulse.service.ensure_processed` and the ``playpulse`` command, as a user
runs them.

Figures are compared through every catalog query but ``live`` (which reads the clock),
over one fixed window, and through the real-time store's items and sets.

- A backfill that lands before already-imported data is merged with it (sessions across
  the boundary), as if imported at once.
- ``playpulse reprocess`` changes nothing when nothing changed: every catalog answer and
  every store item stay, live late events stay late, dropped duplicates stay counted,
  and live processing afterwards goes on as if it had not run.
- ``reprocess --from --to`` replaces only the plays that started in the window.
- Crash safety: pending backfills and the reprocessing marker are picked up by the
  next processor start, import or reprocess.
- A running processor applies imports and reprocess requests.
- :func:`~playpulse.lake.schema.payloads` gives back the events the lake holds.
- History (received more than the allowed lateness after it started) is in the lake's
  plays, not in the live counters; an offline sync within it is in both.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from playpulse.config import Settings
from playpulse.events.codec import decode_stored, validate_event
from playpulse.events.model import EventBase
from playpulse.lake.schema import SCHEMAS, events_table, payloads
from playpulse.lake.writer import LakeWriter
from playpulse.processor.backfill import (
    backfill_dir,
    pending_backfills,
    reprocess,
    reprocess_needed,
    reprocess_version,
    request_reprocess,
    stage_backfill,
)
from playpulse.query.catalog import QueryParams, run_query
from playpulse.query.engine import connect, events_connection
from playpulse.service import (
    ProcessorThread,
    apply_import,
    ensure_processed,
    open_processor,
    processor_lock,
    reprocess_data_dir,
)
from playpulse.sources.importers import import_paths, plan_import
from playpulse.sources.simulator import SimulationConfig, simulate
from playpulse.stream.factory import open_stream
from playpulse.testing import assert_same_answers, catalog_answers, load_module, run_cli

codec_properties = load_module(
    Path(__file__).parents[1] / "events" / "test_codec_properties.py", "codec_properties"
)

#: A window holding all the data of these tests.
WINDOW = QueryParams(
    start=datetime(2000, 1, 1, tzinfo=UTC), end=datetime(2030, 1, 1, tzinfo=UTC), limit=10_000
)
USER = "ana"


@pytest.fixture
def cfg(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


# -- inputs ----------------------------------------------------------------------------


def track(start: str, minutes: float, name: str, artist: str = "Artist") -> dict[str, Any]:
    """A Spotify extended history row (2024+ keys) of a track played ``minutes`` from
    ``start`` (ISO UTC); the row's ``ts`` is when it ended, as in real exports."""
    begun = datetime.fromisoformat(start)
    played_ms = round(minutes * 60_000)
    end = begun + timedelta(milliseconds=played_ms)
    return {
        "ts": end.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "platform": "ios",
        "ms_played": played_ms,
        "conn_country": "DE",
        "master_metadata_track_name": name,
        "master_metadata_album_artist_name": artist,
        "master_metadata_album_album_name": "Album",
        "spotify_track_uri": f"spotify:track:{artist}-{name}",
        "episode_name": None,
        "episode_show_name": None,
        "spotify_episode_uri": None,
        "audiobook_title": None,
        "audiobook_uri": None,
        "audiobook_chapter_uri": None,
        "audiobook_chapter_title": None,
        "reason_start": "clickrow",
        "reason_end": "trackdone",
        "shuffle": False,
        "skipped": False,
        "offline": False,
        "offline_timestamp": None,
        "incognito_mode": False,
    }


def export(path: Path, rows: list[dict[str, Any]]) -> Path:
    """``rows`` as a Spotify extended history file at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


def history(folder: Path) -> Path:
    """Some months of 2024 of one listener: plays on three days of January, February and
    March, two sessions a day (one across midnight UTC on February 29)."""
    rows = []
    for day in ("2024-01-10", "2024-01-31", "2024-02-14", "2024-02-29", "2024-03-20"):
        for n, hour in enumerate(("08", "08", "21", "23")):
            minute = 30 * (n % 2)
            rows.append(track(f"{day}T{hour}:{minute:02d}:00+00:00", 4.5 + n, f"song-{n}"))
    rows.append(track("2024-02-29T23:58:00+00:00", 5, "midnight"))
    return export(folder / "Streaming_History_Audio_2024.json", rows)


def live_events(seed: int = 3, events: int = 3_000) -> list[tuple[str, bytes]]:
    """Simulated live traffic (March 2026) as the collector stores it: validated, as
    (stream key, payload), in receive order. A tenth of the events come from offline
    sessions synced late (a third of those more than 7 days late) and some are
    delivered twice, so the processor drops duplicates and marks events late."""
    config = SimulationConfig(
        seed=seed,
        users=30,
        duration=timedelta(days=10),
        late_rate=0.05,
        very_late_rate=0.02,
        max_events=events,
    )
    out = []
    for sent in simulate(config):
        accepted = validate_event(json.dumps(sent.payload), sent.received_at)
        out.append((accepted.event.actor_id, accepted.payload))
    return out


def append(settings: Settings, records: list[tuple[str, bytes]]) -> None:
    """Append ``records`` to the data dir's stream, as the collector does."""
    stream = open_stream(settings)
    try:
        stream.append(records)
    finally:
        stream.close()


# -- what the data dir answers ---------------------------------------------------------


def answers(settings: Settings) -> dict[str, list[dict[str, Any]]]:
    """Every catalog query's rows (but ``live``'s) over :data:`WINDOW`."""
    return catalog_answers(settings, WINDOW)


@contextlib.contextmanager
def store_db(settings: Settings) -> Iterator[sqlite3.Connection]:
    with contextlib.closing(sqlite3.connect(f"file:{settings.store_path}?mode=ro", uri=True)) as db:
        yield db


def store_items(settings: Settings) -> dict[tuple[str, str, str], float]:
    """Every item attribute of the real-time store: ``(pk, sk, attr) -> value``."""
    with store_db(settings) as db:
        rows = db.execute("SELECT pk, sk, attr, value FROM items").fetchall()
    return {(pk, sk, attr): value for pk, sk, attr, value in rows}


def store_members(settings: Settings) -> set[tuple[str, str]]:
    """Every member of every set of the real-time store: ``(set key, member)``."""
    with store_db(settings) as db:
        return set(db.execute("SELECT set_key, member FROM members").fetchall())


def assert_same_store(settings: Settings, items: dict[Any, float], members: set[Any]) -> None:
    """The store holds ``items`` (values within 1e-9 relative, sums of floats may be
    added in another order) and ``members``."""
    got = store_items(settings)
    assert set(got) == set(items)
    differ = {k: (got[k], v) for k, v in items.items() if got[k] != pytest.approx(v, rel=1e-9)}
    assert not differ
    assert store_members(settings) == members


def status(settings: Settings) -> dict[str, Any]:
    """``playpulse status --format json``."""
    done = run_cli("status", "--format", "json", "--data-dir", str(settings.data_dir))
    assert done.returncode == 0, done.stderr
    info: dict[str, Any] = json.loads(done.stdout)
    return info


def reprocess_cli(settings: Settings, *window: str) -> str:
    """``playpulse reprocess [--from X --to Y]``; its output."""
    done = run_cli("reprocess", *window, "--data-dir", str(settings.data_dir))
    assert done.returncode == 0, done.stderr
    return done.stdout


def sql(settings: Settings, query: str) -> list[tuple[Any, ...]]:
    con = connect(settings)
    try:
        return con.execute(query).fetchall()
    finally:
        con.close()


# -- a backfill before imported data ---------------------------------------------------


def test_a_backfill_before_imported_data_merges_sessions_across_the_boundary(
    tmp_path: Path,
) -> None:
    """Plays at 10:00 and 10:40 (5 minutes each) are two sessions (a 35-minute gap, more
    than the 30-minute session gap); a play at 10:20 imported afterwards joins them into
    one session of three plays, as importing the three at once does."""
    early_late = [
        track("2024-03-05T10:00:00+00:00", 5, "a"),
        track("2024-03-05T10:40:00+00:00", 5, "c"),
    ]
    between = [track("2024-03-05T10:20:00+00:00", 5, "b")]
    apart = Settings(data_dir=tmp_path / "apart")
    import_paths([export(tmp_path / "1" / "a.json", early_late)], apart, user_id=USER)
    (sessions,) = run_query("user_sessions", WINDOW, apart).to_pylist()
    assert (sessions["sessions"], sessions["listening_s"]) == (2, 600)
    result = import_paths([export(tmp_path / "2" / "b.json", between)], apart, user_id=USER)
    assert (result.events_new, result.events_known) == (2, 0)
    (sessions,) = run_query("user_sessions", WINDOW, apart).to_pylist()
    assert sessions == {
        "user_id": USER,
        "sessions": 1,
        "avg_session_s": 45 * 60,
        "listening_s": 900,
    }
    assert sql(apart, "SELECT started_at, ended_at, events FROM sessions") == [
        (datetime(2024, 3, 5, 10, tzinfo=UTC), datetime(2024, 3, 5, 10, 45, tzinfo=UTC), 6)
    ]

    at_once = Settings(data_dir=tmp_path / "at-once")
    import_paths([export(tmp_path / "3" / "all.json", early_late + between)], at_once, user_id=USER)
    assert_same_answers(answers(apart), answers(at_once))


def test_a_backfill_between_live_plays_merges_with_them(tmp_path: Path, cfg: Settings) -> None:
    """Live plays (sent to the stream as they happen) at 10:00 and 10:40, then an import
    of the 10:20 play (a device's history): one session, as when the three are
    imported."""
    records = []
    for start, name in (("10:00", "a"), ("10:40", "c")):
        begun = datetime.fromisoformat(f"2024-03-05T{start}:00+00:00")
        for kind, at, extra in (
            ("play_start", begun, {"content": {"content_id": name, "content_type": "track"}}),
            ("play_end", begun + timedelta(minutes=5), {"reason": "completed"}),
        ):
            raw = {
                "event_type": kind,
                "event_id": f"{name}-{kind}",
                "occurred_at": at.isoformat(),
                "user_id": USER,
                "playback_id": f"live-{name}",
                "position_s": 300.0 if kind == "play_end" else 0.0,
                **extra,
            }
            accepted = validate_event(json.dumps(raw), at)  # sent as it happened
            records.append((accepted.event.actor_id, accepted.payload))
    append(cfg, records)
    ensure_processed(cfg)
    assert sql(cfg, "SELECT count(*) FROM sessions") == [(2,)]
    import_paths(
        [export(tmp_path / "b.json", [track("2024-03-05T10:20:00+00:00", 5, "b")])],
        cfg,
        user_id=USER,
    )
    assert sql(cfg, "SELECT started_at, ended_at FROM sessions") == [
        (datetime(2024, 3, 5, 10, tzinfo=UTC), datetime(2024, 3, 5, 10, 45, tzinfo=UTC))
    ]
    (overview,) = run_query("overview", WINDOW, cfg).to_pylist()
    assert (overview["plays"], overview["sessions"], overview["listening_s"]) == (3, 1, 900)


# -- playpulse reprocess ---------------------------------------------------------------


@pytest.fixture
def mixed(tmp_path: Path, cfg: Settings) -> Settings:
    """A data dir with imported history (2024) and processed live traffic (2026), with
    late events and dropped duplicates."""
    import_paths([history(tmp_path / "export")], cfg, user_id=USER)
    append(cfg, live_events())
    stats = ensure_processed(cfg)
    assert stats is not None
    assert stats.late > 0
    assert stats.duplicates > 0
    return cfg


def test_reprocess_changes_nothing_when_nothing_changed(mixed: Settings) -> None:
    """``playpulse reprocess`` equals processing from scratch, which is what the data
    dir holds: every catalog answer, every store item and set member stay; so does a
    reprocess of some days."""
    before = answers(mixed)
    items, members = store_items(mixed), store_members(mixed)
    assert any(pk.startswith("USER#") for pk, _, _ in items)
    assert any(pk == "TOTAL" for pk, _, _ in items)
    assert before["overview"][0]["plays"] > 100

    out = reprocess_cli(mixed)
    assert out.startswith("recomputed from ")
    assert_same_answers(answers(mixed), before)
    assert_same_store(mixed, items, members)
    assert not reprocess_needed(mixed)
    # A window across live days (and the plays of the other days rewritten as they are).
    reprocess_cli(mixed, "--from", "2026-03-07", "--to", "2026-03-09")
    assert_same_answers(answers(mixed), before)
    assert_same_store(mixed, items, members)


def test_a_reprocess_spread_over_processes_gives_the_same_figures(mixed: Settings) -> None:
    """Whole stream partitions per process (the live traffic's 30 users fill several):
    the same answers, store items and members as in one process."""
    reprocess(mixed, workers=1)
    before = answers(mixed)
    items, members = store_items(mixed), store_members(mixed)
    assert len({pk for pk, _, _ in items if pk.startswith("USER#")}) > 2
    reprocess(mixed, workers=2)
    assert_same_answers(answers(mixed), before)
    assert_same_store(mixed, items, members)


def test_reprocess_keeps_live_late_events_late_and_duplicates_counted(mixed: Settings) -> None:
    before = status(mixed)
    assert before["late_events"] > 0
    assert before["duplicates_dropped"] > 0
    late = sql(mixed, "SELECT event_id FROM events WHERE late ORDER BY event_id")
    assert len(late) == before["late_events"]

    out = reprocess_cli(mixed)
    assert f", {before['late_events']:,} late events left late" in out
    after = status(mixed)
    for key in ("late_events", "duplicates_dropped", "events_in_lake"):
        assert after[key] == before[key], key
    assert sql(mixed, "SELECT event_id FROM events WHERE late ORDER BY event_id") == late


def test_live_processing_after_a_reprocess_goes_on_as_without_it(tmp_path: Path) -> None:
    """The same live traffic, in two parts, into two data dirs; one is reprocessed
    between the parts. Open plays, watermarks and dedup keys come out of the reprocess
    such that the second part gives the same figures."""
    records = live_events(seed=5)
    cut = len(records) * 3 // 5
    plain, reprocessed = (Settings(data_dir=tmp_path / name) for name in ("plain", "re"))
    for data_dir in (plain, reprocessed):
        append(data_dir, records[:cut])
        ensure_processed(data_dir)
    reprocess_cli(reprocessed)
    for data_dir in (plain, reprocessed):
        append(data_dir, records[cut:])
        ensure_processed(data_dir)
    assert_same_answers(answers(reprocessed), answers(plain))
    assert_same_store(reprocessed, store_items(plain), store_members(plain))
    assert {k: status(reprocessed)[k] for k in ("late_events", "duplicates_dropped")} == {
        k: status(plain)[k] for k in ("late_events", "duplicates_dropped")
    }


def plays_by_month(settings: Settings) -> dict[str, set[str]]:
    """The titles of the plays of each UTC month they started in."""
    out: dict[str, set[str]] = {}
    for month, title in sql(settings, "SELECT strftime(started_at, '%Y-%m'), title FROM plays"):
        out.setdefault(month, set()).add(title)
    return out


def test_reprocess_with_a_window_replaces_only_the_plays_that_started_in_it(
    tmp_path: Path, cfg: Settings
) -> None:
    """Every play of the lake is overwritten by a newer version with a wrong title; a
    reprocess of February recomputes February's plays (the one starting at 23:58 on
    February 29 crosses into March, and is recomputed whole), leaves January's and
    March's as they are; a reprocess of everything repairs them all."""
    import_paths([history(tmp_path / "export")], cfg, user_id=USER)
    right = answers(cfg)
    titles = plays_by_month(cfg)
    assert set(titles) == {"2024-01", "2024-02", "2024-03"}
    lake = LakeWriter(cfg.lake_path, SCHEMAS)
    current = pa.concat_tables(
        [pq.read_table(f).replace_schema_metadata() for f in lake.live_files("plays")]
    )
    wrong = current.set_column(
        current.schema.get_field_index("title"), "title", pa.array(["WRONG"] * len(current))
    )
    wrong = wrong.set_column(
        wrong.schema.get_field_index("version"), "version", pa.array([10**12] * len(wrong))
    )
    lake.write_months("plays", wrong.cast(SCHEMAS["plays"]), tag="wrong")
    assert plays_by_month(cfg) == {month: {"WRONG"} for month in titles}

    reprocess_cli(cfg, "--from", "2024-02-01", "--to", "2024-03-01")
    assert plays_by_month(cfg) == {
        "2024-01": {"WRONG"},
        "2024-02": titles["2024-02"],
        "2024-03": {"WRONG"},
    }
    assert sql(cfg, "SELECT title FROM plays WHERE started_at = '2024-02-29 23:58:00+00'") == [
        ("midnight",)
    ]
    reprocess_cli(cfg)
    assert plays_by_month(cfg) == titles
    assert_same_answers(answers(cfg), right)


@pytest.mark.parametrize(
    ("window", "message"),
    [
        (("--from", "2024-03-01", "--to", "2024-02-01"), "error: --to must be after --from"),
        (("--from", "yesterday"), "error: --from: 'yesterday' is not a date"),
    ],
)
def test_a_bad_reprocess_window_is_a_one_line_error_and_changes_nothing(
    tmp_path: Path, cfg: Settings, window: tuple[str, ...], message: str
) -> None:
    import_paths([history(tmp_path / "export")], cfg, user_id=USER)
    before = sorted(p.relative_to(cfg.data_dir) for p in cfg.lake_path.rglob("*.parquet"))
    done = run_cli("reprocess", *window, "--data-dir", str(cfg.data_dir))
    assert done.returncode == 2
    assert done.stderr.startswith(message)
    assert len(done.stderr.strip().splitlines()) == 1
    assert not reprocess_needed(cfg)
    assert sorted(p.relative_to(cfg.data_dir) for p in cfg.lake_path.rglob("*.parquet")) == before


# -- crash safety ----------------------------------------------------------------------


def stage(settings: Settings, path: Path) -> Path:
    """Stage the events of the export ``path`` as a pending backfill, as an import does
    before it is applied (an import killed at that point leaves it so)."""
    plan = plan_import([path], user_id=USER)
    staged = stage_backfill(settings, [(p.event, p.key, p.payload) for p in plan.events])
    assert staged is not None
    return staged


@pytest.fixture
def reference(tmp_path: Path) -> dict[str, list[dict[str, Any]]]:
    """The answers after importing :func:`history` (with nothing else going on)."""
    data_dir = Settings(data_dir=tmp_path / "reference")
    import_paths([history(tmp_path / "reference-export")], data_dir, user_id=USER)
    return answers(data_dir)


def test_a_pending_backfill_is_applied_at_the_next_processor_start(
    tmp_path: Path, cfg: Settings, reference: dict[str, list[dict[str, Any]]]
) -> None:
    staged = stage(cfg, history(tmp_path / "export"))
    assert pending_backfills(cfg) == [staged]
    assert reprocess_needed(cfg)
    assert answers(cfg)["overview"][0]["plays"] == 0  # not applied yet
    ensure_processed(cfg)
    assert not staged.exists()
    assert not reprocess_needed(cfg)
    assert_same_answers(answers(cfg), reference)


def test_a_pending_backfill_is_applied_by_the_next_import(
    tmp_path: Path, cfg: Settings, reference: dict[str, list[dict[str, Any]]]
) -> None:
    full = history(tmp_path / "export")
    rows = json.loads(full.read_text())
    staged = stage(cfg, export(tmp_path / "first" / "part.json", rows[:7]))
    result = import_paths([export(tmp_path / "rest" / "part.json", rows[7:])], cfg, user_id=USER)
    assert result.events_new == 2 * len(rows)
    assert not staged.exists()
    assert_same_answers(answers(cfg), reference)


def test_a_pending_backfill_is_applied_by_playpulse_reprocess(
    tmp_path: Path, cfg: Settings, reference: dict[str, list[dict[str, Any]]]
) -> None:
    full = history(tmp_path / "export")
    stage(cfg, full)
    out = reprocess_cli(cfg)
    events = 2 * len(json.loads(full.read_text()))
    assert f", {events:,} pending imported events added" in out
    assert not reprocess_needed(cfg)
    assert_same_answers(answers(cfg), reference)


def crash_while_swapping(settings: Settings) -> None:
    """Leave the data dir as a reprocess killed after it wrote the new plays and
    sessions files, before it deleted the old ones: the marker, and every derived
    file twice (the old one, and the new one with the same rows: nothing changed)."""
    request_reprocess(settings, None, None)
    version = reprocess_version()  # what a reprocess starting now writes
    for table in ("plays", "sessions"):
        for path in sorted((settings.lake_path / table).glob("*/*.parquet")):
            rows = pq.read_table(path)
            rows = rows.set_column(
                rows.schema.get_field_index("version"),
                rows.schema.field("version"),
                pa.array([version] * rows.num_rows, pa.int64()),
            )
            pq.write_table(rows, path.with_name("backfill-reprocess-0123456789abcdef.parquet"))


def test_an_interrupted_reprocess_is_completed_at_the_next_processor_start(
    tmp_path: Path, cfg: Settings, reference: dict[str, list[dict[str, Any]]]
) -> None:
    import_paths([history(tmp_path / "export")], cfg, user_id=USER)
    crash_while_swapping(cfg)
    assert (backfill_dir(cfg) / "reprocessing").exists()
    assert reprocess_needed(cfg)
    ensure_processed(cfg)
    assert not reprocess_needed(cfg)
    assert_same_answers(answers(cfg), reference)


def test_queries_do_not_double_count_while_a_reprocess_is_interrupted(
    tmp_path: Path, cfg: Settings, reference: dict[str, list[dict[str, Any]]]
) -> None:
    import_paths([history(tmp_path / "export")], cfg, user_id=USER)
    crash_while_swapping(cfg)
    assert_same_answers(answers(cfg), reference)


# -- a running processor ---------------------------------------------------------------


def test_a_running_processor_applies_imports_and_reprocess_requests(
    tmp_path: Path, cfg: Settings, reference: dict[str, list[dict[str, Any]]]
) -> None:
    """With a processor running on the data dir (as in ``playpulse up``), an import
    and a reprocess hand the work to it and return once it is done."""
    with processor_lock(cfg) as mine:
        assert mine
        worker = ProcessorThread(open_processor(cfg), cfg)
        worker.start()
        try:
            result = import_paths([history(tmp_path / "export")], cfg, user_id=USER)
            assert result.processing is None  # the running processor did it
            assert result.events_new is None
            assert not reprocess_needed(cfg)
            assert_same_answers(answers(cfg), reference)
            assert reprocess_data_dir(cfg, None, None, timeout_s=120) is None
            assert not reprocess_needed(cfg)
            assert_same_answers(answers(cfg), reference)
        finally:
            worker.stop()
    assert worker.error is None


def views_until(settings: Settings, stop: threading.Event) -> None:
    """Live traffic: a product view every 50 ms until ``stop`` (a shop's steady
    trickle: every poll of the processor finds something)."""
    stream = open_stream(settings)
    try:
        while not stop.wait(0.05):
            now = datetime.now(UTC)
            raw = {
                "event_type": "product_view",
                "event_id": str(uuid.uuid4()),
                "occurred_at": now.isoformat(),
                "user_id": "shopper",
                "product_id": "sku-1",
            }
            accepted = validate_event(json.dumps(raw), now)
            stream.append([(accepted.event.actor_id, accepted.payload)])
    finally:
        stream.close()


def test_a_running_processor_applies_an_import_while_live_traffic_flows(
    tmp_path: Path, cfg: Settings, reference: dict[str, list[dict[str, Any]]]
) -> None:
    plan = plan_import([history(tmp_path / "export")], user_id=USER)
    stop = threading.Event()
    feeder = threading.Thread(target=views_until, args=(cfg, stop))
    with processor_lock(cfg) as mine:
        assert mine
        worker = ProcessorThread(open_processor(cfg), cfg)
        worker.start()
        feeder.start()
        try:
            # Applying a backfill of 42 events takes well under a second when idle.
            events = [(p.event, p.key, p.payload) for p in plan.events]
            assert apply_import(cfg, events, timeout_s=10) is None  # the running one did
        finally:
            stop.set()
            feeder.join()
            worker.stop()
    assert worker.error is None
    assert answers(cfg)["top_content"] == reference["top_content"]


# -- payloads() ------------------------------------------------------------------------


def comparable(event: EventBase) -> dict[str, Any]:
    """The fields of ``event`` a lake row keeps: every field (transport times too) but
    an ``error`` event's code and message (the lake has no column for them, and no
    metric reads them); an empty object or list is the same as none."""
    out: dict[str, Any] = msgspec.to_builtins(event)
    if out["event_type"] == "error":
        out.pop("error_code", None)
        out.pop("error_message", None)
    return {k: v for k, v in out.items() if v not in (None, {}, [])}


def through_lake(tmp_path: Path, events: list[EventBase], raw: list[bytes]) -> list[EventBase]:
    """``events`` as lake ``events`` rows, written to and read from a Parquet file, then
    read back by :func:`payloads`."""
    table = events_table(
        [(e, p, 0, n, False) for n, (e, p) in enumerate(zip(events, raw, strict=True))]
    )
    path = tmp_path / "events.parquet"
    pq.write_table(table, path)
    return [decode_stored(p) for p in payloads(pq.read_table(path))]


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)
@given(st.lists(codec_properties.valid_events(), min_size=1, max_size=6))
def test_payloads_give_back_the_events_of_the_lake(
    tmp_path: Path, drawn: list[tuple[dict[str, Any], datetime]]
) -> None:
    """Any valid events (every type: playback, commerce with line items, properties,
    context, transport times), stored and read back, are the same events."""
    accepted = [validate_event(json.dumps(raw), received) for raw, received in drawn]
    back = through_lake(tmp_path, [a.event for a in accepted], [a.payload for a in accepted])
    assert [comparable(e) for e in back] == [comparable(a.event) for a in accepted]


def test_payloads_of_the_lake_a_processor_wrote(cfg: Settings) -> None:
    """Simulated traffic (every playback and commerce event type) through the
    processor into the lake; :func:`payloads` of the lake's events gives back each
    event the processor kept."""
    records = live_events(seed=9, events=2_000)
    append(cfg, records)
    ensure_processed(cfg)
    sent: dict[str, dict[str, Any]] = {}
    for _, payload in records:  # a copy delivered again is dropped: the first one stays
        event = decode_stored(payload)
        sent.setdefault(event.event_id, comparable(event))
    con = events_connection(cfg)
    try:
        table = con.sql("SELECT * FROM events").to_arrow_table()
    finally:
        con.close()
    back = [decode_stored(p) for p in payloads(table)]
    assert len(back) == len(sent)
    assert {e.event_type for e in back} >= {"play_start", "heartbeat", "play_end", "cart_add"}
    for event in back:
        assert comparable(event) == sent[event.event_id]


# -- history and the live counters -----------------------------------------------------


def play(user: str, started: datetime, received: datetime, name: str) -> list[tuple[str, bytes]]:
    """A 10-minute play of ``user`` from ``started``, every event received at
    ``received``."""
    out = []
    for kind, minutes in (("play_start", 0), ("heartbeat", 5), ("play_end", 10)):
        raw = {
            "event_type": kind,
            "event_id": f"{name}-{kind}",
            "occurred_at": (started + timedelta(minutes=minutes)).isoformat(),
            "user_id": user,
            "playback_id": name,
            "position_s": 60.0 * minutes,
            "content": {"content_id": name, "content_type": "track", "duration_s": 600},
        }
        if kind == "play_end":
            raw["reason"] = "completed"
        accepted = validate_event(json.dumps(raw), received)
        out.append((accepted.event.actor_id, accepted.payload))
    return out


def plays_counted(settings: Settings, pk: str) -> dict[str, float]:
    """The ``plays`` counter of each day of store item ``pk`` (``TOTAL``, ``USER#id``)."""
    return {
        sk.removeprefix("DAY#"): value
        for (key, sk, attr), value in store_items(settings).items()
        if key == pk and sk.startswith("DAY#") and attr == "plays"
    }


def test_history_is_in_the_lake_not_in_the_live_counters(cfg: Settings) -> None:
    """Received on 2026-03-20: a play of 2026-03-01 (19 days before: history) and one
    of 2026-03-15 (5 days before: an offline sync, live). Both are in the lake's plays;
    only the second is in the live counters; a reprocess keeps it so."""
    received = datetime(2026, 3, 20, 12, tzinfo=UTC)
    append(
        cfg,
        play("old", datetime(2026, 3, 1, 9, tzinfo=UTC), received, "p-old")
        + play("synced", datetime(2026, 3, 15, 9, tzinfo=UTC), received, "p-synced"),
    )
    ensure_processed(cfg)

    def check() -> None:
        assert sql(cfg, "SELECT user_id, started_at FROM plays ORDER BY 2") == [
            ("old", datetime(2026, 3, 1, 9, tzinfo=UTC)),
            ("synced", datetime(2026, 3, 15, 9, tzinfo=UTC)),
        ]
        assert plays_counted(cfg, "TOTAL") == {"2026-03-15": 1}
        assert plays_counted(cfg, "USER#synced") == {"2026-03-15": 1}
        assert plays_counted(cfg, "USER#old") == {}
        (overview,) = run_query("overview", WINDOW, cfg).to_pylist()
        assert (overview["plays"], overview["listening_s"]) == (2, 1200)

    check()
    reprocess_cli(cfg)
    check()


def test_imported_history_is_not_in_the_live_counters(tmp_path: Path, cfg: Settings) -> None:
    import_paths([history(tmp_path / "export")], cfg, user_id=USER)
    assert plays_counted(cfg, "TOTAL") == {}
    assert plays_counted(cfg, f"USER#{USER}") == {}
    counted = pc.sum(run_query("daily", WINDOW, cfg)["plays"]).as_py()
    assert counted == 21
