"""Live tiles: one snapshot of "now", shared by every dashboard that listens.

A snapshot is the catalog's ``live`` query (concurrent listeners, events in the last
minute, freshness, top content now) plus the number of quarantined events. While
someone listens it is recomputed every :data:`MAX_AGE_S` seconds, and as soon as
:data:`MIN_INTERVAL_S` allows when the processor has committed new events (a cheap
check of its offsets in the real-time store every :data:`CHECK_INTERVAL_S`). So a new
``play_start`` reaches the tiles in about a second, and one computation serves every
listener. Between snapshots the dashboard ages ``freshness_s`` by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from starlette.concurrency import run_in_threadpool

from playpulse.api.encode import json_value
from playpulse.config import Settings
from playpulse.processor.pipeline import ProcessorOptions
from playpulse.quarantine.store import open_quarantine
from playpulse.query.catalog import run_query
from playpulse.store.factory import open_store, store_exists

#: A snapshot older than this is recomputed whatever happened (listeners expire).
MAX_AGE_S = 2.0
#: Least time between two computations, however busy the processor is.
MIN_INTERVAL_S = 0.75
#: How often listeners look for a new snapshot and the processor's offsets are checked.
CHECK_INTERVAL_S = 0.25
#: EventSource reconnection delay sent to browsers (milliseconds).
RETRY_MS = 1000

log = logging.getLogger("playpulse.api")
_CONSUMER = ProcessorOptions().consumer


def compute_snapshot(settings: Settings, now: datetime | None = None) -> dict[str, Any]:
    """The live tiles now: ``at`` (ISO, UTC), ``concurrent_listeners``,
    ``events_last_minute``, ``freshness_s`` (age in seconds of the newest processed
    event's receipt; null before any), ``quarantined`` and ``top_content``."""
    now = now or datetime.now(UTC)
    row = run_query("live", settings=settings, now=now).to_pylist()[0]
    quarantined = 0
    if settings.quarantine_path.exists():
        store = open_quarantine(settings)
        try:
            quarantined = store.count()
        finally:
            store.close()
    snapshot = {"at": now, **row, "quarantined": quarantined}
    return {str(k): json_value(v) for k, v in snapshot.items()}


def _marker(settings: Settings) -> int | None:
    # The processor's committed offsets grow with every batch it takes in: a cheap sign
    # that the live figures may have changed.
    if not store_exists(settings):
        return None
    store = open_store(settings)
    try:
        return sum(store.offsets(_CONSUMER).values())
    finally:
        store.close()


class LiveFeed:
    """Caches the live snapshot for every listener of one app.

    :meth:`current` returns the cached snapshot, recomputing it (in a worker thread) when
    it is older than :data:`MAX_AGE_S`, or older than :data:`MIN_INTERVAL_S` and the
    processor has committed new events since.
    Each snapshot carries a ``seq`` number that grows with every recomputation.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = asyncio.Lock()
        self._snapshot: dict[str, Any] | None = None
        self._computed = 0.0
        self._checked = 0.0
        self._seen_marker: int | None = None
        self._seq = 0
        self._closing = asyncio.Event()

    def close(self) -> None:
        """End every open stream at its next tick (the server is stopping)."""
        self._closing.set()

    def reopen(self) -> None:
        """Serve streams again after :meth:`close` (an app started anew, on a new loop)."""
        self._lock = asyncio.Lock()
        self._closing = asyncio.Event()

    def close_on_exit_signals(self) -> Callable[[], None]:
        """Chain the SIGINT and SIGTERM handlers (uvicorn's, while it serves) so that a
        stop request also ends the open streams at once; otherwise uvicorn would wait
        for them until its graceful-shutdown timeout. Returns the function that puts
        the previous handlers back. Does nothing off the main thread."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        loop = asyncio.get_running_loop()
        previous: dict[int, Any] = {}

        def handler(signum: int, frame: FrameType | None) -> None:
            loop.call_soon_threadsafe(self.close)
            before = previous.get(signum)
            if callable(before):
                before(signum, frame)
            elif before == signal.SIG_DFL:
                signal.signal(signum, signal.SIG_DFL)
                signal.raise_signal(signum)

        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.getsignal(signum)
            signal.signal(signum, handler)

        def restore() -> None:
            for signum, before in previous.items():
                if signal.getsignal(signum) is handler:
                    signal.signal(signum, before)

        return restore

    async def _refresh(self, marker: int | None) -> None:
        snapshot = await run_in_threadpool(compute_snapshot, self.settings)
        self._seq += 1
        snapshot["seq"] = self._seq
        self._snapshot = snapshot
        self._computed = self._checked = time.monotonic()
        self._seen_marker = marker

    async def current(self) -> dict[str, Any]:
        """The newest snapshot (see the class docstring)."""
        async with self._lock:
            now = time.monotonic()
            if self._snapshot is None or now - self._computed >= MAX_AGE_S:
                await self._refresh(await run_in_threadpool(_marker, self.settings))
            elif (
                now - self._computed >= MIN_INTERVAL_S
                and now - self._checked >= CHECK_INTERVAL_S * 0.8
            ):
                self._checked = now
                marker = await run_in_threadpool(_marker, self.settings)
                if marker != self._seen_marker:
                    await self._refresh(marker)
            assert self._snapshot is not None
            return self._snapshot

    async def events(self, max_events: int | None = None) -> AsyncIterator[str]:
        """Server-sent events: a ``retry`` line, then an ``event: live`` with the snapshot
        as JSON whenever there is a new one (at least every :data:`MAX_AGE_S` s). Stops after
        ``max_events`` snapshots when given, and when :meth:`close` is called."""
        yield f"retry: {RETRY_MS}\n\n"
        sent_seq = -1
        count = 0
        while (max_events is None or count < max_events) and not self._closing.is_set():
            pause = CHECK_INTERVAL_S
            try:
                snapshot = await self.current()
            except Exception:  # keep the stream; a later tick tries again
                log.exception("computing the live snapshot failed")
                snapshot, pause = {"seq": sent_seq}, MAX_AGE_S
            if snapshot["seq"] != sent_seq:
                sent_seq = snapshot["seq"]
                count += 1
                yield f"event: live\nid: {sent_seq}\ndata: {json.dumps(snapshot)}\n\n"
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), pause)
