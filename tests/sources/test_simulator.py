"""Tests for the workload simulator: determinism, validity, delivery faults, realism.

Two shared runs (module fixtures) keep the file fast: ``run20k`` (a complete run of
150 users, about 20,000 events) and ``run50k`` (exactly 50,000 events, cut off by
``with_target_events``), both over the default three-day window. Rates are checked
with loose bounds: they are expectations, and a whole request (or a whole offline
session) is late, duplicated or reordered at once, so shares vary from run to run.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from playpulse.errors import EventValidationError
from playpulse.events import EVENT_TYPES, EventBase, validate_event
from playpulse.sources import SimulatedEvent, SimulationConfig, simulate

REALISTIC_ZONES = {
    "Europe/Berlin",
    "America/New_York",
    "Asia/Kolkata",
    "Asia/Tokyo",
    "Australia/Sydney",
    "UTC",
}


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value).astimezone(UTC)


def _strip(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k != "sent_at"}


def _first_copies(events: list[SimulatedEvent]) -> list[SimulatedEvent]:
    """Each event_id once (its first delivery), in receive order."""
    seen: set[str] = set()
    out = []
    for e in events:
        if e.payload["event_id"] not in seen:
            seen.add(e.payload["event_id"])
            out.append(e)
    return out


def _validate_all(events: list[SimulatedEvent]) -> list[EventBase]:
    return [validate_event(json.dumps(e.payload), e.received_at).event for e in events]


@pytest.fixture(scope="module")
def run20k() -> list[SimulatedEvent]:
    # A complete run (not cut off by max_events), so no play misses a late request.
    events = list(simulate(SimulationConfig(seed=3, users=150)))
    assert 15_000 <= len(events) <= 30_000
    return events


@pytest.fixture(scope="module")
def run50k() -> list[SimulatedEvent]:
    return list(simulate(SimulationConfig(seed=5).with_target_events(50_000)))


@pytest.fixture(scope="module")
def accepted50k(run50k: list[SimulatedEvent]) -> list[EventBase]:
    return _validate_all(run50k)


# -- determinism and shape ---------------------------------------------------------------


def test_same_seed_gives_identical_stream() -> None:
    config = SimulationConfig(seed=42, max_events=5_000)
    first = list(simulate(config))
    second = list(simulate(config))
    assert len(first) == 5_000
    assert [json.dumps(e.payload) for e in first] == [json.dumps(e.payload) for e in second]
    assert [e.received_at for e in first] == [e.received_at for e in second]


def test_different_seeds_differ() -> None:
    a = [e.payload for e in simulate(SimulationConfig(seed=1, max_events=500))]
    b = [e.payload for e in simulate(SimulationConfig(seed=2, max_events=500))]
    assert a != b
    assert {p["event_id"] for p in a}.isdisjoint({p["event_id"] for p in b})


def test_max_events_and_with_target_events_yield_exactly_n() -> None:
    assert len(list(simulate(SimulationConfig(max_events=1_234)))) == 1_234
    assert list(simulate(SimulationConfig(max_events=0))) == []
    for seed in (0, 1):
        config = SimulationConfig(seed=seed).with_target_events(3_000)
        assert config.max_events == 3_000
        assert len(list(simulate(config))) == 3_000


def test_received_at_is_utc_and_never_decreases(run20k: list[SimulatedEvent]) -> None:
    assert all(e.received_at.tzinfo is UTC for e in run20k)
    assert all(a.received_at <= b.received_at for a, b in itertools.pairwise(run20k))


def test_payloads_are_json_wire_format(run20k: list[SimulatedEvent]) -> None:
    for e in run20k[:2_000]:
        assert json.loads(json.dumps(e.payload)) == e.payload
        assert e.payload["occurred_at"].endswith("Z") or e.payload["occurred_at"][-6] in "+-"
    offsets = Counter(e.payload["occurred_at"].endswith("Z") for e in run20k)
    assert offsets[True] > offsets[False] > 0  # most in UTC, some with a local offset


# -- validity ------------------------------------------------------------------------------


def test_every_event_is_accepted(run20k: list[SimulatedEvent]) -> None:
    accepted = _validate_all(run20k)
    assert len(accepted) == len(run20k)
    assert all(e.valid for e in run20k)
    assert all(a.received_at == e.received_at for a, e in zip(accepted, run20k, strict=True))


def test_invalid_rate_gives_about_that_share_of_rejections() -> None:
    config = SimulationConfig(seed=9, invalid_rate=0.05).with_target_events(20_000)
    events = list(simulate(config))
    rejected = 0
    reasons: Counter[str] = Counter()
    for e in events:
        try:
            validate_event(json.dumps(e.payload), e.received_at)
        except EventValidationError as exc:
            rejected += 1
            reasons[exc.reason] += 1
            assert not e.valid
        else:
            assert e.valid
    assert 0.04 <= rejected / len(events) <= 0.06
    assert set(reasons) == {"unknown_event_type", "invalid_event"}


@settings(max_examples=12, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    users=st.integers(1, 15),
    hours=st.integers(1, 48),
    catalog=st.integers(1, 4),
    rates=st.tuples(*(st.sampled_from([0.0, 0.3, 1.0]) for _ in range(4))),
)
def test_small_and_extreme_configs_stay_valid(
    seed: int, users: int, hours: int, catalog: int, rates: tuple[float, ...]
) -> None:
    dup, ooo, late, commerce = rates
    config = SimulationConfig(
        seed=seed,
        users=users,
        duration=timedelta(hours=hours),
        audiobooks=catalog,
        tracks=catalog,
        episodes=catalog,
        videos=catalog,
        vendors=catalog,
        products=catalog,
        duplicate_rate=dup,
        out_of_order_rate=ooo,
        late_rate=late,
        very_late_rate=late / 2,
        commerce_share=commerce,
        anonymous_share=0.5,
        skewed_clock_share=0.5,
        max_events=3_000,
    )
    events = list(simulate(config))
    _validate_all(events)
    assert all(a.received_at <= b.received_at for a, b in itertools.pairwise(events))


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        SimulationConfig(start=datetime(2026, 1, 1))  # noqa: DTZ001
    with pytest.raises(ValueError, match="duplicate_rate"):
        SimulationConfig(duplicate_rate=1.5)
    with pytest.raises(ValueError, match="very_late_rate"):
        SimulationConfig(late_rate=0.001, very_late_rate=0.01)
    with pytest.raises(ValueError, match="users"):
        SimulationConfig(users=0)
    berlin = datetime(2026, 1, 1, 1, tzinfo=ZoneInfo("Europe/Berlin"))
    assert SimulationConfig(start=berlin).start == datetime(2026, 1, 1, tzinfo=UTC)


# -- delivery faults -----------------------------------------------------------------------


def test_duplicates_reuse_event_id_with_identical_content(run20k: list[SimulatedEvent]) -> None:
    by_id: dict[str, list[SimulatedEvent]] = defaultdict(list)
    for e in run20k:
        by_id[e.payload["event_id"]].append(e)
    groups = [g for g in by_id.values() if len(g) > 1]
    assert groups
    later_sent_at = 0
    for group in groups:
        first = group[0]
        for copy in group[1:]:
            assert _strip(copy.payload) == _strip(first.payload)
            assert copy.payload is not first.payload
            assert copy.received_at > first.received_at
            if "sent_at" in first.payload:
                assert _ts(copy.payload["sent_at"]) >= _ts(first.payload["sent_at"])
                later_sent_at += copy.payload["sent_at"] != first.payload["sent_at"]
    assert later_sent_at > 0
    share = sum(len(g) - 1 for g in groups) / len(run20k)
    assert 0.01 <= share <= 0.035


def test_some_plays_arrive_out_of_order(run20k: list[SimulatedEvent]) -> None:
    # Duplicates removed, so the disorder comes from shuffled or delayed requests.
    plays: dict[str, list[SimulatedEvent]] = defaultdict(list)
    for e in _first_copies(run20k):
        if "playback_id" in e.payload:
            plays[e.payload["playback_id"]].append(e)
    shuffled = delayed = 0
    for events in plays.values():
        for a, b in itertools.pairwise(events):
            if _ts(b.payload["occurred_at"]) < _ts(a.payload["occurred_at"]):
                if a.received_at == b.received_at:
                    shuffled += 1
                else:
                    delayed += 1
    assert shuffled > 0
    assert delayed > 0


def test_late_events_include_some_beyond_seven_days() -> None:
    config = SimulationConfig(seed=4, late_rate=0.05, very_late_rate=0.02)
    events = _first_copies(list(simulate(config.with_target_events(20_000))))
    lateness = [e.received_at - _ts(e.payload["occurred_at"]) for e in events]
    late = sum(d > timedelta(hours=1) for d in lateness) / len(events)
    very_late = sum(d > timedelta(days=7) for d in lateness) / len(events)
    assert 0.02 <= late <= 0.1
    assert 0.002 <= very_late <= 0.05


def test_default_rates_give_late_and_very_late_events(accepted50k: list[EventBase]) -> None:
    # derived_at undoes clock skew; received_at - derived_at is the delivery delay.
    delays = [e.received_at - e.derived_at for e in accepted50k if e.derived_at and e.received_at]
    late = sum(d > timedelta(hours=1) for d in delays) / len(delays)
    assert 0.002 <= late <= 0.03
    assert max(delays) > timedelta(days=1)


def test_skewed_clocks_are_corrected_by_derived_at(accepted50k: list[EventBase]) -> None:
    # First deliveries only: a resend that keeps its old sent_at makes derived_at early
    # by the resend delay, as it would in production.
    offsets: dict[str, list[float]] = defaultdict(list)
    seen: set[str] = set()
    for e in accepted50k:
        if e.event_id in seen:
            continue
        seen.add(e.event_id)
        if e.sent_at is not None and e.derived_at is not None:
            offsets[e.actor_id].append((e.occurred_at - e.derived_at).total_seconds())
    skewed = {a for a, values in offsets.items() if all(abs(v) > 30 for v in values)}
    clean = {a for a, values in offsets.items() if all(abs(v) < 10 for v in values)}
    assert skewed
    assert len(skewed) < 0.1 * len(offsets)
    assert skewed | clean == set(offsets)  # a device is skewed for all its events or none


# -- playback realism ----------------------------------------------------------------------


def _plays(events: list[SimulatedEvent]) -> dict[str, list[dict[str, Any]]]:
    """Playback payloads per playback_id, deduplicated, sorted by occurred_at."""
    plays: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in _first_copies(events):
        if "playback_id" in e.payload:
            plays[e.payload["playback_id"]].append(e.payload)
    for payloads in plays.values():
        payloads.sort(key=lambda p: _ts(p["occurred_at"]))
    return plays


def test_every_event_type_appears(run50k: list[SimulatedEvent]) -> None:
    assert {e.payload["event_type"] for e in run50k} == set(EVENT_TYPES)


def test_each_play_has_one_start_and_consistent_content(run50k: list[SimulatedEvent]) -> None:
    for payloads in _plays(run50k).values():
        starts = [p for p in payloads if p["event_type"] == "play_start"]
        # A play may have started before the 50k cut-off or ... but never twice.
        assert len(starts) <= 1
        ids = {p["content"]["content_id"] for p in payloads if "content" in p}
        assert len(ids) <= 1
        ends = [p for p in payloads if p["event_type"] == "play_end"]
        assert len(ends) <= 1
        if ends:
            assert ends[0] is payloads[-1] or _ts(ends[0]["occurred_at"]) == _ts(
                payloads[-1]["occurred_at"]
            )


def test_positions_never_exceed_duration(run50k: list[SimulatedEvent]) -> None:
    checked = 0
    for payloads in _plays(run50k).values():
        durations = {
            p["content"]["duration_s"] for p in payloads if "duration_s" in p.get("content", {})
        }
        if not durations:
            continue
        (duration,) = durations
        for p in payloads:
            for key in ("position_s", "from_position_s"):
                if key in p:
                    assert 0 <= p[key] <= duration
                    checked += 1
    assert checked > 40_000


def test_positions_advance_by_rate_times_playing_time(run20k: list[SimulatedEvent]) -> None:
    pairs = 0
    for payloads in _plays(run20k).values():
        for a, b in itertools.pairwise(payloads):
            if a["event_type"] == b["event_type"] == "heartbeat":
                seconds = (_ts(b["occurred_at"]) - _ts(a["occurred_at"])).total_seconds()
                assert 9.7 <= seconds <= 30
                assert a["playback_rate"] == b["playback_rate"]
                expected = a["position_s"] + a["playback_rate"] * seconds
                assert b["position_s"] == pytest.approx(expected, abs=0.005)
                pairs += 1
    assert pairs > 5_000


def test_speed_changes_and_seeks_are_consistent(run50k: list[SimulatedEvent]) -> None:
    rates: Counter[float] = Counter()
    forward = back = 0
    for payloads in _plays(run50k).values():
        for p in payloads:
            if p["event_type"] == "speed_change":
                rates[p["playback_rate"]] += 1
            elif p["event_type"] == "seek":
                forward += p["position_s"] > p["from_position_s"]
                back += p["position_s"] < p["from_position_s"]
    assert set(rates) <= {1.0, 1.25, 1.5, 1.75, 2.0}
    assert rates[1.5] > 0
    assert forward > 0
    assert back > 0


def test_content_kinds_and_skips(run50k: list[SimulatedEvent]) -> None:
    starts = [e.payload for e in run50k if e.payload["event_type"] == "play_start"]
    kinds = Counter(p["content"]["content_type"] for p in starts)
    assert set(kinds) == {"audiobook", "track", "episode", "video"}
    for p in starts:
        content = p["content"]
        low, high = {
            "audiobook": (3 * 3600, 15 * 3600),
            "track": (120, 360),
            "episode": (1200, 5400),
            "video": (300, 2400),
        }[content["content_type"]]
        assert low <= content["duration_s"] <= high
        assert content["title"]
        assert content["creator"]
        assert ("chapter" in content) == (content["content_type"] == "audiobook")
    ends = Counter(
        e.payload["reason"] for e in _first_copies(run50k) if e.payload["event_type"] == "play_end"
    )
    assert set(ends) == {"completed", "stopped", "next", "error"}
    assert ends["next"] > 0.1 * sum(ends.values())  # many tracks are skipped


def test_background_playback_is_reported(run50k: list[SimulatedEvent]) -> None:
    changes = [e.payload for e in run50k if e.payload["event_type"] == "visibility_change"]
    values = Counter(p["context"]["foreground"] for p in changes)
    assert values[False] > 0
    assert values[True] > 0
    video_plays = {
        e.payload["playback_id"]
        for e in run50k
        if e.payload["event_type"] == "play_start"
        and e.payload["content"]["content_type"] == "video"
    }
    assert any(p["playback_id"] in video_plays and not p["context"]["foreground"] for p in changes)


def test_some_plays_cross_utc_and_local_midnight(run50k: list[SimulatedEvent]) -> None:
    utc = local = 0
    for payloads in _plays(run50k).values():
        first, last = _ts(payloads[0]["occurred_at"]), _ts(payloads[-1]["occurred_at"])
        if last - first > timedelta(days=1):
            continue  # an offline session shifted around; not one continuous play
        utc += first.date() != last.date()
        zone = ZoneInfo(payloads[0]["context"]["timezone"])
        local += first.astimezone(zone).date() != last.astimezone(zone).date()
    assert utc > 0
    assert local > 0


def test_users_and_devices_are_realistic(accepted50k: list[EventBase]) -> None:
    zones = Counter(e.context.timezone for e in accepted50k if e.context)
    assert set(zones) >= REALISTIC_ZONES
    anonymous = {e.anonymous_id for e in accepted50k if e.user_id is None}
    assert anonymous
    assert all(e.context is not None and e.context.device_type for e in accepted50k)
    by_actor: dict[str, set[tuple[Any, ...]]] = defaultdict(set)
    for e in accepted50k:
        assert e.context is not None
        c = e.context
        by_actor[e.actor_id].add((c.device_type, c.platform, c.os, c.timezone, c.country))
    assert all(len(devices) == 1 for devices in by_actor.values())  # one fixed device each
    assert sum(e.sent_at is None for e in accepted50k) < 0.2 * len(accepted50k)
    assert sum(e.session_id is not None for e in accepted50k) > 0.7 * len(accepted50k)


def test_sessions_follow_a_daily_rhythm(run50k: list[SimulatedEvent]) -> None:
    hours: Counter[int] = Counter()
    for e in run50k:
        if e.payload["event_type"] == "play_start":
            zone = ZoneInfo(e.payload["context"]["timezone"])
            hours[_ts(e.payload["occurred_at"]).astimezone(zone).hour] += 1
    night = sum(hours[h] for h in range(2, 6))
    evening = sum(hours[h] for h in range(18, 22))
    assert evening > 4 * night


# -- commerce ------------------------------------------------------------------------------


def test_commerce_funnel(run50k: list[SimulatedEvent]) -> None:
    payloads = [e.payload for e in _first_copies(run50k)]
    counts = Counter(p["event_type"] for p in payloads)
    assert counts["product_view"] > counts["cart_add"] > counts["order_created"]
    assert counts["order_created"] >= counts["order_completed"] > 0
    created = {p["order_id"]: p for p in payloads if p["event_type"] == "order_created"}
    for p in payloads:
        if p["event_type"] in ("order_created", "order_completed"):
            assert p["currency"] in ("EUR", "USD")
            assert p["amount_minor"] == sum(line["amount_minor"] for line in p["items"])
            assert p["product_id"] == p["items"][0]["product_id"]
            assert all(line["vendor_id"] == p["vendor_id"] for line in p["items"])
        if p["event_type"] == "order_completed" and p["order_id"] in created:
            assert p["amount_minor"] == created[p["order_id"]]["amount_minor"]
            assert _ts(p["occurred_at"]) > _ts(created[p["order_id"]]["occurred_at"])
        if p["event_type"] == "cart_add":
            assert p["quantity"] >= 1
