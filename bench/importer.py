"""Import benchmark: `playpulse import` of a ten-year history built from a real export,
next to the live processor's figures measured in the same run.

1. **History.** Reads a real Spotify extended streaming history (default: the
   ``spotify-extended-mungeraiden`` export's ``Spotify Extended Streaming History`` folder
   in ``shared/data/real``, found like the tests find it:
   :func:`playpulse.testing.real_data_dir`) and writes, in a temp dir, ``--rows`` rows
   (default 150,000) in the same format: the export's rows repeated, copy after copy, each
   copy shifted in time so that every row stays distinct (the importer would send an
   identical row once):

   - copy ``k`` moves every row by ``k % 10`` whole years; the next ten copies are moved
     by one more whole week (the weekday and hour of day are kept), the ten after by two
     weeks, and so on;
   - a time that lands after the export's newest ``ts`` moves back ten years (so nothing
     is in the future, which the importer would reject), one before the ten years that
     end there forward; ten copies thus put every row of the export once into each year
     of the ten;
   - ``ts`` moves, and ``offline_timestamp`` (seconds or milliseconds) by the same amount;
     every other field is left as it is. The last copy is cut to reach ``--rows`` exactly.

   Files are laid out like a Spotify download: ``my_spotify_data/Spotify Extended
   Streaming History/Streaming_History_{Audio,Video}_{year}[_{n}].json`` (a row goes to
   Video when its source file is a Video file), at most :data:`FILE_ROWS` rows a file,
   formatted like the source (pretty-printed with two-space indentation when the source
   is, compact otherwise; UTF-8). The input size is these files' bytes.

2. **Live processor.** The processor's live path on simulated events, with
   bench/process.py's own functions (``build_workload``, ``fill_stream``,
   ``measure_processor``: ``--live-events`` events from the simulator, 8 partitions, the
   real ``Processor`` with default options in this process): events/s and events per
   CPU-second.

3. **Import.** ``python -m playpulse import HISTORY --data-dir DATA`` on a fresh data dir,
   in a process of its own, as a user runs it: wall time and CPU time (user + system of it
   and of the processes it waited for, ``getrusage(RUSAGE_CHILDREN)``), peak RSS. Then,
   outside the timing: the events in the lake (``playpulse status --format json``), the
   lake's files (``*.parquet`` under ``DATA/lake``), the data dir's bytes (every file under
   it) over the input's, and the first ``playpulse query overview --format json`` after the
   import (a new process: it pays the cold load), whose ``plays`` should equal the distinct
   rows that have a play.

Targets (issue #11): at least :data:`TARGET_ROWS_PER_S` rows imported per second and a
data dir at most :data:`TARGET_SIZE_RATIO` times the input. Each is printed PASS or FAIL;
the exit code is 0 either way (a benchmark reports, it does not fail CI).

    python bench/importer.py                 # 150,000 rows: minutes today
    python bench/importer.py --quick         # smoke run: 5,000 rows, 2,000 live events
    python bench/importer.py --write-docs    # also update docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchdocs import command_lines, machine, write_docs  # bench/ is on sys.path
from playpulse.config import Settings
from playpulse.errors import PlaypulseError
from playpulse.sources.importers.base import strip_personal
from playpulse.testing import real_data_dir, run_cli
from process import (
    DEFAULT_BATCH_SIZE,
    Run,
    _machine_busy_s,
    build_workload,
    fill_stream,
    measure_processor,
    wait_until_quiet,
)
from soak import _dir_bytes

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"

#: Issue #11's targets.
TARGET_ROWS_PER_S = 5_000
TARGET_SIZE_RATIO = 1.5
#: The history spans this many years.
YEARS = 10
#: At most this many rows per written file.
FILE_ROWS = 16_000
#: The default source, under the real-data folder.
DEFAULT_SOURCE = Path(
    "spotify-extended-mungeraiden", "my_spotify_data", "Spotify Extended Streaming History"
)
#: Where the history's files go, under its root (a Spotify download's layout).
EXPORT_FOLDER = Path("my_spotify_data", "Spotify Extended Streaming History")
QUICK_ROWS = 5_000
QUICK_LIVE_EVENTS = 2_000
#: Figures from before the backfill rewrite, kept in the docs section.
HISTORY = """Before (2026-12-04, commit 407476e, before imports became backfills): `--quick`
(5,000 rows of the same history, 2022-2026) imported 500-660 rows/s (1,350-1,550 events
per CPU-second) into 1,372 lake files and a data dir 11.1x the input (store.db 23 MiB,
lake 13.5 MiB, stream 5.3 MiB for 3.8 MiB of input), on a shared machine; issue #11
measured about 1,000 rows/s and 25x on a 7,000-row history."""
#: An offline_timestamp at least this large is in milliseconds (as the importer reads it).
_MS_THRESHOLD = 100_000_000_000


class BenchError(PlaypulseError):
    """A benchmark input or run problem: what, where and why, for the command line."""


# --------------------------------------------------------------------------------------
# The history


@dataclass
class Source:
    """The rows of a Spotify extended export: ``(kind, row)`` in file order, ``kind``
    ``Audio`` or ``Video`` (from the file name); ``indent`` 2 when the export is
    pretty-printed, ``None`` when compact; ``newest`` its newest ``ts``."""

    path: Path
    rows: list[tuple[str, dict[str, Any]]]
    indent: int | None
    newest: datetime


def parse_ts(value: Any, where: str) -> datetime:
    """A Spotify ``ts`` (ISO 8601 UTC, ``2023-12-25T18:51:20Z``) as an aware datetime;
    raises :class:`BenchError` naming ``where`` otherwise."""
    if not isinstance(value, str):
        raise BenchError(f"{where}: ts is {value!r}, not an ISO 8601 time")
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BenchError(f"{where}: ts {value!r} is not an ISO 8601 time") from None
    if t.tzinfo is None:
        raise BenchError(f"{where}: ts {value!r} has no zone (Spotify's ts is UTC, with Z)")
    return t.astimezone(UTC)


def format_ts(t: datetime) -> str:
    """``t`` (UTC) as Spotify writes ``ts``: ``2023-12-25T18:51:20Z``."""
    return t.isoformat().replace("+00:00", "Z")


def load_source(path: Path) -> Source:
    """The Spotify extended history at ``path`` (a file, or a folder whose ``*.json``
    files are read recursively, in path order). Files that are not extended history (a JSON
    array of objects with ``ts`` and ``ms_played``) are left out; raises
    :class:`BenchError` when none is left or a row has no valid ``ts``."""
    if not path.exists():
        raise BenchError(f"{path}: no such file or folder")
    files = sorted(path.rglob("*.json")) if path.is_dir() else [path]
    rows: list[tuple[str, dict[str, Any]]] = []
    indent: int | None = None
    newest: datetime | None = None
    used = 0
    for file in files:
        text = file.read_text(encoding="utf-8")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BenchError(f"{file}: not JSON ({exc})") from None
        if not (
            isinstance(data, list)
            and data
            and all(isinstance(r, dict) and "ts" in r and "ms_played" in r for r in data)
        ):
            continue
        if used == 0:
            indent = 2 if text.lstrip().startswith("[\n") else None
        used += 1
        kind = "Video" if "video" in file.name.lower() else "Audio"
        for i, row in enumerate(data):
            ts = parse_ts(row["ts"], f"{file}, row {i + 1}")
            newest = ts if newest is None else max(newest, ts)
            rows.append((kind, row))
    if not rows or newest is None:
        raise BenchError(
            f"{path}: no Spotify extended streaming history in it (JSON arrays of objects "
            "with ts and ms_played)"
        )
    return Source(path, rows, indent, newest)


def _with_year(t: datetime, year: int) -> datetime:
    """``t`` in ``year`` (29 February becomes the 28th in a common year)."""
    try:
        return t.replace(year=year)
    except ValueError:
        return t.replace(year=year, day=28)


def shifted(row: dict[str, Any], years: int, weeks: int, newest: datetime) -> dict[str, Any]:
    """``row`` moved ``weeks`` whole weeks, then ``years`` whole years, then by whole
    multiples of :data:`YEARS` years into the window of :data:`YEARS` years that ends at
    ``newest`` (the export's newest ``ts``: nothing lands after it, so nothing in the
    future); ``offline_timestamp`` (seconds, or milliseconds from :data:`_MS_THRESHOLD`)
    moved by the same amount."""
    before = parse_ts(row["ts"], "row")
    moved = before + timedelta(weeks=weeks)
    after = _with_year(moved, moved.year + years)
    while after > newest:
        after = _with_year(after, after.year - YEARS)
    while after <= _with_year(newest, newest.year - YEARS):
        after = _with_year(after, after.year + YEARS)
    out = dict(row)
    out["ts"] = format_ts(after)
    offline = row.get("offline_timestamp")
    if isinstance(offline, int) and not isinstance(offline, bool) and offline > 0:
        delta_s = int((after - before).total_seconds())
        out["offline_timestamp"] = offline + (
            delta_s * 1000 if offline >= _MS_THRESHOLD else delta_s
        )
    return out


@dataclass
class History:
    """A written history: its ``root`` folder (what is imported), ``rows``, ``files``,
    ``input_bytes`` (of the files), ``copies`` of the source (the last maybe partial),
    the years it spans and rows per year."""

    root: Path
    rows: int
    files: int
    input_bytes: int
    copies: int
    oldest: datetime
    newest: datetime
    rows_by_year: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0


def build_history(source: Source, rows: int, root: Path) -> History:
    """Write ``rows`` rows of ``source`` repeated and shifted (module docstring) under
    ``root``; ``rows`` must be positive."""
    started = time.perf_counter()
    times: list[datetime] = []
    by_file: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    written = 0
    copy = 0
    while written < rows:
        years, weeks = copy % YEARS, copy // YEARS
        for kind, row in source.rows[: rows - written]:
            out = shifted(row, years, weeks, source.newest)
            times.append(parse_ts(out["ts"], "row"))
            by_file[kind, int(out["ts"][:4])].append(out)
        written += min(len(source.rows), rows - written)
        copy += 1
    folder = root / EXPORT_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    files = 0
    size = 0
    rows_by_year: dict[int, int] = defaultdict(int)
    for (kind, year), items in sorted(by_file.items()):
        rows_by_year[year] += len(items)
        parts = math.ceil(len(items) / FILE_ROWS)
        for n in range(parts):
            suffix = f"_{n}" if parts > 1 else ""
            path = folder / f"Streaming_History_{kind}_{year}{suffix}.json"
            chunk = items[n * FILE_ROWS : (n + 1) * FILE_ROWS]
            if source.indent is None:
                text = json.dumps(chunk, ensure_ascii=False, separators=(",", ":"))
            else:
                text = json.dumps(chunk, ensure_ascii=False, indent=source.indent)
            path.write_text(text, encoding="utf-8")
            files += 1
            size += path.stat().st_size
    return History(
        root,
        sum(rows_by_year.values()),
        files,
        size,
        copy,
        min(times),
        max(times),
        dict(sorted(rows_by_year.items())),
        time.perf_counter() - started,
    )


# --------------------------------------------------------------------------------------
# The import


@dataclass
class ImportRun:
    """One ``playpulse import`` of a history into a fresh data dir, and what it left."""

    rows: int
    input_bytes: int
    wall_s: float
    cpu_s: float
    other_cpu_pct: float
    peak_rss_mib: float
    summary: str
    events: int
    lake_files: int
    data_dir_bytes: int
    parts: dict[str, int]
    query_s: float
    plays: int | None

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.wall_s if self.wall_s > 0 else math.nan

    @property
    def events_per_s(self) -> float:
        return self.events / self.wall_s if self.wall_s > 0 else math.nan

    @property
    def events_per_cpu_s(self) -> float:
        return self.events / self.cpu_s if self.cpu_s > 0 else math.nan

    @property
    def size_ratio(self) -> float:
        return self.data_dir_bytes / self.input_bytes if self.input_bytes else math.nan


def _cli(*args: str, timeout_s: float) -> subprocess.CompletedProcess[str]:
    done = run_cli(*args, timeout_s=timeout_s)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise BenchError(
            f"`playpulse {shlex.join(args)}` exited with {done.returncode}: " + " / ".join(tail)
        )
    return done


def data_dir_parts(data_dir: Path) -> dict[str, int]:
    """Bytes under each entry of ``data_dir`` (a SQLite file with its ``-wal`` and
    ``-shm``), largest first."""
    parts: dict[str, int] = defaultdict(int)
    for entry in data_dir.iterdir():
        name = entry.name.removesuffix("-wal").removesuffix("-shm")
        parts[name] += _dir_bytes(entry) if entry.is_dir() else entry.stat().st_size
    return dict(sorted(parts.items(), key=lambda kv: -kv[1]))


def run_import(history: History, data_dir: Path, timeout_s: float) -> ImportRun:
    """``playpulse import`` of ``history`` into ``data_dir`` (fresh), timed; then what it
    left (module docstring, step 3). Raises :class:`BenchError` when a command fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy0, wall0 = _machine_busy_s(), time.perf_counter()
    done = _cli("import", str(history.root), "--data-dir", str(data_dir), timeout_s=timeout_s)
    wall = time.perf_counter() - wall0
    busy = _machine_busy_s() - busy0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    # ru_maxrss of the children is the largest of any so far (KiB on Linux): the import
    # is this process's first child, so it is the import's.
    peak_rss_mib = after.ru_maxrss / 1024
    data_dir_bytes = _dir_bytes(data_dir)
    parts = data_dir_parts(data_dir)
    lake = Settings(data_dir=data_dir).lake_path
    lake_files = sum(1 for _ in lake.rglob("*.parquet"))
    status = json.loads(
        _cli("status", "--format", "json", "--data-dir", str(data_dir), timeout_s=120).stdout
    )
    events = status.get("events_in_lake") if isinstance(status, dict) else None
    if not isinstance(events, int):
        raise BenchError(f"`playpulse status --format json` has no events_in_lake: {status!r}")
    query0 = time.perf_counter()
    overview = _cli(
        "query", "overview", "--format", "json", "--data-dir", str(data_dir), timeout_s=600
    )
    query_s = time.perf_counter() - query0
    table = json.loads(overview.stdout)
    rows = table.get("rows", table) if isinstance(table, dict) else table
    plays = rows[0].get("plays") if isinstance(rows, list) and rows else None
    return ImportRun(
        rows=history.rows,
        input_bytes=history.input_bytes,
        wall_s=wall,
        cpu_s=cpu,
        other_cpu_pct=100 * max(0.0, busy - cpu) / wall if wall else 0.0,
        peak_rss_mib=peak_rss_mib,
        summary=done.stdout.strip(),
        events=events,
        lake_files=lake_files,
        data_dir_bytes=data_dir_bytes,
        parts=parts,
        query_s=query_s,
        plays=plays if isinstance(plays, int) else None,
    )


def distinct_play_rows(history: History) -> int:
    """Rows of the written history the importer should turn into a play: distinct rows
    once personal fields (IP address, user agent) are left out, as the importer tells
    rows apart (an identical row is imported once); a cross-check of ``overview``'s
    ``plays``."""
    seen: set[str] = set()
    for path in (history.root / EXPORT_FOLDER).glob("*.json"):
        for row in json.loads(path.read_text(encoding="utf-8")):
            seen.add(json.dumps(strip_personal(row), sort_keys=True))
    return len(seen)


# --------------------------------------------------------------------------------------
# Report


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _mib(n: float) -> str:
    return f"{n / 2**20:,.1f}"


def figures_table(imp: ImportRun, live: Run) -> str:
    """The import and the live processor side by side, as a Markdown table."""
    head = (
        "| path | input | events | wall s | CPU s | rows/s | events/s | events per CPU-s |"
        " lake files | other procs CPU % |"
    )
    return "\n".join(
        [
            head,
            "|" + "---|" * 10,
            f"| `playpulse import` (backfill) | {imp.rows:,} rows, {_mib(imp.input_bytes)} MiB |"
            f" {imp.events:,} | {imp.wall_s:.1f} | {imp.cpu_s:.1f} | {imp.rows_per_s:,.0f} |"
            f" {imp.events_per_s:,.0f} | {imp.events_per_cpu_s:,.0f} | {imp.lake_files:,} |"
            f" {imp.other_cpu_pct:.0f} |",
            f"| live processor, batch_size={live.batch_size:,} | {live.events:,} simulated"
            f" events | {live.events:,} | {live.wall_s:.1f} | {live.cpu_s:.1f} | - |"
            f" {live.events_per_s:,.0f} | {live.events_per_cpu_s:,.0f} | {live.lake_files:,} |"
            f" {live.other_cpu_pct:.0f} |",
        ]
    )


def size_lines(imp: ImportRun) -> list[str]:
    """The data dir's size, whole and by part (parts of 0.05 MiB or more)."""
    parts = ", ".join(f"{name} {_mib(n)} MiB" for name, n in imp.parts.items() if n >= 0.05 * 2**20)
    return [
        f"Data dir {_mib(imp.data_dir_bytes)} MiB for {_mib(imp.input_bytes)} MiB of input:"
        f" {imp.size_ratio:.2f}x ({parts}; {imp.data_dir_bytes / max(imp.rows, 1):,.0f}"
        f" bytes per row, input {imp.input_bytes / max(imp.rows, 1):,.0f}).",
    ]


def target_lines(imp: ImportRun) -> list[str]:
    """PASS or FAIL per target, with the figure."""
    return [
        f"{_verdict(imp.rows_per_s >= TARGET_ROWS_PER_S)}: rows imported per second >="
        f" {TARGET_ROWS_PER_S:,}: measured {imp.rows_per_s:,.0f}",
        f"{_verdict(imp.size_ratio <= TARGET_SIZE_RATIO)}: data dir <= {TARGET_SIZE_RATIO:g}x"
        f" the input: measured {imp.size_ratio:.2f}x",
    ]


def check_lines(imp: ImportRun, live: Run, expected_plays: int) -> list[str]:
    """The import against the live path, and its cross-checks: plays against distinct
    rows, the cold first query."""
    plays = "unknown" if imp.plays is None else f"{imp.plays:,}"
    same = imp.plays == expected_plays
    return [
        f"CPU per event: import {1e6 / imp.events_per_cpu_s:,.0f} us, live processor"
        f" {1e6 / live.events_per_cpu_s:,.0f} us"
        f" ({live.events_per_cpu_s / imp.events_per_cpu_s:.1f}x as many events per"
        " CPU-second live).",
        f"`overview` plays {plays} for {expected_plays:,} distinct rows: "
        + ("equal." if same else "**differ**."),
        f"First `playpulse query overview` after the import (a new process, cold): "
        f"{imp.query_s:.1f} s.",
        f"Import peak RSS {imp.peak_rss_mib:,.0f} MiB.",
    ]


def docs_section(
    args: argparse.Namespace,
    source: Source,
    history: History,
    imp: ImportRun,
    live: Run,
    expected_plays: int,
    load_before: tuple[float, float, float],
) -> str:
    """The ``importer`` section of docs/benchmarks.md."""
    try:
        source_name = str(source.path.relative_to(real_data_dir() or Path("/nonexistent")))
    except ValueError:
        source_name = str(source.path)
    years = ", ".join(f"{y}: {n:,}" for y, n in history.rows_by_year.items())
    return "\n".join(
        [
            "## Import (bench/importer.py)",
            "",
            "How fast `playpulse import` backfills a long listening history, and how big the"
            " data dir gets, next to the live processor's figures in the same run.",
            "",
            f"- History: the {len(source.rows):,} rows of the real export `{source_name}`"
            " (shared/data/real) repeated and shifted in time into"
            f" {history.rows:,} rows from {history.oldest:%Y-%m-%d} to"
            f" {history.newest:%Y-%m-%d} ({history.copies} copies, the last cut; ten copies"
            " or more span ten years): copy k moves every row by k mod 10 whole years, each"
            " further ten copies by one more whole week, and a time past the export's newest"
            " `ts` wraps back ten years (nothing lands in the future), so that every row"
            " stays distinct; `ts` and `offline_timestamp` move, nothing else changes. Files"
            " as in"
            " a Spotify download (`Streaming_History_Audio_YEAR.json`, Video files apart,"
            f" formatted like the source), {history.files} files,"
            f" {_mib(history.input_bytes)} MiB. Rows per year: {years}.",
            "- Import: `python -m playpulse import HISTORY --data-dir DATA` in a process of"
            " its own on a fresh data dir, as a user runs it (process start included). CPU s"
            " = its user + system time and that of the processes it waited for. `events` ="
            " `events_in_lake` of `playpulse status`; `lake files` = `*.parquet` under"
            " `DATA/lake`; data dir = every file under it.",
            f"- Live processor: bench/process.py's throughput pass (`measure_processor`) on"
            f" {live.events:,} simulated events (`SimulationConfig(seed={args.seed})`), the"
            f" real `Processor` with default options (batch_size {live.batch_size:,}) in"
            " the benchmark's process.",
            *command_lines(f"python bench/importer.py {args.command_args}".strip()),
            f"Machine: {machine()}; load average before the run {load_before[0]:.2f} /"
            f" {load_before[1]:.2f} / {load_before[2]:.2f} (1 / 5 / 15 min).",
            f"Run: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
            "",
            figures_table(imp, live),
            "",
            *[f"- {line}" for line in size_lines(imp) + check_lines(imp, live, expected_plays)],
            "",
            "Targets (issue #11):",
            "",
            *[f"- {line}" for line in target_lines(imp)],
            "",
            HISTORY,
        ]
    )


# --------------------------------------------------------------------------------------
# Main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=None, help="rows of history (150,000)")
    parser.add_argument(
        "--live-events", type=int, default=None, help="simulated events of the live pass"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: {QUICK_ROWS:,} rows and {QUICK_LIVE_EVENTS:,} live events",
    )
    parser.add_argument(
        "--source",
        type=Path,
        default=None,
        help="a Spotify extended history file or folder (default: shared/data/real/"
        f"{DEFAULT_SOURCE.as_posix()})",
    )
    parser.add_argument("--seed", type=int, default=7, help="simulator seed (live pass)")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=10.0,
        help="before each timed part, wait at most this long for other processes to go idle",
    )
    parser.add_argument(
        "--timeout-s", type=float, default=3600.0, help="give up on the import after this"
    )
    parser.add_argument("--keep", type=Path, help="keep the history and data dir here")
    parser.add_argument("--write-docs", action="store_true", help=f"update {DOCS}")
    args = parser.parse_args(argv)
    if args.rows is None:
        args.rows = QUICK_ROWS if args.quick else 150_000
    if args.live_events is None:
        args.live_events = QUICK_LIVE_EVENTS if args.quick else 20_000
    if args.rows < 1 or args.live_events < 1:
        parser.error("--rows and --live-events must be >= 1")
    if args.quiet_wait < 0 or args.timeout_s <= 0:
        parser.error("--quiet-wait must be >= 0 and --timeout-s > 0")
    args.command_args = shlex.join(sys.argv[1:] if argv is None else argv)
    return args


def default_source() -> Path:
    """The default export under the real-data folder; raises :class:`BenchError` when
    that folder is not there."""
    real = real_data_dir()
    if real is None:
        raise BenchError(
            "no real data: shared/data/real is not beside the checkout and PLAYPULSE_REAL_DATA "
            "is not set; pass --source PATH (a Spotify extended history)"
        )
    return real / DEFAULT_SOURCE


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load_before = os.getloadavg()
    started = time.perf_counter()
    try:
        source = load_source(args.source or default_source())
    except BenchError as exc:
        print(f"bench/importer.py: {exc}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="playpulse-bench-importer-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            history = build_history(source, args.rows, tmp / "history")
            print(
                f"history: {history.rows:,} rows ({history.copies} copies of"
                f" {len(source.rows):,}) from {history.oldest:%Y-%m-%d} to"
                f" {history.newest:%Y-%m-%d} in"
                f" {history.files} files, {_mib(history.input_bytes)} MiB, written in"
                f" {history.seconds:.1f} s",
                flush=True,
            )
            expected_plays = distinct_play_rows(history)

            print(f"live processor: {args.live_events:,} simulated events ...", flush=True)
            workload = build_workload(args.live_events, args.seed)
            stream = fill_stream(tmp / "live" / "stream.db", workload.records, 500)
            try:
                wait_until_quiet(args.quiet_wait)
                live = measure_processor(stream, tmp / "live" / "proc", DEFAULT_BATCH_SIZE)
            finally:
                stream.close()
            print(
                f"  {live.events:,} events in {live.wall_s:.1f} s: {live.events_per_s:,.0f}"
                f" events/s, {live.events_per_cpu_s:,.0f} per CPU-s",
                flush=True,
            )

            print(f"playpulse import: {history.rows:,} rows ...", flush=True)
            wait_until_quiet(args.quiet_wait)
            imp = run_import(history, tmp / "data", args.timeout_s)
            print(f"  {imp.summary}", flush=True)
        except BenchError as exc:
            print(f"bench/importer.py: {exc}", file=sys.stderr)
            return 2
        finally:
            if args.keep is not None:
                shutil.copytree(tmp, args.keep, dirs_exist_ok=True)
    print()
    print(figures_table(imp, live))
    print()
    for line in size_lines(imp) + check_lines(imp, live, expected_plays):
        print(f"- {line}")
    print()
    for line in target_lines(imp):
        print(line)
    if args.write_docs:
        write_docs(
            DOCS,
            "importer",
            docs_section(args, source, history, imp, live, expected_plays, load_before),
        )
        print(f"\nupdated the importer section of {DOCS}")
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
