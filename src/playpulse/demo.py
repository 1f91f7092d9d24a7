"""``playpulse demo``: a realistic workload through the whole pipeline, in under a minute.

It starts the collector and the processor on 127.0.0.1 (a free port) on the data dir,
simulates listeners and shoppers over the last days (audiobooks with chapters, music
with skips, podcasts, videos in the background, a shop funnel; duplicates, out-of-order
and late deliveries, a few invalid events for the quarantine), POSTs them to
``/v1/events`` in gzip batches exactly as apps would, waits until every event is
processed, and returns the key tables.

**The same seed gives the same data.** The simulated days are anchored to a fixed
instant, not to the clock: the start of the current UTC day unless ``anchor`` says
otherwise (:func:`demo_anchor`), so two runs with one seed on one day (or with one
``anchor``) into fresh data dirs send the same events, and the catalog answers the same.
The demo refuses a data dir that already holds events (it would add its own to them,
and an earlier demo's events again under new receipt times) unless ``append``.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pyarrow as pa
import uvicorn

from playpulse.config import Settings
from playpulse.errors import PlaypulseError
from playpulse.query.catalog import QueryParams, run_query
from playpulse.service import create_service_app
from playpulse.sources.simulator import SimulationConfig, simulate
from playpulse.store.factory import open_store
from playpulse.stream.factory import open_stream

#: Tables ``playpulse demo`` prints, in order, with the columns it shows.
DEMO_QUERIES: dict[str, tuple[str, ...]] = {
    "overview": (
        "plays",
        "streams",
        "listeners",
        "listening_s",
        "sessions",
        "completion_rate",
        "skip_rate",
    ),
    "top_content": ("title", "creator", "content_type", "plays", "listeners", "listening_s"),
    "top_creators": ("creator", "plays", "listeners", "listening_s"),
    "devices": ("platform", "device_type", "plays", "listeners", "listening_s"),
    "funnel": (
        "vendor_id",
        "views",
        "cart_adds",
        "completed_orders",
        "view_to_order",
        "revenue_minor",
        "currency",
    ),
}


@dataclass
class DemoResult:
    """What the demo sent and what came back."""

    sent: int
    accepted: int
    rejected: int
    seconds: float
    tables: dict[str, pa.Table]


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _batches(config: SimulationConfig, size: int) -> Iterator[list[dict[str, object]]]:
    batch: list[dict[str, object]] = []
    for event in simulate(config):
        batch.append(event.payload)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def demo_anchor(now: datetime | None = None) -> datetime:
    """The instant the demo's simulated days are anchored to: the start (00:00 UTC) of
    ``now``'s UTC day (default: the clock's). The days end 8 hours before it."""
    now = now or datetime.now(UTC)
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def stored_events(settings: Settings) -> int:
    """How many events the data dir's embedded stream holds (0 without one; streams
    elsewhere, such as Kafka or Kinesis, are not counted)."""
    if settings.stream_url is not None and not settings.stream_url.startswith("sqlite"):
        return 0
    if not settings.stream_path.exists():
        return 0
    stream = open_stream(settings)
    try:
        return sum(p.end_offset - p.start_offset for p in stream.partitions())
    finally:
        stream.close()


def run_demo(
    settings: Settings,
    *,
    events: int = 60_000,
    seed: int = 7,
    progress: Callable[[int], None] | None = None,
    timeout_s: float = 300.0,
    anchor: datetime | None = None,
    append: bool = False,
) -> DemoResult:
    """Send ``events`` simulated events through a collector + processor on the data dir.

    The simulated three days end 8 hours before ``anchor`` (UTC-aware; default
    :func:`demo_anchor`: today's 00:00 UTC), so the dashboard's default time range shows
    them; the same ``seed``, ``events`` and ``anchor`` give the same events. ``progress``
    is called with the number of events sent so far. Raises
    :class:`~playpulse.errors.PlaypulseError` when the data dir already holds events
    (unless ``append``), the server does not start or the events are not processed
    within ``timeout_s``.
    """
    held = 0 if append else stored_events(settings)
    if held:
        raise PlaypulseError(
            f"{settings.data_dir} already holds {held:,} events: the demo would add its own "
            "to them; use a new --data-dir (or delete this one)"
        )
    if anchor is not None and anchor.tzinfo is None:
        raise PlaypulseError("the demo's anchor must carry a time zone, such as UTC")
    anchor = (anchor or demo_anchor()).astimezone(UTC)
    started = time.monotonic()
    host = "127.0.0.1"
    port = _free_port(host)
    run_settings = settings.model_copy(update={"host": host, "port": port})
    app = create_service_app(run_settings)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise PlaypulseError(
                f"the demo server did not start on {host}:{port} (is another `playpulse up` "
                f"running on {settings.data_dir}? stop it or use another --data-dir)"
            )
        time.sleep(0.05)
    duration = timedelta(days=3)
    # Size the population for about ``events`` events over three days that end 8 hours
    # before the anchor (sessions run on past the window's end), so the dashboard's
    # default range shows them.
    sized = SimulationConfig(seed=seed, invalid_rate=0.002).with_target_events(events)
    config = dataclasses.replace(
        sized, start=anchor - duration - timedelta(hours=8), duration=duration
    )
    sent = accepted = rejected = 0
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    if settings.write_keys:
        headers["Authorization"] = f"Bearer {settings.write_keys[0].get_secret_value()}"
    try:
        with httpx.Client(base_url=f"http://{host}:{port}", timeout=60) as client:
            for batch in _batches(config, 500):
                body = gzip.compress(json.dumps(batch).encode(), compresslevel=1)
                response = client.post("/v1/events", content=body, headers=headers)
                if response.status_code != 200:
                    raise PlaypulseError(
                        f"the collector answered {response.status_code}: {response.text[:200]}"
                    )
                result = response.json()
                sent += len(batch)
                accepted += result["accepted"]
                rejected += len(result["rejected"])
                if progress:
                    progress(sent)
        _wait_processed(run_settings, deadline=time.monotonic() + timeout_s)
        window = QueryParams(
            start=config.start - timedelta(days=30), end=anchor + timedelta(days=1)
        )
        tables = {
            name: run_query(name, window.model_copy(update={"limit": 5}), run_settings).select(
                list(columns)
            )
            for name, columns in DEMO_QUERIES.items()
        }
    finally:
        server.should_exit = True
        thread.join(15)
    return DemoResult(sent, accepted, rejected, time.monotonic() - started, tables)


def _wait_processed(settings: Settings, deadline: float) -> None:
    stream = open_stream(settings)
    store = open_store(settings)
    try:
        targets = {p.partition: p.end_offset for p in stream.partitions()}
        while True:
            done = store.offsets("processor")
            if all(done.get(p, 0) >= end for p, end in targets.items() if end > 0):
                return
            if time.monotonic() > deadline:
                raise PlaypulseError("the demo's events were not processed in time")
            time.sleep(0.1)
    finally:
        stream.close()
        store.close()
