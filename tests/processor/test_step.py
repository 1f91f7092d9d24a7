"""The processor's pure step with no store at all: plain dicts answer its reads, and a
small model folds its results (what a store's ``apply`` does)."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from playpulse.events.codec import validate_event
from playpulse.processor.pipeline import ProcessorOptions
from playpulse.processor.step import (
    ListStates,
    Memory,
    Read,
    ReadDedup,
    ReadStates,
    StepResult,
    run_step,
    step,
    step_on,
)
from playpulse.stream.base import Batch, Record

T0 = datetime(2026, 11, 20, 23, 50, 0, tzinfo=UTC)
RECEIVED = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
CONTENT = {"content_id": "book-1", "content_type": "audiobook", "duration_s": 3600}
OPTIONS = ProcessorOptions()


def ev(kind: str, at_s: float, n: int, **extra: Any) -> dict[str, Any]:
    e: dict[str, Any] = {
        "event_id": f"e{n}",
        "event_type": kind,
        "occurred_at": (T0 + timedelta(seconds=at_s)).isoformat(),
        "user_id": "u1",
        "playback_id": "p1",
        "content": CONTENT,
        "position_s": at_s,
        "context": {"device_type": "mobile", "platform": "ios"},
    }
    e.update(extra)
    return e


def payload(event: dict[str, Any], received_at: datetime = RECEIVED) -> bytes:
    return validate_event(json.dumps(event), received_at).payload


def records(payloads: list[bytes], first_offset: int = 0) -> list[Record]:
    return [Record(0, first_offset + i, "u1", value, RECEIVED) for i, value in enumerate(payloads)]


class Model:
    """What a store keeps of the step's results (states, dedup keys, counters, sets),
    and the newest lake row of each play and session."""

    def __init__(self) -> None:
        self.states: dict[str, bytes] = {}
        self.dedup: dict[str, datetime] = {}
        self.counters: dict[tuple[str, str], dict[str, float]] = defaultdict(
            lambda: defaultdict(float)
        )
        self.members: set[tuple[str, str]] = set()
        self.plays: dict[str, dict[str, Any]] = {}
        self.sessions: dict[tuple[str, datetime], dict[str, Any]] = {}
        self.quarantined: list[str | None] = []
        self.memory = Memory()

    def process(self, batch: Batch) -> StepResult:
        result = step_on(self.states, self.dedup, self.memory, [batch], OPTIONS)
        for key, blob in result.batch.states.items():
            if blob is None:
                self.states.pop(key, None)
            else:
                self.states[key] = blob
        self.dedup.update(result.batch.dedup)
        for item, amounts in result.batch.increments.items():
            for name, amount in amounts.items():
                self.counters[item][name] += amount
        self.members |= result.batch.members
        for row in result.play_rows:
            self.plays[row["play_key"]] = {k: v for k, v in row.items() if k != "version"}
        for row in result.session_rows:
            key = (row["user_id"], row["started_at"])
            if row["deleted"]:  # a tombstone: merged into another session, or open again
                self.sessions.pop(key, None)
            else:
                self.sessions[key] = {k: v for k, v in row.items() if k != "version"}
        self.quarantined += [r.origin for r in result.rejections]
        return result

    def totals(self) -> dict[tuple[str, str, str], float]:
        """Every non-zero counter, rounded to the microsecond (sums of differences)."""
        return {
            (pk, sk, name): round(value, 6)
            for (pk, sk), amounts in self.counters.items()
            for name, value in amounts.items()
            if round(value, 6) != 0
        }


def run_in_batches(payloads: list[bytes], cuts: list[int]) -> Model:
    model = Model()
    bounds = [0, *sorted(set(cuts)), len(payloads)]
    for start, end in pairwise(bounds):
        if start < end:
            model.process(Batch(0, records(payloads[start:end], start)))
    return model


PLAY = [
    ev("play_start", 0, 1),
    ev("heartbeat", 30, 2),
    ev("pause", 50, 3),
    ev("resume", 110, 4, position_s=50),
    ev("heartbeat", 140, 5, position_s=80),
    ev("play_end", 150, 6, position_s=90, reason="stopped"),
]


def test_a_play_in_one_step_gives_its_counters_listeners_and_lake_row() -> None:
    model = Model()
    result = model.process(Batch(0, records([payload(e) for e in PLAY])))
    assert (result.stats.read, result.stats.processed, result.stats.plays_finished) == (6, 6, 1)
    assert result.batch.offsets == {0: 6}
    assert len(result.event_rows) == 6
    assert model.counters[("CONTENT#book-1", "DAY#2026-11-20")]["plays"] == 1
    # Playing 0-50 and 110-150 s from 23:50: 90 s, 10 min before midnight UTC.
    assert model.counters[("CONTENT#book-1", "DAY#2026-11-20")]["playing_time_s"] == (
        pytest.approx(90.0, abs=1e-6)
    )
    assert ("LISTENERS#CONTENT#book-1#2026-11-20", "u1") in model.members
    assert model.plays["p1"]["end_reason"] == "stopped"


def test_the_step_asks_for_what_it_needs_and_takes_only_the_answers() -> None:
    """No store: each read is named, answered by the caller, and the first one is the
    partition's watermark."""
    reads: list[Read] = []

    def answer(read: Read) -> Any:
        reads.append(read)
        return [] if isinstance(read, ListStates) else {}

    batch = Batch(0, records([payload(PLAY[0]), b"not json"]))
    result = run_step(step(Memory(), [batch], OPTIONS), answer)
    assert reads[0] == ReadStates(("WM#0",))
    assert ReadStates(("UWM#u1",)) in reads
    assert any(isinstance(r, ReadDedup) and len(r.keys) == 1 for r in reads)
    assert ReadStates(("PLAY#0#p1",)) in reads
    assert [r.origin for r in result.rejections] == ["stream/0/1"]
    assert (result.stats.read, result.stats.processed, result.stats.quarantined) == (2, 1, 1)


def test_two_batches_of_one_partition_in_one_step_are_refused() -> None:
    batch = Batch(0, records([payload(PLAY[0])]))
    with pytest.raises(ValueError, match="at most one batch per partition"):
        step_on({}, {}, Memory(), [batch, batch], OPTIONS)


def test_a_play_not_in_memory_is_rebuilt_from_the_chunks_the_step_asks_for() -> None:
    """A second load round: the step reads a play's state, then the event chunks it
    names; the result is the one from memory."""
    first = [payload(e) for e in PLAY[:3]]
    rest = [payload(e) for e in PLAY[3:]]
    cached = Model()
    cached.process(Batch(0, records(first)))
    cold = Model()
    cold.process(Batch(0, records(first)))
    cold.memory = Memory()  # as after a restart, or a play dropped from the cache
    asked: list[Read] = []

    def answer(read: Read) -> Any:
        asked.append(read)
        if isinstance(read, ReadStates):
            return {k: cold.states[k] for k in read.keys if k in cold.states}
        if isinstance(read, ReadDedup):
            return {k: cold.dedup[k] for k in read.keys if k in cold.dedup}
        return sorted(k for k in cold.states if k.startswith(read.prefix))

    result = run_step(step(cold.memory, [Batch(0, records(rest, 3))], OPTIONS), answer)
    assert ReadStates(("PEV#0#p1#2",)) in asked
    expected = cached.process(Batch(0, records(rest, 3)))
    assert result.batch.increments == expected.batch.increments
    assert result.play_rows == expected.play_rows


def test_a_copy_in_a_later_batch_is_a_duplicate() -> None:
    model = Model()
    model.process(Batch(0, records([payload(e) for e in PLAY])))
    again = model.process(Batch(0, records([payload(PLAY[1], RECEIVED + timedelta(hours=1))], 6)))
    assert (again.stats.duplicates, again.stats.processed) == (1, 0)
    assert model.counters[("PIPELINE", "TOTAL")]["duplicates"] == 1
    assert model.counters[("CONTENT#book-1", "DAY#2026-11-20")]["plays"] == 1


KINDS = ["heartbeat", "pause", "resume", "buffer_start", "buffer_end", "seek", "play_end"]


@st.composite
def workloads(draw: st.DrawFn) -> tuple[list[bytes], list[int]]:
    """Events of a few plays of two users (out of order, with gaps past the idle
    timeout, copies), and where to cut them into batches."""
    n = draw(st.integers(min_value=1, max_value=40))
    events = []
    for i in range(n):
        user = draw(st.sampled_from(["u1", "u2"]))
        play = draw(st.sampled_from(["a", "b", "c"]))
        kind = "play_start" if i < 2 else draw(st.sampled_from(KINDS))
        at_s = draw(st.integers(min_value=0, max_value=4 * 3600))
        extra: dict[str, Any] = {
            "play_end": {"reason": "stopped"},
            "seek": {"from_position_s": 0},
        }.get(kind, {})
        events.append(
            payload(ev(kind, at_s, i, user_id=user, playback_id=f"{user}-{play}", **extra))
        )
        if draw(st.booleans()) and draw(st.booleans()):
            events.append(events[-1])  # a copy: a duplicate
    cuts = draw(st.lists(st.integers(min_value=1, max_value=len(events)), max_size=8))
    return events, cuts


@settings(max_examples=60, deadline=None)
@given(workloads())
def test_batch_boundaries_never_change_the_result(work: tuple[list[bytes], list[int]]) -> None:
    events, cuts = work
    whole = run_in_batches(events, [])
    cut = run_in_batches(events, cuts)
    one_by_one = run_in_batches(events, list(range(1, len(events))))
    assert cut.totals() == whole.totals()
    assert one_by_one.totals() == whole.totals()
    assert cut.members == whole.members == one_by_one.members
    for pieces in (cut, one_by_one):
        # Every play the whole run finished has the same newest lake row. Known gap
        # (reported in #12): a play closed idle by one batch and reopened by a later
        # event (within the idle timeout of the watermark again) keeps its closed row
        # in the lake while it is open: the only extra rows are of plays still open.
        assert {k: v for k, v in pieces.plays.items() if k in whole.plays} == whole.plays
        still_open = set(whole.memory.open_plays[0])
        assert set(pieces.plays) - set(whole.plays) <= still_open
    assert cut.sessions == whole.sessions == one_by_one.sessions
