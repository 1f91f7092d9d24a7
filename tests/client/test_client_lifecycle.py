"""The queue bound, flush, close, the context manager and the flush at exit."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from playpulse.client import Client, ClientOptions, ClientStats

MakeClient = Callable[..., Client]


def _settled(stats: ClientStats) -> int:
    return stats.dropped + stats.queued + stats.accepted + stats.rejected + stats.failed


def test_a_full_queue_drops_without_blocking(
    make_client: MakeClient, stub: Any, errors: Any, fast: ClientOptions, wait_until: Any
) -> None:
    stub.handler = lambda _: stub.Reply(hang=True)  # the collector never answers
    client = make_client(options=replace(fast, batch_size=1, max_queue_size=5, timeout_s=30))
    client.pause(user_id="u", playback_id="p")
    stub.wait_requests(1)  # the thread is stuck in that request now
    started = time.monotonic()
    kept = [client.pause(user_id="u", playback_id="p") for _ in range(5)]
    dropped = [client.pause(user_id="u", playback_id="p") for _ in range(100)]
    took = time.monotonic() - started
    assert took < 2.0  # generous: 105 calls that must not wait for the 30 s request
    assert client.stats == ClientStats(queued=6, dropped=100)
    assert errors.reasons() == ["queue_full"] * 100
    assert errors.event_ids() == dropped
    assert all(e.events == 1 and e.status is None for e in errors.items)

    # flush cannot finish while the collector hangs: it gives up at its timeout.
    started = time.monotonic()
    assert client.flush(0.3) is False
    assert 0.3 <= time.monotonic() - started < 2.0

    # close gives up at its timeout too; what is still queued is reported as failed.
    started = time.monotonic()
    client.close(timeout_s=0.3)
    assert time.monotonic() - started < 2.0
    assert client.stats == ClientStats(queued=1, dropped=100, failed=5)  # 1 still in flight
    assert errors.reasons()[100:] == ["closed"]
    assert errors.event_ids()[100:] == kept
    stub.release.set()  # the hung request ends; its event is settled one way or another
    wait_until(lambda: client.stats.queued == 0)
    stats = client.stats
    assert stats.failed >= 5
    assert _settled(stats) == 106


def test_flush_with_nothing_queued_returns_true_at_once(make_client: MakeClient) -> None:
    client = make_client()
    started = time.monotonic()
    assert client.flush() is True
    assert client.flush(0) is True
    assert time.monotonic() - started < 1.0


def test_flush_sends_everything_queued_before_it(
    make_client: MakeClient, stub: Any, fast: ClientOptions
) -> None:
    client = make_client(options=replace(fast, batch_size=7))
    ids = [client.heartbeat(user_id="u", playback_id="p", position_s=i) for i in range(30)]
    assert client.flush(5) is True
    assert [e["event_id"] for e in stub.events] == ids
    assert client.stats == ClientStats(sent=30, accepted=30)


def test_flush_from_many_threads(make_client: MakeClient, stub: Any) -> None:
    client = make_client()
    results: list[bool] = []

    def work(n: int) -> None:
        for i in range(50):
            client.heartbeat(user_id=f"u{n}", playback_id="p", position_s=i)
        results.append(client.flush(10))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    assert results == [True] * 8
    assert len({e["event_id"] for e in stub.events}) == 400
    assert client.stats == ClientStats(sent=400, accepted=400)


def test_close_sends_what_is_queued_and_is_idempotent(
    stub: Any, errors: Any, fast: ClientOptions
) -> None:
    client = Client(stub.url, options=fast, on_error=errors)
    ids = [client.pause(user_id="u", playback_id="p") for _ in range(3)]
    client.close(timeout_s=5)
    assert client.closed
    assert [e["event_id"] for e in stub.events] == ids
    assert client.stats == ClientStats(sent=3, accepted=3)
    started = time.monotonic()
    client.close()
    client.close(timeout_s=0)
    assert time.monotonic() - started < 0.5
    assert errors.items == []


def test_track_after_close_drops_and_reports(stub: Any, errors: Any, fast: ClientOptions) -> None:
    client = Client(stub.url, options=fast, on_error=errors)
    client.close(timeout_s=5)
    event_id = client.pause(user_id="u", playback_id="p")
    assert errors.reasons() == ["closed"]
    assert errors.event_ids() == [event_id]
    assert client.stats == ClientStats(dropped=1)
    assert client.flush(1) is True  # nothing was queued
    assert stub.requests == []


def test_context_manager_flushes_on_exit(stub: Any, fast: ClientOptions) -> None:
    with Client(stub.url, "k1", options=fast) as client:
        event_id = client.vendor_view(vendor_id="v1", anonymous_id="a")
    assert client.closed
    assert [e["event_id"] for e in stub.events] == [event_id]


def test_close_from_on_error_does_not_deadlock(stub: Any, fast: ClientOptions) -> None:
    holder: list[Client] = []
    flushed: list[bool] = []

    def on_error(_: Any) -> None:
        flushed.append(holder[0].flush(5))  # returns False at once on the client's thread
        holder[0].close()

    stub.reply(stub.Reply(400))
    client = Client(stub.url, options=fast, on_error=on_error)
    holder.append(client)
    client.pause(user_id="u", playback_id="p")
    assert client.flush(5) is False
    assert flushed == [False]
    assert client.closed
    client.close(timeout_s=5)


def test_a_closed_client_is_not_kept_alive(stub: Any, fast: ClientOptions) -> None:
    client = Client(stub.url, options=fast)
    client.pause(user_id="u", playback_id="p")
    client.close(timeout_s=5)
    client._thread.join(5)
    ref = weakref.ref(client)
    del client
    gc.collect()
    assert ref() is None  # the atexit registration does not hold it


def test_events_are_flushed_at_interpreter_exit(stub: Any) -> None:
    script = textwrap.dedent(
        f"""
        from playpulse.client import Client, ClientOptions
        client = Client({stub.url!r}, options=ClientOptions(flush_interval_s=60))
        print(client.pause(user_id="u", playback_id="p"))
        # no close(): the atexit hook sends the event
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True
    )
    event_id = done.stdout.strip()
    assert [e["event_id"] for e in stub.events] == [event_id]


def test_endpoint_checks_and_path_prefix(stub: Any, fast: ClientOptions) -> None:
    for bad in ["ftp://h", "nope", "http://user:pw@h", "http://h/?q=1"]:
        with pytest.raises(ValueError, match="endpoint"):
            Client(bad)
    with pytest.raises(ValueError, match="write_key"):
        Client(stub.url, "")
    with Client(stub.url + "/", options=fast) as client:
        assert client.endpoint == stub.url
        client.pause(user_id="u", playback_id="p")
    with Client(stub.url + "/behind/proxy/", options=fast) as client:
        client.pause(user_id="u", playback_id="p")
    assert [r.path for r in stub.requests] == ["/v1/events", "/behind/proxy/v1/events"]
