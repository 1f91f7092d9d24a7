"""The ``playpulse`` command line (typer + rich).

Errors are printed as one line (``error: ...``) with exit code 2, never a traceback.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import re
import signal
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import pyarrow as pa
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from playpulse.alerts.cli import alerts_app
from playpulse.aws.cli import aws_app
from playpulse.cli_options import DataDir, ProjectName
from playpulse.config import Settings
from playpulse.enrich.cli import catalog_app, enrich_app
from playpulse.errors import ConfigError, PlaypulseError
from playpulse.extension.cli import extension_app
from playpulse.filemodes import private_umask, secure_data_dir
from playpulse.monitoring.cli import monitoring_app
from playpulse.privacy.cli import privacy_app
from playpulse.projects.cli import projects_app
from playpulse.sources.spotify_poll.cli import spotify_app

if TYPE_CHECKING:
    import duckdb

    from playpulse.query.catalog import QueryParams

app = typer.Typer(
    name="playpulse",
    help="Real-time engagement analytics for playback and shop events, on one machine.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Help texts are plain text: "[env PLAYPULSE_DATA_DIR; default ./.playpulse]" would
    # otherwise be read as rich markup and vanish.
    rich_markup_mode=None,
)
quarantine_app = typer.Typer(help="Inspect and replay rejected events.", no_args_is_help=True)
app.add_typer(quarantine_app, name="quarantine")
app.add_typer(aws_app, name="aws")
app.add_typer(projects_app, name="projects")
app.add_typer(privacy_app, name="privacy")
app.add_typer(alerts_app, name="alerts")
app.add_typer(monitoring_app, name="monitoring")
app.add_typer(spotify_app, name="spotify")
app.add_typer(extension_app, name="extension")
app.add_typer(catalog_app, name="catalog")
app.add_typer(enrich_app, name="enrich")


class _Out:
    """The terminal output: a fresh :class:`rich.console.Console` for every call, so
    its width follows ``COLUMNS`` and the terminal as they are when a command prints,
    not as they were when this module was imported (one process may run several
    commands: tests, notebooks)."""

    def print(self, *objects: Any, width: int | None = None, **kwargs: Any) -> None:
        """:meth:`rich.console.Console.print`, on a console at least ``width`` columns
        wide (wider than the terminal when a table needs it: the terminal wraps the lines,
        nothing is cut)."""
        _console(width).print(*objects, **kwargs)

    def rule(self, *args: Any, **kwargs: Any) -> None:
        """:meth:`rich.console.Console.rule`."""
        _console().rule(*args, **kwargs)


def _console(width: int | None = None) -> Console:
    """A console that prints text as it is: no rich markup (an artist called
    ``SawanoHiroyuki[nZk]`` keeps its brackets, ``[bold red]x[/]`` in data stays text)
    and no ``:emoji:`` codes; ``width`` columns when that is wider than the terminal."""
    console = Console(markup=False, emoji=False, highlight=False)
    if width is not None and width > console.width:
        console = Console(markup=False, emoji=False, highlight=False, width=width)
    return console


out = _Out()

Format = Annotated[str, typer.Option("--format", help="table or json.")]
#: ``--project NAME``: the one definition every reading command shares.


class _State:
    data_dir: Path | None = None


_state = _State()


def _settings(
    data_dir: Path | None = None, project: str | None = None, **overrides: Any
) -> Settings:
    """The command's settings: ``overrides`` (``None``/empty ones left out) over the
    environment, the data dir chosen by the command's ``--data-dir``, else the global
    one; then, with ``project``, that project's settings
    (:func:`playpulse.projects.project_settings`; raises ``ConfigError`` when there is no
    such project). An existing data dir open to others is made private on the way."""
    values = {k: v for k, v in overrides.items() if v is not None and v != []}
    chosen = data_dir or _state.data_dir
    if chosen is not None:
        values["data_dir"] = chosen
    try:
        settings = Settings(**values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from None
    # An existing data dir open to others becomes 0700 (playpulse.filemodes).
    warning = secure_data_dir(settings.data_dir)
    if warning is not None:
        typer.echo(f"warning: {warning}", err=True)
    if project is None:
        return settings
    from playpulse.projects import project_settings

    return project_settings(settings, project)


def _reading_settings(data_dir: Path | None = None, project: str | None = None) -> Settings:
    """:func:`_settings` for a command that reads data: raises
    :class:`~playpulse.errors.ConfigError` when the data dir does not exist (a typo in
    ``--data-dir`` would otherwise answer zeros), unless data is kept elsewhere
    (``stream_url``, ``store_url`` or ``lake_url`` set)."""
    settings = _settings(data_dir, project)
    urls = (settings.stream_url, settings.store_url, settings.lake_url)
    if all(url is None for url in urls) and not settings.data_dir.exists():
        raise ConfigError(
            f"data dir {settings.data_dir} does not exist: check --data-dir or "
            "PLAYPULSE_DATA_DIR (`playpulse import`, `demo` or `up` put data there)"
        )
    return settings


def _check_format(value: str, allowed: tuple[str, ...] = ("table", "json")) -> None:
    if value not in allowed:
        raise ConfigError(f"--format must be one of {', '.join(allowed)}, not '{value}'")


@app.callback()
def _main(data_dir: DataDir = None) -> None:
    _state.data_dir = data_dir


Host = Annotated[str | None, typer.Option(help="Address to bind [default 127.0.0.1].")]
Port = Annotated[int | None, typer.Option(help="Port to bind [default 8000].")]
WriteKeys = Annotated[
    list[str] | None,
    typer.Option(
        "--write-key",
        help="Accepted write key (repeatable) [env PLAYPULSE_WRITE_KEYS, comma-separated].",
    ),
]
WriteKeyFile = Annotated[
    Path | None,
    typer.Option(
        "--write-key-file",
        envvar="PLAYPULSE_WRITE_KEY_FILE",
        help="A file of accepted write keys, one per line (lines starting with # are "
        "comments): keys stay out of `ps`, unlike --write-key.",
        show_default=False,
    ),
]
ReadKeyFile = Annotated[
    Path | None,
    typer.Option(
        "--read-key-file",
        envvar="PLAYPULSE_READ_KEY_FILE",
        help="A file of read keys, one per line (lines starting with # are comments): "
        "keys stay out of `ps`, unlike --read-key.",
        show_default=False,
    ),
]
AccessLog = Annotated[bool, typer.Option(help="Log every request.")]
Workers = Annotated[
    int | None,
    typer.Option(help="Collector processes sharing the port (one per core) [default 1]."),
]


def read_key_file(path: Path, option: str = "--write-key-file") -> list[str]:
    """The keys in the text file ``path``: one per line, surrounding blanks stripped;
    empty lines and lines whose first non-blank character is ``#`` are skipped.

    Raises :class:`~playpulse.errors.ConfigError` (naming ``option`` and the file, never
    a key) when the file cannot be read, is not UTF-8, or holds no key (an empty key
    file would leave the service open to everyone)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"{option} {path}: cannot read it ({why})") from None
    keys = [line.strip() for line in text.splitlines()]
    keys = [k for k in keys if k and not k.startswith("#")]
    if not keys:
        raise ConfigError(f"{option} {path}: no key in it (one key per line, # comments)")
    return keys


def _keys(option: str, given: list[str] | None, key_file: Path | None) -> list[str] | None:
    """The keys of ``--write-key``/``--read-key`` (``option``) and of its ``-file``
    option together, ``None`` when neither is given (then ``PLAYPULSE_*_KEYS`` apply).
    Keys given on the command line still work, with a warning: ``ps`` shows them."""
    if given:
        env = "PLAYPULSE_WRITE_KEYS" if option == "--write-key" else "PLAYPULSE_READ_KEYS"
        typer.echo(
            f"warning: {option} on the command line is visible to every user of this "
            f"machine (ps, /proc); use {option}-file FILE or {env} instead",
            err=True,
        )
    keys = list(given or [])
    if key_file is not None:
        keys += read_key_file(key_file, f"{option}-file")
    return keys or None


PseudonymizeUsers = Annotated[
    bool | None,
    typer.Option(
        "--pseudonymize-users",
        help="Store only keyed pseudonyms (HMAC) of user ids, never the ids "
        "(docs/privacy.md) [env PLAYPULSE_PSEUDONYMIZE_USERS].",
        show_default=False,
    ),
]


class _Stop(Exception):
    """Raised by a shutdown signal that comes before or after the server handles it."""


def _stop_on_signals() -> None:
    # Uvicorn handles SIGINT/SIGTERM while it serves and, once stopped, raises the signal
    # again with the handlers it found: these turn that (or a signal that comes before it
    # serves) into a normal exit, after every `finally` (the processor stopped) ran.
    def handler(sig: int, _frame: object) -> None:
        raise _Stop(sig)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def _serve(settings: Settings, with_processor: bool, access_log: bool) -> None:
    import uvicorn

    from playpulse.collector.server import uvicorn_options
    from playpulse.service import check_data_dir, lock_taken_error, processor_lock

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    check_data_dir(settings)
    what = "collector and processor" if with_processor else "collector"
    options: dict[str, Any] = {
        # The HTTP edge's limits: keep-alive and header timeouts, connection cap...
        **uvicorn_options(settings),
        "host": settings.host,
        "port": settings.port,
        "access_log": access_log,
        "log_level": "info",
    }
    _stop_on_signals()
    try:
        with contextlib.ExitStack() as stack:
            # `up` holds the data dir's processor lock while it runs; `collect` leaves it.
            if with_processor and not stack.enter_context(processor_lock(settings)):
                raise lock_taken_error(settings)
            typer.echo(
                f"playpulse {what} on http://{settings.host}:{settings.port} "
                f"(data in {settings.data_dir}, {settings.workers} worker(s))",
                err=True,
            )
            from playpulse.projects.gateway import serving_app

            gateway = serving_app(settings, with_processor)
            if gateway is not None:  # projects: every project's app behind one port
                uvicorn.run(gateway, **options)
            elif settings.workers > 1:
                _serve_workers(settings, with_processor, options)
            elif with_processor:
                from playpulse.service import create_service_app

                uvicorn.run(create_service_app(settings, lock_held=True), **options)
            else:
                from playpulse.collector.app import create_app

                uvicorn.run(create_app(settings), **options)
    except _Stop as stop:
        # SIGTERM is the ordinary way to stop a service (0); Ctrl-C exits as shells do.
        raise typer.Exit(130 if stop.args[0] == signal.SIGINT else 0) from None


def _serve_workers(settings: Settings, with_processor: bool, options: dict[str, Any]) -> None:
    # Several collector processes on one port; the processor (one per data dir) runs in
    # a process of its own, started by this supervising process, which holds the lock.
    # Workers read their settings from the environment and pool their Prometheus
    # metrics in a directory.
    import os
    import shutil

    import uvicorn

    from playpulse.service import ProcessorGroup

    metrics_dir = settings.data_dir / "prometheus"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    os.environ.update(settings.to_env())
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    worker = ProcessorGroup(settings) if with_processor else None
    try:
        if worker is not None:
            worker.start()
        factory = (
            "playpulse.service:create_worker_app_from_env"
            if with_processor
            else "playpulse.collector.app:create_app_from_env"
        )
        uvicorn.run(factory, factory=True, workers=settings.workers, **options)
    finally:
        if worker is not None:
            worker.stop()


@app.command()
def collect(
    host: Host = None,
    port: Port = None,
    write_key: WriteKeys = None,
    write_key_file: WriteKeyFile = None,
    data_dir: DataDir = None,
    access_log: AccessLog = False,
    workers: Workers = None,
) -> None:
    """Run the HTTP collector on the embedded stream in the data dir.

    Write keys: --write-key-file FILE or PLAYPULSE_WRITE_KEYS (--write-key works but
    shows the key to every user of the machine in `ps`)."""
    write_keys = _keys("--write-key", write_key, write_key_file)
    settings = _settings(data_dir, host=host, port=port, write_keys=write_keys, workers=workers)
    _serve(settings, with_processor=False, access_log=access_log)


@app.command()
def up(
    host: Host = None,
    port: Port = None,
    write_key: WriteKeys = None,
    write_key_file: WriteKeyFile = None,
    read_key: Annotated[
        list[str] | None,
        typer.Option(
            "--read-key",
            help="Key for the read API and dashboard (repeatable) [env PLAYPULSE_READ_KEYS]. "
            "Without one they are open to whoever reaches the address.",
        ),
    ] = None,
    read_key_file: ReadKeyFile = None,
    data_dir: DataDir = None,
    access_log: AccessLog = False,
    workers: Workers = None,
    processors: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=64,
            help="Processor processes sharing the stream's partitions as one consumer group "
            "[default 1] [env PLAYPULSE_PROCESSORS].",
        ),
    ] = None,
    pseudonymize_users: PseudonymizeUsers = None,
) -> None:
    """Run the collector, the processor, the read API and the dashboard together.

    Keys: --write-key-file / --read-key-file FILE (one key per line) or
    PLAYPULSE_WRITE_KEYS / PLAYPULSE_READ_KEYS; a file's keys replace the variable's.
    --write-key / --read-key work too, with a warning: `ps` shows them to every user."""
    settings = _settings(
        data_dir,
        host=host,
        port=port,
        write_keys=_keys("--write-key", write_key, write_key_file),
        read_keys=_keys("--read-key", read_key, read_key_file),
        workers=workers,
        processors=processors,
        pseudonymize_users=pseudonymize_users,
    )
    _serve(settings, with_processor=True, access_log=access_log)


@app.command()
def process(data_dir: DataDir = None) -> None:
    """Process everything in the stream now (or wait for a running `playpulse up`)."""
    from playpulse.service import ensure_processed

    stats = ensure_processed(_settings(data_dir))
    if stats is None:
        typer.echo("the running processor has caught up")
        return
    typer.echo(
        f"processed {stats.processed:,} events ({stats.duplicates:,} duplicates dropped, "
        f"{stats.late:,} late, {stats.plays_finished:,} plays finished)"
    )


@app.command()
def compact(data_dir: DataDir = None) -> None:
    """Merge the lake's small Parquet files (query results do not change)."""
    from playpulse.service import compact_lake

    merged = compact_lake(_settings(data_dir))
    typer.echo(", ".join(f"{table}: {n} files merged" for table, n in merged.items()))


@app.command()
def reprocess(
    start: Annotated[
        str | None,
        typer.Option("--from", help="First UTC day (or instant) of plays to replace."),
    ] = None,
    end: Annotated[str | None, typer.Option("--to", help="End, exclusive.")] = None,
    data_dir: DataDir = None,
) -> None:
    """Recompute plays, sessions and the real-time store from the lake's events.

    The way to apply a changed metric rule or repair derived data; the result equals
    processing every event from scratch. With --from/--to only the plays and sessions
    that started in that window are replaced (recomputed from every event, so those
    crossing its edges come out whole). With `playpulse up` running, it does it and
    this waits."""
    from playpulse.service import reprocess_data_dir

    since = _when(start, "--from", "UTC")
    until = _when(end, "--to", "UTC")
    if since is not None and until is not None and until <= since:
        raise ConfigError("--to must be after --from")
    settings = _settings(data_dir)
    last = None if until is None else (until - timedelta(microseconds=1)).date()
    result = reprocess_data_dir(settings, None if since is None else since.date(), last)
    if result is None:
        typer.echo("the running processor has reprocessed the data dir")
        return
    processed = 0 if result.processing is None else result.processing.processed
    typer.echo(
        f"recomputed from {processed:,} events: {result.plays:,} plays and "
        f"{result.sessions:,} sessions written, {result.late_kept:,} late events left late"
        + (f", {result.backfilled:,} pending imported events added" if result.backfilled else "")
    )


@app.command()
def status(data_dir: DataDir = None, fmt: Format = "table", project: ProjectName = None) -> None:
    """The processor's state and last error, distinct events in the lake and records in
    the stream (every append: a file imported twice is there twice), the quarantine's
    size and drops, lake files set aside, partitions, consumer lag and records lost to
    the stream's size limit."""
    from playpulse.lake import corrupt_files
    from playpulse.lake.factory import open_existing_lake
    from playpulse.service import (
        processor_problem,
        processor_status_line,
        read_processor_status,
        status_members,
    )
    from playpulse.status import data_dir_status

    _check_format(fmt)
    settings = _settings(data_dir, project)
    info = data_dir_status(settings)  # refuses a data dir without data
    info["processor"] = {
        **(read_processor_status(settings) or {}),
        "problem": processor_problem(settings),
        "line": processor_status_line(settings),
    }
    members = status_members(settings)
    if len(members) > 1:  # `up --processors N`: every member's own report
        info["processor"]["members"] = {
            f"processor-{m}": read_processor_status(settings, m) for m in members
        }
    lake = open_existing_lake(settings)
    info["lake_files_set_aside"] = [
        {
            "original": f.original,
            "path": str(f.path),
            "reason": f.reason,
            "size_bytes": f.size_bytes,
            "moved_at": None if f.moved_at is None else f.moved_at.isoformat(),
        }
        for f in (corrupt_files(lake) if lake is not None else [])
    ]
    if fmt == "json":
        typer.echo(json.dumps(info, indent=2))
        return

    def mib(n: int | None) -> str:
        return "unbounded" if n is None else f"{n / 2**20:,.1f} MiB"

    q = info["quarantine"]
    out.print(f"data dir     {info['data_dir']}")
    out.print(f"processor    {info['processor']['line']}", markup=False)
    dropped = info["duplicates_dropped"]
    late = info["late_events"]
    processed = (
        "nothing processed yet"
        if dropped is None
        else f"{dropped:,} duplicate records dropped, {late:,} late"
    )
    unreadable = info["lake_files_unreadable"]
    if unreadable:
        processed += f"; {unreadable:,} lake file(s) unreadable, not counted"
    out.print(f"events       {info['events_in_lake']:,} distinct, in the lake ({processed})")
    first, last = info["first_event_at"], info["last_event_at"]
    if first is not None and last is not None:
        out.print(f"data from    {_utc_text(first)} to {_utc_text(last)} (occurred_at, UTC)")
    if late:
        out.print(
            f"late events  {late:,}: kept in the lake (events.late), counted by no metric "
            "(over 7 days behind their user's newer events; docs/metrics.md)"
        )
    size = (
        "size and retention are the broker's"
        if info["stream_bytes"] is None
        else f"{mib(info['stream_bytes'])} of {mib(info['stream_max_bytes'])}"
    )
    records = info["stream_records"]
    counted = "records uncounted (sparse positions)" if records is None else f"{records:,} records"
    out.print(f"stream       {counted}, every append ({size})")
    out.print(
        f"quarantined  {info['quarantined']:,} to replay, {q['entries']:,} entries, "
        f"{mib(q['stored_bytes'])} of {mib(q['max_bytes'])} (file {mib(q['file_bytes'])}), "
        f"kept {q['retention_days']:g} days"
    )
    if q["dropped"]:
        causes = ", ".join(f"{n:,} {cause}" for cause, n in q["dropped_by_cause"].items())
        reasons = ", ".join(f"{n:,} {reason}" for reason, n in q["dropped_by_reason"].items())
        out.print(f"             {q['dropped']:,} dropped before replay ({causes}; {reasons})")
    for aside in info["lake_files_set_aside"]:
        out.print(
            f"lake file set aside (unreadable, its rows are missing): {aside['original']} "
            f"-> {aside['path']}: {aside['reason']}",
            markup=False,
        )
    table = Table("partition", "newest offset", "stream records")
    for p in info["partitions"]:
        newest = "-" if p["newest_offset"] is None else f"{p['newest_offset']:,}"
        table.add_row(str(p["partition"]), newest, f"{p['records']:,}")
    out.print(table)
    for group, lag in info["consumer_lag"].items():
        lost = info["lost_records"].get(group, {"total": 0})["total"]
        line = f"consumer group {group}: lag {lag['total']:,}"
        if lost:
            line += f", LOST {lost:,} records deleted before it committed them"
        out.print(line)


def _utc_text(iso: str) -> str:
    """An ISO 8601 UTC instant as ``2024-01-31 23:59:59``."""
    return datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


@app.command()
def schema() -> None:
    """Print the JSON Schema of the event model."""
    from playpulse.events.codec import event_json_schema

    typer.echo(json.dumps(event_json_schema(), indent=2))


#: The reason codes of quarantine entries (docs/events.md): the collector's, the
#: importers' (``unmappable_event``: another pipeline's payload that maps to no event)
#: and the processor's (``retries_exhausted``).
QUARANTINE_REASONS = (
    "event_too_large",
    "invalid_event",
    "malformed_body",
    "malformed_json",
    "nesting_too_deep",
    "occurred_at_out_of_range",
    "retries_exhausted",
    "unknown_event_type",
    "unmappable_event",
)


@quarantine_app.command("list")
def quarantine_list(
    reason: Annotated[str | None, typer.Option(help="Only this reason code.")] = None,
    include_replayed: Annotated[
        bool, typer.Option("--all", help="Include entries already replayed.")
    ] = False,
    limit: Annotated[int, typer.Option(help="At most this many entries.")] = 50,
    after_id: Annotated[int, typer.Option(help="Entries after this id (paging).")] = 0,
    fmt: Format = "table",
    data_dir: DataDir = None,
    project: ProjectName = None,
) -> None:
    """List quarantined events, oldest first."""
    from playpulse.quarantine.store import QuarantineStore

    _check_format(fmt)
    store = QuarantineStore(_reading_settings(data_dir, project).quarantine_path)
    if reason is not None:
        known = sorted(set(QUARANTINE_REASONS) | set(store.counts_by_reason()))
        if reason not in known:
            raise ConfigError(
                f"--reason: {reason!r} is not a reason code; known: {', '.join(known)}"
            )
    entries = store.list(
        status=None if include_replayed else "quarantined",
        reason=reason,
        limit=limit,
        after_id=after_id,
    )
    if fmt == "json":
        typer.echo(json.dumps([e.summary() for e in entries], indent=2))
        return
    table = Table("id", "received at (UTC)", "reason", "event id", "first error", "status")
    for e in entries:
        first = e.errors[0] if e.errors else {"loc": "", "msg": ""}
        table.add_row(
            str(e.id),
            e.received_at.strftime("%Y-%m-%d %H:%M:%S"),
            e.reason,
            e.event_id or "-",
            f"{first['loc']}: {first['msg']}"[:80],
            e.status,
        )
    out.print(table)
    out.print(f"{store.count():,} quarantined in all")


@quarantine_app.command("show")
def quarantine_show(
    entry_id: Annotated[int, typer.Argument(help="Quarantine entry id.")],
    data_dir: DataDir = None,
    project: ProjectName = None,
) -> None:
    """Show one quarantined event: reason, errors and the raw payload."""
    from playpulse.quarantine.store import QuarantineStore

    entry = QuarantineStore(_reading_settings(data_dir, project).quarantine_path).get(entry_id)
    info = entry.summary()
    info["raw"] = entry.raw.decode("utf-8", errors="replace")
    typer.echo(json.dumps(info, indent=2, ensure_ascii=False))


@quarantine_app.command("replay")
def quarantine_replay(
    entry_ids: Annotated[list[int] | None, typer.Argument(help="Entry ids to replay.")] = None,
    replay_all: Annotated[
        bool, typer.Option("--all", help="Replay every entry still quarantined.")
    ] = False,
    data_dir: DataDir = None,
    project: ProjectName = None,
) -> None:
    """Validate quarantined events again and append those that now pass to the stream."""
    from playpulse.quarantine.replay import replay
    from playpulse.quarantine.store import QuarantineStore
    from playpulse.stream.factory import open_stream

    if not entry_ids and not replay_all:
        raise ConfigError("name entry ids to replay, or pass --all")
    settings = _reading_settings(data_dir, project)
    store = QuarantineStore(settings.quarantine_path)
    stream = open_stream(settings)
    try:
        result = replay(store, stream, None if replay_all else entry_ids)
    finally:
        stream.close()
    typer.echo(result.summary())


@app.command("import")
def import_(
    paths: Annotated[list[Path], typer.Argument(help="Export files or folders.")],
    user: Annotated[
        str | None,
        typer.Option("--user", help="User id for exports that carry none (Spotify 2024+)."),
    ] = None,
    tz: Annotated[
        str | None,
        typer.Option(
            "--tz",
            help="The listener's IANA time zone (Europe/Berlin) for every imported row; "
            "default: the zone of Spotify's conn_country where the country has one.",
        ),
    ] = None,
    schema: Annotated[
        str | None,
        typer.Option(
            "--schema",
            help="Files of another pipeline's payloads (JSON array, NDJSON or delivery "
            "records): audiobook, spotify-tracker, marketplace, playpulse "
            "(docs/event-shapes.md).",
        ),
    ] = None,
    pseudonymize_users: PseudonymizeUsers = None,
    data_dir: DataDir = None,
) -> None:
    """Import exported histories (Spotify, YouTube, Last.fm, Taobao, DIGINETICA).

    Idempotent: importing the same file again changes nothing. When this returns, the
    events are processed and every query answers with them. A corrupt file is reported
    (one error line each, exit code 2 at the end) and the other files are imported. An
    export that names nobody is refused without --user when the data dir already holds
    another such export.
    """
    settings = _settings(data_dir, pseudonymize_users=pseudonymize_users)
    if schema is not None:
        from playpulse.sources.importers.shaped import import_shaped

        if user is not None:
            raise ConfigError("--user does not apply with --schema: the payloads name their users")
        shaped = import_shaped(paths, settings, schema, timezone=tz)
        typer.echo(shaped.summary())
        return
    from playpulse.sources.importers import import_paths

    result = import_paths(paths, settings, user_id=user, progress=True, timezone=tz)
    typer.echo(result.summary())
    for _, problem in result.failed_files:
        typer.echo(f"error: not imported: {problem}", err=True)
    if result.failed_files:
        raise typer.Exit(2)


@app.command()
def demo(
    events: Annotated[int, typer.Option(help="How many events to simulate.")] = 60_000,
    seed: Annotated[int, typer.Option(help="Simulation seed (same seed, same data).")] = 7,
    append: Annotated[
        bool,
        typer.Option(
            "--append",
            help="Add the demo's events to a data dir that already holds events "
            "(refused without it).",
        ),
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Simulate listeners and shoppers, send them through the collector, process them
    and print the key tables. A data dir that already holds events is refused unless
    --append."""
    from rich.progress import Progress

    from playpulse.demo import run_demo

    settings = _settings(data_dir)
    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("sending events", total=events)
        result = run_demo(
            settings,
            events=events,
            seed=seed,
            append=append,
            progress=lambda n: bar.update(task, completed=n),
        )
    for name, table in result.tables.items():
        out.rule(name)
        _print_table(table, "table")
    out.print(
        f"sent {result.sent:,} events over HTTP: {result.accepted:,} accepted, "
        f"{result.rejected:,} rejected (see `playpulse quarantine list`); processed in "
        f"{result.seconds:.1f} s. Data in {settings.data_dir}: run `playpulse up` and open "
        f"http://{settings.host}:{settings.port}/"
    )


def _when(value: str | None, name: str, tz: str) -> datetime | None:
    """``--from``/``--to`` as a UTC instant, read in ``tz`` (a date is midnight there, a
    time without offset is read there; an offset or Z in the value wins:
    :func:`playpulse.query.window.read_bound`); ``None`` when not given."""
    from playpulse.query.catalog import QueryError
    from playpulse.query.window import read_bound

    if value is None:
        return None
    try:
        return read_bound(value, tz).astimezone(UTC)
    except QueryError as exc:
        raise ConfigError(f"{name}: {exc}") from None
    except OverflowError:  # near year 1 or 9999, the offset leaves datetime's range
        raise ConfigError(f"{name}: '{value}' in {tz} is outside the supported range") from None


def _print_table(table: pa.Table, fmt: str) -> None:
    rows = table.to_pylist()
    if fmt == "json":
        typer.echo(json.dumps(rows, default=_json_default, indent=2, ensure_ascii=False))
    elif fmt == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(table.column_names)
        for row in rows:
            writer.writerow(
                [
                    "" if v is None else v if isinstance(v, int | float) else _cell(v)
                    for v in row.values()
                ]
            )
    else:
        view, width = _table_view(table.schema, rows, _console().width)
        out.print(view, width=width)


#: Narrowest a text column of a table gets before the terminal is too narrow for it.
_TEXT_MIN_WIDTH = 12


def _header_lines(name: str, width: int) -> str:
    """``name`` on lines of at most ``width`` characters, broken after underscores where
    it can be (``completion_rate`` at 10: ``completion_`` / ``rate``, cut if need be)."""
    lines: list[str] = []
    for part in re.findall(r"[^_]+_*|_+", name):
        while len(part) > width:
            lines.append(part[:width])
            part = part[width:]
        if lines and len(lines[-1]) + len(part) <= width:
            lines[-1] += part
        elif part:
            lines.append(part)
    return "\n".join(lines)


def _table_view(schema: pa.Schema, rows: list[dict[str, Any]], width: int) -> tuple[Table, int]:
    """``rows`` (of ``schema``) as a rich table for a terminal ``width`` columns wide, and
    the width it needs (more than ``width`` when even its narrowest layout is wider).

    Every cell is plain text (never rich markup). Numbers, times and dates are never cut:
    their columns are as wide as their widest value; when the table is wider than the
    terminal, long headers go onto several lines (broken after underscores) and text
    columns wrap to make room (a word longer than the column folds). A null cell is
    :data:`UNKNOWN_CELL`."""
    cells = [[UNKNOWN_CELL if v is None else _cell(v) for v in row.values()] for row in rows]
    widest = [max((len(row[i]) for row in cells), default=0) for i in range(len(schema))]
    whole = [
        pa.types.is_integer(f.type)
        or pa.types.is_floating(f.type)
        or pa.types.is_decimal(f.type)
        or pa.types.is_temporal(f.type)
        for f in schema
    ]
    natural = 1 + sum(max(w, len(f.name)) + 3 for w, f in zip(widest, schema, strict=True))
    narrow = natural > width
    view = Table()
    needed = 1  # the left border
    for field, longest, number in zip(schema, widest, whole, strict=True):
        header = field.name
        if number:
            low = max(longest, min(len(header), _TEXT_MIN_WIDTH) if narrow else len(header))
            if narrow:
                header = _header_lines(header, low)
            view.add_column(Text(header), justify="right", no_wrap=True, min_width=low)
        else:
            low = max(longest, len(header))
            if narrow:
                low = min(low, _TEXT_MIN_WIDTH)
            view.add_column(Text(header), min_width=low, overflow="fold")
        needed += low + 3  # padding on both sides and the border
    for row in cells:
        view.add_row(*(Text(c) for c in row))
    return view, needed


#: How a table shows a null (unknown) value; JSON has ``null``, CSV an empty cell.
UNKNOWN_CELL = "\u2014"


def _json_default(value: object) -> object:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}".rstrip("0").rstrip(".") if abs(value) < 1e15 else str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, list | dict):
        return json.dumps(value, default=_json_default)
    return str(value)


def _query_params(**options: str | None) -> QueryParams:
    """The query options as :class:`~playpulse.query.catalog.QueryParams`, read exactly
    as the read API reads its query string (:func:`playpulse.api.params.parse_params`),
    so the CLI refuses what the API refuses. ``options`` are the API's parameter names
    with ``start``/``end`` for ``from``/``to``; ``None`` is left out. Raises
    :class:`~playpulse.errors.ConfigError` naming the option (``--content-type: 'song'
    is not one of ...``)."""
    from starlette.datastructures import QueryParams as QueryString

    from playpulse.api.auth import ApiError
    from playpulse.api.params import parse_params

    names = {"start": "from", "end": "to"}
    pairs = [(names.get(k, k), v) for k, v in options.items() if v is not None]
    try:
        return parse_params(QueryString(pairs))
    except ApiError as exc:
        message = exc.message
        for name in sorted({names.get(k, k) for k in options}, key=len, reverse=True):
            for prefix in (f"{name}/", f"{name}:"):
                if message.startswith(prefix):
                    message = f"--{name.replace('_', '-')}{message[len(name) :]}"
        message = message.replace("/to:", "/--to:", 1)
        raise ConfigError(message) from None


@app.command()
def query(
    name: Annotated[str, typer.Argument(help="Catalog query (see `playpulse queries`).")],
    start: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="Start: a date (midnight in --tz) or an ISO time (read in --tz unless it "
            "has an offset or Z).",
        ),
    ] = None,
    end: Annotated[str | None, typer.Option("--to", help="End, exclusive; as --from.")] = None,
    tz: Annotated[
        str,
        typer.Option(help="IANA time zone for days and hours, and for --from/--to."),
    ] = "UTC",
    limit: Annotated[
        str, typer.Option(help="Rows for ranked queries, 1 to 10000.", show_default=False)
    ] = "10",
    content_id: Annotated[str | None, typer.Option(help="Only this content.")] = None,
    creator: Annotated[
        str | None,
        typer.Option(help="Only this creator: exact and case-sensitive, as in the API."),
    ] = None,
    content_type: Annotated[
        str | None, typer.Option(help="audiobook, track, episode or video.")
    ] = None,
    vendor_id: Annotated[str | None, typer.Option(help="Only this vendor.")] = None,
    user_id: Annotated[str | None, typer.Option(help="Only this listener's plays.")] = None,
    device_type: Annotated[
        str | None, typer.Option(help="Only plays on this device type (unknown: not said).")
    ] = None,
    platform: Annotated[
        str | None, typer.Option(help="Only plays on this platform (unknown: not said).")
    ] = None,
    country: Annotated[
        str | None, typer.Option(help="Only plays in this country (DE; unknown: not said).")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="table, json or csv.")] = "table",
    engine: Annotated[
        str,
        typer.Option(
            help="duckdb (embedded), or spark: the same SQL transpiled to Spark SQL, run "
            "by Apache Spark over the same lake (a local lake; needs the spark extra)."
        ),
    ] = "duckdb",
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Write the rows to FILE instead: .parquet, .csv or .json by its extension.",
            show_default=False,
        ),
    ] = None,
    dialect: Annotated[
        str | None,
        typer.Option(help="With --print-sql: bigquery (the SQL for BigQuery).", show_default=False),
    ] = None,
    print_sql: Annotated[
        bool, typer.Option("--print-sql", help="Print the query's SQL in --dialect, run nothing.")
    ] = False,
    data_dir: DataDir = None,
    project: ProjectName = None,
) -> None:
    """Run a metric from the catalog over the lake and the real-time store.

    --from/--to are read in --tz (--from 2024-01-01 --tz Europe/Berlin is Berlin's
    midnight); an explicit offset or Z in the value wins; without --tz they are UTC.
    Without --from/--to it covers the data (from the day of the earliest event to the day
    of the newest, in --tz). Table output ends with the window it used, in --tz."""
    from playpulse.query.catalog import CATALOG, QueryError, run_query
    from playpulse.query.window import resolve_window

    _check_format(fmt, ("table", "json", "csv"))
    if engine not in ("duckdb", "spark"):
        raise ConfigError(f"--engine must be duckdb or spark, not {engine!r}")
    params = _query_params(
        start=start,
        end=end,
        tz=tz,
        limit=limit,
        content_id=content_id,
        creator=creator,
        content_type=content_type,
        vendor_id=vendor_id,
        user_id=user_id,
        device_type=device_type,
        platform=platform,
        country=country,
    )
    if name not in CATALOG:
        raise QueryError(f"unknown query '{name}'; known: {', '.join(sorted(CATALOG))}")
    if dialect is not None or print_sql:
        _print_dialect_sql(name, dialect, print_sql, params.tz)
        return
    settings = _reading_settings(data_dir, project)
    window = None if name == "live" else resolve_window(params, settings)
    if window is not None:
        params = window.params(params)
    if engine == "spark":
        from playpulse.query.spark import run_query_spark

        result = run_query_spark(name, params, settings)
    else:
        result = run_query(name, params, settings)
    if output is not None:
        rows = write_table(result, output)
        typer.echo(f"wrote {rows:,} rows to {output}", err=True)
        return
    _print_table(result, fmt)
    if fmt == "table" and window is not None:
        out.print(f"window: {window.describe(params.tz)}", markup=False)
    filters = {"--creator": creator, "--content-id": content_id, "--user-id": user_id}
    given = [f"{k} {v!r}" for k, v in filters.items() if v is not None]
    if result.num_rows == 0 and given:
        typer.echo(f"no rows: filters match exactly, case-sensitive ({', '.join(given)})", err=True)


def _print_dialect_sql(name: str, dialect: str | None, print_sql: bool, tz: str) -> None:
    """``query NAME --dialect bigquery --print-sql``: the query's SQL in that dialect
    (:func:`playpulse.query.catalog_enrich.bigquery_sql`). Raises ConfigError for one of
    the two options without the other, or another dialect."""
    if dialect is None or not print_sql:
        raise ConfigError("--dialect and --print-sql go together: --dialect bigquery --print-sql")
    if dialect != "bigquery":
        raise ConfigError(f"--dialect must be bigquery, not {dialect!r}")
    from playpulse.query.catalog_enrich import bigquery_sql

    typer.echo(bigquery_sql(name, tz))


#: File formats ``--output`` writes, by file name extension.
OUTPUT_FORMATS = (".parquet", ".csv", ".json")


def write_table(table: pa.Table, path: Path) -> int:
    """Write ``table`` to ``path`` in the format its extension names (``.parquet``;
    ``.csv`` with a header row, nulls empty; ``.json``: an array of row objects, times as
    ISO 8601), replacing the file; returns the number of rows. Raises
    :class:`~playpulse.errors.ConfigError` for another extension or a file that cannot be
    written."""
    suffix = path.suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise ConfigError(
            f"--output {path}: the extension must be one of {', '.join(OUTPUT_FORMATS)}"
        )
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            pq.write_table(table, path)
        elif suffix == ".csv":
            import pyarrow.csv as pcsv

            pcsv.write_csv(table, path)
        else:
            text = json.dumps(
                table.to_pylist(), default=_json_default, indent=2, ensure_ascii=False
            )
            path.write_text(text + "\n", encoding="utf-8")
    except (OSError, pa.ArrowException) as exc:
        raise ConfigError(f"--output {path}: cannot write it ({exc})") from None
    return int(table.num_rows)


@app.command()
def queries() -> None:
    """List the catalog's queries and their columns."""
    from playpulse.query.catalog import CATALOG

    view = Table("name", "answers", "columns")
    for spec in CATALOG.values():
        view.add_row(spec.name, spec.description, ", ".join(spec.columns))
    out.print(view)


#: Why ``playpulse sql`` refused a statement, after DuckDB's own message.
_SANDBOX_HINT = (
    "playpulse sql has no file or network access and its settings are locked; "
    "--allow-files gives it file access"
)


@app.command()
def sql(
    statement: Annotated[
        str | None,
        typer.Argument(
            help="SQL over the views events, plays, segments, sessions, shop_events.",
            show_default=False,
        ),
    ] = None,
    sql_file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            "-f",
            help="Run the SQL in FILE (UTF-8; several statements: the last one's rows "
            "are printed) instead of STATEMENT.",
            show_default=False,
        ),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="table, json or csv.")] = "table",
    allow_files: Annotated[
        bool,
        typer.Option(
            "--allow-files",
            help="Let the SQL read and write files and reach the network as you "
            "(read_csv, COPY ... TO, ATTACH, INSTALL/LOAD, EXPORT DATABASE, SET): off by "
            "default.",
        ),
    ] = False,
    data_dir: DataDir = None,
    project: ProjectName = None,
    key_file: Annotated[
        Path | None,
        typer.Option(
            "--read-key-file",
            help="Run as the project read key in FILE (its one key): that project's data; "
            "a key limited to a vendor sees only a shop_events table of that vendor's rows.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run ad hoc SQL (DuckDB) over the views events, plays, segments, sessions and
    shop_events.

    Sandboxed by default: the SQL reads only those views; reading or writing a file
    (read_csv('/etc/passwd'), COPY ... TO, ATTACH, EXPORT DATABASE), loading an
    extension, reaching the network and SET are refused (DuckDB's
    enable_external_access = false, configuration locked). --allow-files lifts that: the
    SQL can then read and write any file you can, the data dir's lake included (not
    with a vendor's key)."""
    import duckdb

    from playpulse.query.engine import connect

    _check_format(fmt, ("table", "json", "csv"))
    if (statement is None) == (sql_file is None):
        raise ConfigError("give the SQL as STATEMENT or in a file with -f FILE (one of the two)")
    if sql_file is not None:
        try:
            statement = sql_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ConfigError(f"-f {sql_file}: cannot read it ({why})") from None
    assert statement is not None
    if key_file is None:
        con = connect(
            _reading_settings(data_dir, project), sandbox=not allow_files, views_only=True
        )
    else:
        con = _key_connection(_settings(data_dir), project, key_file, allow_files)
    try:
        relation = con.sql(statement)
        table = pa.table({}) if relation is None else relation.to_arrow_table()
    except duckdb.Error as exc:
        first = str(exc).splitlines()[0]
        locked = isinstance(exc, duckdb.PermissionException) or (
            "configuration has been locked" in first
        )
        if locked and not allow_files:
            raise ConfigError(f"SQL refused: {first} ({_SANDBOX_HINT})") from None
        raise ConfigError(f"SQL failed: {first}") from None
    finally:
        con.close()
    _print_table(table, fmt)


def _key_connection(
    settings: Settings, project: str | None, key_file: Path, allow_files: bool
) -> duckdb.DuckDBPyConnection:
    """``playpulse sql --read-key-file``: the connection the read key in ``key_file``
    may query (:mod:`playpulse.projects.sql`): its project's views, or for a key limited
    to a vendor a database of that vendor's shop events only (always sandboxed).
    Raises ConfigError for a file without exactly one key, a key that is not a project
    read key in force, a ``--project`` the key does not belong to, or ``--allow-files``
    with a vendor's key."""
    from playpulse.projects import project_settings
    from playpulse.projects.sql import read_key_scope, vendor_connection
    from playpulse.query.engine import connect

    keys = read_key_file(key_file, "--read-key-file")
    if len(keys) != 1:
        raise ConfigError(
            f"--read-key-file {key_file}: {len(keys)} keys in it; playpulse sql runs as one"
        )
    scoped, vendor = read_key_scope(settings, keys[0])
    if project is not None and project_settings(settings, project).data_dir != scoped.data_dir:
        raise ConfigError(f"the key in {key_file} is not a read key of project {project!r}")
    if vendor is None:
        return connect(scoped, sandbox=not allow_files, views_only=True)
    if allow_files:
        raise ConfigError(
            f"the key in {key_file} is limited to vendor {vendor!r}: --allow-files would "
            "let its SQL read every vendor's files"
        )
    return vendor_connection(scoped, vendor)


#: click's ClickException (typer vendors click from 0.20 on: found through the
#: exceptions typer exports rather than imported from either).
_CLICK_ERROR: type[Any] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"
)


def main() -> None:
    """Entry point of the ``playpulse`` command. Sets the process umask to 0o077 first
    (:func:`playpulse.filemodes.private_umask`): every directory the command creates is
    0700 and every file 0600, in the data dir and outside it, in the processes it starts
    too."""
    private_umask()
    try:
        code = app(standalone_mode=False)
    except PlaypulseError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except _CLICK_ERROR as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # a command given no arguments
            exc.show()  # its help
        else:
            # One line, as every other error: click would print usage lines or a box.
            message = " ".join(exc.format_message().split())
            ctx = getattr(exc, "ctx", None)
            where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            typer.echo(f"error: {message}{where}", err=True)
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(1)
    if isinstance(code, int):  # typer.Exit(code) raised by a command
        sys.exit(code)


if __name__ == "__main__":
    main()
