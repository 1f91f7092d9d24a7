"""POST /v1/events over a stream that stores some records and not others (issue #12 item 3).

The stream is a real SQLite stream whose ``append_each`` reports some records not stored
(as a Kafka partition without a leader would) and stores the others for real. The
collector must retry only those, and never acknowledge an event that is not in the
stream.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from playpulse.collector import app as collector_app
from playpulse.errors import BackpressureError
from playpulse.stream.base import Appended, AppendResult, EventStream, partition_for_key
from playpulse.stream.memory import MemoryStream
from playpulse.stream.sqlite import SQLiteStream
from playpulse.stream.testing import GatedStream
from playpulse.testing import load_module

# events.py, loaded as a module (tests is not a package: importlib import mode)
_events = load_module(Path(__file__).with_name("events.py"), "playpulse_tests_collector_events")

#: Decides whether a record fails at an attempt: (partition, event_id, how many times this
#: event was appended before) -> the reason it is not stored, or None to store it.
FailPolicy = Callable[[int, str, int], "str | None"]


class FlakyStream(SQLiteStream):
    """A SQLite stream whose ``append_each`` fails the records ``policy`` names and
    stores the others (one real append), as a broker with a partition down would.

    ``sent`` keeps the event_ids of every append_each call, in order, so tests can tell
    what the collector sent again.
    """

    def __init__(self, path: Path, policy: FailPolicy, num_partitions: int = 4) -> None:
        super().__init__(path, num_partitions=num_partitions)
        self.policy = policy
        self.sent: list[list[str]] = []
        self.seen: Counter[str] = Counter()
        self.raise_on_retry: BaseException | None = None
        self.delay_s = 0.0
        self._calls_lock = threading.Lock()

    def append_each(self, records: Sequence[tuple[str, bytes]]) -> AppendResult:
        """Fail what ``policy`` says; append the rest for real, in one transaction."""
        ids = [json.loads(value)["event_id"] for _, value in records]
        with self._calls_lock:
            retry = any(self.seen[i] for i in ids)
            self.sent.append(ids)
            tries = [self.seen[i] for i in ids]
            self.seen.update(ids)
        if self.delay_s:
            time.sleep(self.delay_s)
        if retry and self.raise_on_retry is not None:
            raise self.raise_on_retry
        errors: dict[int, str] = {}
        for n, ((key, _), event_id) in enumerate(zip(records, ids, strict=True)):
            why = self.policy(self.partition_for(key), event_id, tries[n])
            if why is not None:
                errors[n] = why
        keep = [n for n in range(len(records)) if n not in errors]
        landed: list[Appended | None] = [None] * len(records)
        for n, appended in zip(keep, self.append([records[n] for n in keep]), strict=True):
            landed[n] = appended
        return AppendResult(landed, errors)


def event(user: str, **overrides: Any) -> dict[str, Any]:
    """A valid event of ``user``."""
    return _events.event(user_id=user, **overrides)


def metric(url: str, name: str) -> float:
    """The value of the unlabelled sample ``name`` on /metrics (0 when absent)."""
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def stored_ids(stream: EventStream) -> Counter[str]:
    """How many times each event_id is in the stream."""
    ids: Counter[str] = Counter()
    for info in stream.partitions():
        for record in stream.read(info.partition, info.start_offset, 1_000_000):
            ids[json.loads(record.value)["event_id"]] += 1
    return ids


@contextlib.contextmanager
def flaky_collector(
    make_collector: Callable[..., Any], policy: FailPolicy
) -> Iterator[tuple[Any, FlakyStream]]:
    """A real collector on 127.0.0.1 over a :class:`FlakyStream` with ``policy`` (in the
    file of the stream ``make_collector`` opened, which it closes)."""
    made: list[FlakyStream] = []

    def wrap(stream: EventStream) -> EventStream:
        assert isinstance(stream, SQLiteStream)
        stream.close()
        made.append(FlakyStream(stream.path, policy))
        return made[-1]

    try:
        with make_collector(wrap=wrap) as running:
            yield running, made[0]
    finally:
        for stream in made:
            stream.close()


def users_by_partition(num_partitions: int = 4) -> dict[int, list[str]]:
    """Two users per partition (u0, u1, ... by the stream's CRC-32 key hash)."""
    by: dict[int, list[str]] = {p: [] for p in range(num_partitions)}
    n = 0
    while any(len(users) < 2 for users in by.values()):
        user = f"u{n}"
        users = by[partition_for_key(user, num_partitions)]
        if len(users) < 2:
            users.append(user)
        n += 1
    return by


USERS = users_by_partition()
DOWN = 2  # the partition that fails


def request_events() -> tuple[list[dict[str, Any]], list[int]]:
    """Eleven valid events over every partition, two invalid ones among them, and the
    indexes of the invalid ones."""
    events: list[dict[str, Any]] = []
    for p in range(4):
        for user in USERS[p]:
            events.append(event(user))
    events.insert(3, event("u-bad", event_type="telepathy"))
    events.append(event(USERS[DOWN][0], occurred_at="not a time"))
    events += [event(USERS[DOWN][1]), event(USERS[0][0]), event(USERS[DOWN][0])]
    return events, [3, 9]


def test_failures_a_retry_fixes_are_acknowledged_and_stored_once(make_collector):
    def policy(partition: int, event_id: str, tries: int) -> str | None:
        return "partition 2 has no leader" if partition == DOWN and tries < 2 else None

    with flaky_collector(make_collector, policy) as (running, stream):
        events, invalid = request_events()
        response = running.post(json.dumps(events))
        assert response.status_code == 200, response.text
        assert response.json()["accepted"] == len(events) - 2
        assert [r["index"] for r in response.json()["rejected"]] == invalid
        valid = [e["event_id"] for n, e in enumerate(events) if n not in invalid]
        assert stored_ids(stream) == Counter(valid)  # every one exactly once
        down = {e["event_id"] for e in events if e["user_id"] in USERS[DOWN]} & set(valid)
        # The first append sent every valid event; each retry only those of partition 2.
        assert [set(ids) for ids in stream.sent] == [set(valid), down, down]
        assert metric(running.url, "playpulse_stream_append_retries_total") == 2
        assert metric(running.url, "playpulse_stream_append_failed_records_total") == 2 * len(down)
        assert metric(running.url, "playpulse_events_not_stored_total") == 0
        assert metric(running.url, "playpulse_events_accepted_total") == len(valid)


def test_a_partition_that_stays_down_is_503_naming_the_events_not_stored(make_collector):
    def policy(partition: int, event_id: str, tries: int) -> str | None:
        return "partition 2 has no leader" if partition == DOWN else None

    with flaky_collector(make_collector, policy) as (running, stream):
        events, invalid = request_events()
        response = running.post(json.dumps(events))
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "1"
        error = response.json()["error"]
        assert error["code"] == "stream_unavailable"
        down = [n for n, e in enumerate(events) if e["user_id"] in USERS[DOWN] and n not in invalid]
        assert error["not_stored"] == down
        assert error["stored"] == len(events) - 2 - len(down)
        assert [r["index"] for r in error["rejected"]] == invalid
        assert f"{len(down)} of the {len(events) - 2} valid events" in error["message"]
        assert "partition 2 has no leader" in error["message"]
        # The answer is as the OpenAPI documents it, every field of it documented.
        document = httpx.get(f"{running.url}/openapi.json", timeout=10).json()
        schema = document["components"]["schemas"]["Error"]
        jsonschema.validate(response.json(), {**schema, "components": document["components"]})
        assert set(error) <= set(schema["properties"]["error"]["properties"])
        stored = stored_ids(stream)
        acknowledged = [
            e["event_id"] for n, e in enumerate(events) if n not in invalid and n not in down
        ]
        assert stored == Counter(acknowledged)  # stored ones once, failed ones not at all
        assert metric(running.url, "playpulse_events_not_stored_total") == len(down)
        assert metric(running.url, "playpulse_stream_append_failed_records_total") == 3 * len(down)
        assert metric(running.url, "playpulse_stream_append_retries_total") == 2
        assert metric(running.url, "playpulse_events_accepted_total") == len(acknowledged)
        # Sending only the failed ones again, once the partition is back, stores them.
        stream.policy = lambda partition, event_id, tries: None
        again = running.post(json.dumps([events[n] for n in down]))
        assert again.status_code == 200, again.text
        valid = [e["event_id"] for n, e in enumerate(events) if n not in invalid]
        assert stored_ids(stream) == Counter(valid)


def test_a_slow_failing_append_is_not_retried_past_the_budget(make_collector):
    def policy(partition: int, event_id: str, tries: int) -> str | None:
        return "delivery timed out"

    with flaky_collector(make_collector, policy) as (running, stream):
        stream.delay_s = collector_app.APPEND_RETRY_BUDGET_S + 0.1
        response = running.post(json.dumps([event("u1")]))
        assert response.status_code == 503, response.text
        assert response.json()["error"]["not_stored"] == [0]
        assert len(stream.sent) == 1  # no retry began after the budget was spent


@pytest.mark.parametrize(
    "error", [BackpressureError("partition 2 is throttled"), RuntimeError("a producer bug")]
)
def test_an_error_raised_by_a_retry_fails_only_the_records_retried(make_collector, error):
    def policy(partition: int, event_id: str, tries: int) -> str | None:
        return "no leader" if partition == DOWN else None

    with flaky_collector(make_collector, policy) as (running, stream):
        stream.raise_on_retry = error
        events = [event(USERS[DOWN][0]), event(USERS[0][0])]
        response = running.post(json.dumps(events))
        assert response.status_code == 503, response.text
        body = response.json()["error"]
        assert (body["stored"], body["not_stored"]) == (1, [0])
        assert stored_ids(stream) == Counter([events[1]["event_id"]])


def test_backpressure_on_the_first_append_is_still_429(make_collector):
    with flaky_collector(make_collector, lambda p, e, t: None) as (running, stream):

        def refuse(records: Sequence[tuple[str, bytes]]) -> AppendResult:
            raise BackpressureError("the stream is full", retry_after_s=2)

        stream.append_each = refuse  # type: ignore[method-assign]
        response = running.post(json.dumps([event("u1")]))
        assert response.status_code == 429
        assert response.headers["retry-after"] == "2"
        assert stored_ids(stream) == Counter()


def test_the_fast_path_is_taken_only_where_append_offsets_says_what_append_each_would(
    tmp_path,
):
    class OwnAppend(SQLiteStream):
        def append(self, records: Sequence[tuple[str, bytes]]) -> list[Appended]:
            raise AssertionError("not this one")

    sqlite = SQLiteStream(tmp_path / "a.db", num_partitions=2)
    own = OwnAppend(tmp_path / "b.db", num_partitions=2)
    flaky_stream = FlakyStream(tmp_path / "c.db", lambda p, e, t: None)
    try:
        assert collector_app._appends_all_or_nothing(sqlite)
        assert collector_app._appends_all_or_nothing(MemoryStream(num_partitions=2))
        assert collector_app._appends_all_or_nothing(GatedStream(sqlite))
        assert not collector_app._appends_all_or_nothing(own)  # its append_offsets skips it
        assert not collector_app._appends_all_or_nothing(flaky_stream)  # own append_each
    finally:
        for stream in (sqlite, own, flaky_stream):
            stream.close()


# For each event: None = invalid, else how many attempts fail before it is stored
# (APPEND_ATTEMPTS or more: never stored by this request).
_plans = st.lists(
    st.tuples(st.one_of(st.none(), st.integers(0, 4)), st.integers(0, 7)), min_size=1, max_size=12
)


def test_never_an_acknowledged_event_missing_nor_a_duplicate(make_collector, monkeypatch):
    # Short pauses: what is tested is which records are sent again, not when.
    monkeypatch.setattr(collector_app, "APPEND_RETRY_DELAYS_S", (0.001, 0.002))
    failures: dict[str, int] = {}

    def policy(partition: int, event_id: str, tries: int) -> str | None:
        return "injected" if tries < failures.get(event_id, 0) else None

    attempts = collector_app.APPEND_ATTEMPTS
    with flaky_collector(make_collector, policy) as (running, stream):

        @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(plans=_plans)
        def check(plans: list[tuple[int | None, int]]) -> None:
            stream.sent.clear()
            events, fails = [], {}
            for n, (plan, user) in enumerate(plans):
                if plan is None:
                    events.append(event(f"u{user}", event_type="telepathy"))
                else:
                    events.append(event(f"u{user}"))
                    fails[n] = failures[events[-1]["event_id"]] = plan
            before = stored_ids(stream)
            response = running.post(json.dumps(events))
            stored = stored_ids(stream) - before
            lost = [n for n, k in fails.items() if k >= attempts]
            assert response.status_code in (200, 503), response.text
            if response.status_code == 200:
                assert not lost
                assert response.json()["accepted"] == len(fails)
            else:
                error = response.json()["error"]
                assert error["code"] == "stream_unavailable"
                assert error["not_stored"] == lost
                assert error["stored"] == len(fails) - len(lost)
            # Every acknowledged event is in the stream exactly once; no other one is.
            assert stored == Counter(events[n]["event_id"] for n in fails if n not in lost)
            # A record is never sent again once stored, nor twice in one append.
            sent = Counter(i for ids in stream.sent for i in ids)
            for n, k in fails.items():
                assert sent[events[n]["event_id"]] == min(k + 1, attempts)
            assert all(len(set(ids)) == len(ids) for ids in stream.sent)

        check()
