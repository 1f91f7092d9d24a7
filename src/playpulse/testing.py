"""Test helpers shipped with the package: run a real ``playpulse`` process on 127.0.0.1,
load test helper files as modules."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx


def load_module(path: Path, name: str) -> ModuleType:
    """The Python file ``path`` as module ``name``, loaded once (later calls return the
    same module). For test helper files next to tests, which are not a package when
    pytest runs with ``--import-mode=importlib``. Raises ``ImportError`` if ``path``
    cannot be loaded."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {path} as a module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def real_data_dir() -> Path | None:
    """The folder of real exported histories that tests may read: ``$PLAYPULSE_REAL_DATA``
    if set, else ``shared/data/real`` beside the project checkout; ``None`` when neither
    holds its ``README.md`` (tests that need it are skipped). Never copied into the
    repository."""
    candidates = [Path(__file__).resolve().parents[3] / "shared" / "data" / "real"]
    if os.environ.get("PLAYPULSE_REAL_DATA"):
        candidates.insert(0, Path(os.environ["PLAYPULSE_REAL_DATA"]))
    return next((path for path in candidates if (path / "README.md").is_file()), None)


def run_cli(
    *args: str, env: Mapping[str, str] | None = None, timeout_s: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m playpulse ARGS...`` as a user would, in a process of its own, with
    this environment plus ``env``; returns it finished, its output captured as text.
    Raises :class:`subprocess.TimeoutExpired` after ``timeout_s`` seconds."""
    return subprocess.run(
        [sys.executable, "-m", "playpulse", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env={**os.environ, **(env or {})},
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _psutil() -> Any:
    # psutil is a dev dependency (``pip install -e .[dev]``), imported only when needed.
    import psutil  # type: ignore[import-untyped]

    return psutil


def process_tree(pid: int) -> list[Any]:
    """The process ``pid`` and all its descendants now, as ``psutil.Process`` objects
    (those already gone are left out)."""
    psutil = _psutil()
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def group_members(pgid: int) -> list[Any]:
    """The processes of process group ``pgid`` now (``psutil.Process`` objects)."""
    psutil = _psutil()
    members = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid:
                members.append(proc)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


def kill_all(procs: list[Any], timeout_s: float = 5.0) -> list[Any]:
    """SIGKILL what is still running of ``procs`` (``psutil.Process`` objects) and reap
    it; returns those that were still running (empty when everything had exited)."""
    psutil = _psutil()

    def running(proc: Any) -> bool:
        try:
            return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
        except psutil.Error:
            return False

    alive = [p for p in procs if running(p)]
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(alive, timeout=timeout_s)
    return alive


@contextlib.contextmanager
def serve_app(app: Any, startup_timeout_s: float = 30.0, **config: Any) -> Iterator[str]:
    """Serve ASGI ``app`` with uvicorn on a thread, at 127.0.0.1 and a free port, until the
    block ends; yields its base URL (``http://127.0.0.1:PORT``).

    ``config``: more :class:`uvicorn.Config` options (default: lifespan on, warnings
    only). Raises ``AssertionError`` when the server exits or does not start within
    ``startup_timeout_s``; at the end it is asked to stop and joined (20 s at most).
    """
    import threading

    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    options = {"log_level": "warning", "lifespan": "on", **config}
    server = uvicorn.Server(uvicorn.Config(app, **options))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    try:
        while not server.started:
            assert thread.is_alive(), "the server exited"
            assert time.monotonic() < deadline, f"no server within {startup_timeout_s:g} s"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(20)
        sock.close()


@contextlib.contextmanager
def playpulse_server(
    command: str,
    data_dir: Path,
    log: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    startup_timeout_s: float = 30.0,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Run ``python -m playpulse COMMAND --data-dir DATA_DIR --port <free> ARGS...``.

    Yields ``(base_url, process)`` once ``GET /healthz`` answers 200; output goes to
    ``log``. ``PLAYPULSE_*`` variables of this process are not passed on unless given in
    ``env``. The process leads a process group of its own (``os.killpg(process.pid,
    sig)`` signals it and its children, as systemd does). At the end it gets SIGTERM
    (SIGKILL after 15 s), and then every process of its tree and its group that is
    still there is killed, so nothing outlives the block. Raises ``RuntimeError`` with
    the log if it exits or does not answer within ``startup_timeout_s``.
    """
    port = free_port()
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("PLAYPULSE_")}
    cmd = [sys.executable, "-m", "playpulse", command, "--data-dir", str(data_dir)]
    cmd += ["--port", str(port), *args]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**base_env, **(env or {})},
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    seen: dict[int, Any] = {}
    try:
        deadline = time.monotonic() + startup_timeout_s
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"playpulse {command} did not start: {log.read_text()}")
            time.sleep(0.1)
        yield url, proc
    finally:
        seen.update((p.pid, p) for p in process_tree(proc.pid))
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                seen.update((p.pid, p) for p in process_tree(proc.pid))
                proc.kill()
                proc.wait(5)
        seen.update((p.pid, p) for p in group_members(proc.pid))
        kill_all([p for p in seen.values() if p.pid != proc.pid])


#: The play measures :func:`play_totals` sums, named as the real-time store names them.
PLAY_MEASURES = (
    "plays",
    "streams",
    "completed",
    "skipped",
    "watch_time_s",
    "startup_time_s",
    "rebuffer_count",
    "rebuffer_time_s",
    "playing_time_s",
    "content_time_s",
    "playing_time_foreground_s",
    "playing_time_background_s",
)


def play_totals(
    settings: Any, *, user_id: str | None = None, creator: str | None = None
) -> dict[str, float]:
    """The play measures of every play in the data dir of ``settings`` (the lake's plays
    and the open ones, as every query sees them), optionally of one user or creator:
    ``{measure: total}`` with the names of :data:`PLAY_MEASURES` (seconds for times),
    measures with no known value left out. Imported history is only there (not in the
    real-time store's live counters)."""
    from playpulse.query.engine import connect

    sums = {
        "plays": "count(*)",
        "streams": "sum(is_stream::INT)",
        "completed": "sum(completed::INT)",
        "skipped": "sum(skipped::INT)",
        "rebuffer_count": "sum(rebuffer_count)",
        "playing_time_s": "sum(s.playing_s)",
        "content_time_s": "sum(s.playing_s * s.rate)",
        "playing_time_foreground_s": "sum(CASE WHEN s.foreground THEN s.playing_s ELSE 0 END)",
        "playing_time_background_s": "sum(CASE WHEN s.foreground THEN 0 ELSE s.playing_s END)",
    }
    for name in ("watch_time_s", "startup_time_s", "rebuffer_time_s"):
        sums[name] = f"sum({name})"
    con = connect(settings)
    try:
        where = (
            "WHERE ($user IS NULL OR user_id = $user) AND ($creator IS NULL OR creator = $creator)"
        )
        params = {"user": user_id, "creator": creator}
        plays = con.execute(
            f"SELECT {', '.join(f'{v} AS {k}' for k, v in sums.items() if 's.' not in v)} "
            f"FROM plays {where}",
            params,
        ).fetchone()
        segments = con.execute(
            f"SELECT {', '.join(f'{v} AS {k}' for k, v in sums.items() if 's.' in v)} "
            f"FROM (SELECT unnest(segments) AS s FROM plays {where})",
            params,
        ).fetchone()
    finally:
        con.close()
    names = [k for k, v in sums.items() if "s." not in v] + [
        k for k, v in sums.items() if "s." in v
    ]
    values = [*(plays or ()), *(segments or ())]
    out = {name: float(v) for name, v in zip(names, values, strict=True) if v is not None}
    if out.get("plays") == 0:
        return {}
    return out


def catalog_answers(settings: Any, params: Any = None) -> dict[str, list[dict[str, Any]]]:
    """Every catalog query's rows but ``live``'s, by query name, over ``params`` (a
    :class:`~playpulse.query.QueryParams`; default: 2000 to 2030 UTC, limit 10,000): what
    a data dir answers, to compare two data dirs or a data dir before and after."""
    from datetime import UTC, datetime

    from playpulse.query.catalog import CATALOG, QueryParams, run_query

    params = params or QueryParams(
        start=datetime(2000, 1, 1, tzinfo=UTC), end=datetime(2030, 1, 1, tzinfo=UTC), limit=10_000
    )
    return {
        name: run_query(name, params, settings).to_pylist() for name in CATALOG if name != "live"
    }


def assert_same_answers(
    got: dict[str, list[dict[str, Any]]], want: dict[str, list[dict[str, Any]]]
) -> None:
    """The same queries with the same rows in the same order (:func:`catalog_answers`);
    floats within 1e-9 relative (a rate's last bits may depend on the order it was
    summed in), everything else equal. Raises :class:`AssertionError` naming the query,
    the row and the values that differ."""
    import pytest

    assert list(got) == list(want)
    for name in want:
        assert len(got[name]) == len(want[name]), name
        for n, (a, b) in enumerate(zip(got[name], want[name], strict=True)):
            differ = {
                k: (a[k], b[k])
                for k in b
                if a[k] != (pytest.approx(b[k], rel=1e-9) if isinstance(b[k], float) else b[k])
            }
            assert not differ, f"{name}, row {n}: (got, want) {differ} in {b}"


def write_spotify_history(path: Path, plays: Mapping[str, tuple[str, int]]) -> Path:
    """Write a Spotify extended streaming history file (the 2024 key generation) at
    ``path``: one finished track a play, ``{name: (ts, ms_played)}`` (``ts`` the ISO end
    time, as Spotify writes it), titled ``Song <name>`` by ``Band``, played on Linux in
    Germany. Returns ``path``."""
    import json

    rows = [
        {
            "ts": ts,
            "ms_played": ms,
            "platform": "linux",
            "conn_country": "DE",
            "master_metadata_track_name": f"Song {name}",
            "master_metadata_album_artist_name": "Band",
            "master_metadata_album_album_name": "Album",
            "spotify_track_uri": f"spotify:track:{name}",
            "reason_start": "clickrow",
            "reason_end": "trackdone",
            "skipped": False,
        }
        for name, (ts, ms) in plays.items()
    ]
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


def embedded_answers(
    root: Path, partitions: Sequence[Sequence[tuple[str, bytes]]]
) -> dict[str, list[dict[str, Any]]]:
    """What the embedded default answers (:func:`catalog_answers`) for stream records
    held in ``partitions`` (each a partition's ``(key, value)`` records, in order),
    processed with the same partitioning: a play left open at the end of the data is
    closed by its partition's event-time watermark, so which users share a partition
    matters. ``root`` (created) holds the store, lake and quarantine; the stream is in
    memory."""
    from playpulse.config import Settings
    from playpulse.lake.schema import SCHEMAS
    from playpulse.lake.writer import LakeWriter
    from playpulse.processor.pipeline import Processor
    from playpulse.quarantine.store import QuarantineStore
    from playpulse.store.sqlite import SQLiteStore
    from playpulse.stream.memory import MemoryStream

    placement = {key: p for p, records in enumerate(partitions) for key, _ in records}

    class SamePartitions(MemoryStream):
        def partition_for(self, key: str) -> int:
            return placement[key]

    root.mkdir(parents=True)
    settings = Settings(data_dir=root, stream_url=None, store_url=None, lake_url=None)
    stream = SamePartitions(num_partitions=len(partitions))
    for records in partitions:
        for i in range(0, len(records), 500):
            stream.append(list(records[i : i + 500]))
    store = SQLiteStore(settings.store_path)
    quarantine = QuarantineStore(settings.quarantine_path)
    try:
        lake = LakeWriter(settings.lake_path, SCHEMAS)
        Processor(stream, store, lake, quarantine).process_available()
    finally:
        store.close()
        quarantine.close()
    return catalog_answers(settings)


def read_partition(stream: Any, partition: int, batch: int = 1000) -> list[Any]:
    """Every record ``stream`` retains in ``partition``, in order (read from its start
    offset in batches of ``batch``)."""
    out: list[Any] = []
    offset = stream.partitions()[partition].start_offset
    while records := stream.read(partition, offset, batch):
        out.extend(records)
        offset = records[-1].offset + 1
    return out
