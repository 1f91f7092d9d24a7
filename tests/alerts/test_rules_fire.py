"""Each built-in metric rule goes pending -> firing -> resolved under the condition it
describes, and a real webhook receiver on 127.0.0.1 gets one firing and one resolved
notification per alert; the state survives a new evaluator on the same file."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from playpulse.alerts import AlertStore, Evaluator, StaticSource, builtin_rules
from playpulse.alerts.rules import Rule

FOR_S = 2.0
INTERVAL_S = 1.0
T0 = 1_800_000_000.0


class Pipeline:
    """A healthy pipeline's metrics that advance every tick; ``bad`` names conditions to
    turn on."""

    def __init__(self) -> None:
        self.source = StaticSource()
        self.bad: set[str] = set()
        s = self.source
        s.set("playpulse_processor_up", 1, member="processor-0")
        s.set("playpulse_processor_restarts_total", 0, member="processor-0")
        s.set("playpulse_stream_lag_records", 0, group="processor", partition="0")
        s.set("playpulse_stream_retention_seconds", 7 * 86400)
        s.set("playpulse_stream_lost_records_total", 0, group="processor", partition="0")
        s.set("playpulse_stream_max_bytes", 100e6)
        s.set("playpulse_quarantine_max_bytes", 256e6)
        s.set("playpulse_data_dir_capacity_bytes", 100e9)
        s.set("playpulse_events_accepted_total", 0)
        s.set("playpulse_events_kept_total", 0)
        self.advance()

    def advance(self) -> None:
        """One tick of traffic: 1,000 events accepted and processed, requests answered."""
        s, bad = self.source, self.bad
        s.add("playpulse_events_accepted_total", 1000)
        s.add("playpulse_requests_total", 10, status="200")
        s.set("playpulse_freshness_seconds", 5.0 if "freshness" in bad else 0.05)
        if "rejected" in bad:
            s.add("playpulse_events_rejected_total", 112, reason="invalid_event")
        if "throttled" in bad:
            s.add("playpulse_requests_total", 3, status="429")
        s.set("playpulse_processor_up", 0 if "down" in bad else 1, member="processor-0")
        if "restarting" in bad:
            s.add("playpulse_processor_restarts_total", 1, member="processor-0")
        if "stalled" in bad:
            s.add("playpulse_stream_lag_records", 1000, group="processor", partition="0")
        else:
            s.add("playpulse_processor_events_processed_total", 1000, member="processor-0")
            s.set("playpulse_stream_lag_records", 0, group="processor", partition="0")
        if "behind" in bad:
            s.set("playpulse_freshness_seconds", 6.5 * 86400)
        if "lost" in bad:
            s.add("playpulse_stream_lost_records_total", 50, group="processor", partition="0")
        s.set("playpulse_stream_bytes", 96e6 if "stream_full" in bad else 10e6)
        s.set("playpulse_quarantine_bytes", 250e6 if "quarantine_full" in bad else 1e6)
        s.set("playpulse_data_dir_free_bytes", 5e9 if "disk_full" in bad else 60e9)


def _rules() -> list[Rule]:
    return [
        r.tuned(FOR_S, INTERVAL_S) for r in builtin_rules() if not r.export_only and r.conditions
    ]


def _evaluator(path: Path, source: StaticSource, hooks: list[str], **kw: Any) -> Evaluator:
    return Evaluator(
        _rules(), AlertStore(path), source, webhooks=hooks, interval_s=INTERVAL_S, **kw
    )


#: Built-in rule -> the condition that fires it.
SCENARIOS = {
    "PlaypulseFreshnessHigh": "freshness",
    "PlaypulseRejectedShareHigh": "rejected",
    "PlaypulseThrottling": "throttled",
    "PlaypulseProcessorDown": "down",
    "PlaypulseProcessorRestarting": "restarting",
    "PlaypulseProcessorNoProgress": "stalled",
    "PlaypulseConsumerBehindRetention": "behind",
    "PlaypulseRecordsLost": "lost",
    "PlaypulseStreamNearCap": "stream_full",
    "PlaypulseQuarantineNearCap": "quarantine_full",
    "PlaypulseDiskNearFull": "disk_full",
}


def test_every_builtin_metric_rule_has_a_scenario() -> None:
    assert {r.name for r in _rules()} == set(SCENARIOS)


def _run(
    evaluator: Evaluator, pipeline: Pipeline, t: float, ticks: int, watch: str
) -> tuple[float, list[str]]:
    states = []
    for _ in range(ticks):
        t += INTERVAL_S
        pipeline.advance()
        evaluator.tick(t)
        evaluator.deliver(t)
        states.append(evaluator.states()[watch].state)
    return t, states


@pytest.mark.parametrize("alert", sorted(SCENARIOS))
def test_rule_pending_firing_resolved(alert: str, tmp_path: Path, receiver: Any) -> None:
    pipeline = Pipeline()
    evaluator = _evaluator(tmp_path / "alerts.db", pipeline.source, [receiver.url])
    try:
        t, healthy = _run(evaluator, pipeline, T0, 4, alert)
        assert set(healthy) == {"inactive"}
        assert receiver.events() == []
        pipeline.bad.add(SCENARIOS[alert])
        t, bad = _run(evaluator, pipeline, t, 6, alert)
        # Pending as soon as it holds (no progress: once a window without any), firing
        # once it held for FOR_S seconds, then firing while it holds.
        assert bad[0] == "pending" or bad[:2] == ["inactive", "pending"], bad
        assert "firing" in bad, bad
        assert (bad.index("firing") - bad.index("pending")) * INTERVAL_S >= FOR_S
        assert set(bad[bad.index("firing") :]) == {"firing"}
        pipeline.bad.clear()
        t, after = _run(evaluator, pipeline, t, 5, alert)
        assert after[-1] == "resolved", after
    finally:
        evaluator.close()
        evaluator.store.close()
    mine = [e for e in receiver.events() if e[0] == alert]
    assert mine == [(alert, "firing"), (alert, "resolved")]
    # Whatever else fired with it (freshness high also puts a consumer behind...) fired
    # and resolved once too.
    for name in {n for n, _ in receiver.events()}:
        assert [s for n, s in receiver.events() if n == name] == ["firing", "resolved"]
    payload = next(p for p in receiver.received if p["groupLabels"]["alertname"] == alert)
    assert payload["version"] == "4"
    assert payload["alerts"][0]["labels"]["alertname"] == alert
    assert payload["alerts"][0]["endsAt"] == "0001-01-01T00:00:00Z"
    assert payload["alerts"][0]["startsAt"].endswith("Z")


def test_min_sample_guard_keeps_low_traffic_errors_quiet(tmp_path: Path, receiver: Any) -> None:
    source = StaticSource()
    source.set("playpulse_events_accepted_total", 0)
    evaluator = _evaluator(tmp_path / "alerts.db", source, [receiver.url])
    try:
        t = T0
        for _ in range(8):  # 1 bad event of 10 per window: 10 %, but too few to judge
            t += INTERVAL_S
            source.add("playpulse_events_accepted_total", 3)
            source.add("playpulse_events_rejected_total", 1, reason="invalid_event")
            evaluator.tick(t)
            evaluator.deliver(t)
            assert evaluator.states()["PlaypulseRejectedShareHigh"].state == "inactive"
        # The same share at enough traffic fires.
        for _ in range(5):
            t += INTERVAL_S
            source.add("playpulse_events_accepted_total", 300)
            source.add("playpulse_events_rejected_total", 100, reason="invalid_event")
            evaluator.tick(t)
            evaluator.deliver(t)
        assert evaluator.states()["PlaypulseRejectedShareHigh"].state == "firing"
    finally:
        evaluator.close()
        evaluator.store.close()
    assert receiver.events() == [("PlaypulseRejectedShareHigh", "firing")]


def test_no_duplicates_across_a_restart(tmp_path: Path, receiver: Any) -> None:
    path = tmp_path / "alerts.db"
    pipeline = Pipeline()
    pipeline.bad.add("down")
    first = _evaluator(path, pipeline.source, [receiver.url])
    t, states = _run(first, pipeline, T0, 4, "PlaypulseProcessorDown")
    assert states[-1] == "firing"
    first.close()
    first.store.close()
    assert receiver.events() == [("PlaypulseProcessorDown", "firing")]
    # A new evaluator on the same file (`up` restarted): still firing, nothing sent again.
    second = _evaluator(path, pipeline.source, [receiver.url])
    try:
        assert second.states()["PlaypulseProcessorDown"].state == "firing"
        t, states = _run(second, pipeline, t, 4, "PlaypulseProcessorDown")
        assert set(states) == {"firing"}
        assert receiver.events() == [("PlaypulseProcessorDown", "firing")]
        pipeline.bad.clear()
        t, states = _run(second, pipeline, t, 2, "PlaypulseProcessorDown")
        assert states[-1] == "resolved"
    finally:
        second.close()
        second.store.close()
    assert receiver.events() == [
        ("PlaypulseProcessorDown", "firing"),
        ("PlaypulseProcessorDown", "resolved"),
    ]
    history = AlertStore(path)
    try:
        moves = [(h.from_state, h.to_state) for h in reversed(history.history())]
    finally:
        history.close()
    assert moves == [("inactive", "pending"), ("pending", "firing"), ("firing", "resolved")]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_undelivered_notification_is_sent_once_after_a_restart(
    tmp_path: Path, receiver: Any
) -> None:
    path = tmp_path / "alerts.db"
    pipeline = Pipeline()
    pipeline.bad.add("disk_full")
    receiver.fail_next = 100  # the receiver is down while the alert fires
    first = _evaluator(path, pipeline.source, [receiver.url], retry_base_s=1.0)
    t, states = _run(first, pipeline, T0, 4, "PlaypulseDiskNearFull")
    assert states[-1] == "firing"
    first.close()
    first.store.close()
    assert receiver.events() == []
    assert receiver.posts >= 1
    receiver.fail_next = 0
    second = _evaluator(path, pipeline.source, [receiver.url])
    try:
        for _ in range(3):
            t += 60.0  # past any backoff
            second.deliver(t)
    finally:
        second.close()
        second.store.close()
    assert receiver.events() == [("PlaypulseDiskNearFull", "firing")]


def test_retries_back_off_and_resolved_waits_for_firing(tmp_path: Path, receiver: Any) -> None:
    path = tmp_path / "alerts.db"
    pipeline = Pipeline()
    pipeline.bad.add("down")
    receiver.fail_next = 2
    evaluator = _evaluator(path, pipeline.source, [receiver.url], retry_base_s=10.0)
    try:
        t = T0
        for _ in range(3):
            t += INTERVAL_S
            pipeline.advance()
            evaluator.tick(t)
        assert evaluator.states()["PlaypulseProcessorDown"].state == "firing"
        pipeline.bad.clear()
        pipeline.advance()
        evaluator.tick(t + INTERVAL_S)  # resolved: queued behind the firing one
        evaluator.deliver(t)  # attempt 1 of the firing one fails; resolved waits
        assert receiver.posts == 1
        evaluator.deliver(t + 5)  # not due (10 s backoff): nothing sent
        assert receiver.posts == 1
        evaluator.deliver(t + 10)  # attempt 2 fails; next in 20 s
        assert receiver.posts == 2
        evaluator.deliver(t + 25)
        assert receiver.posts == 2
        evaluator.deliver(t + 31)  # attempt 3 succeeds, then the resolved one goes
        assert receiver.posts == 4
    finally:
        evaluator.close()
        evaluator.store.close()
    assert receiver.events() == [
        ("PlaypulseProcessorDown", "firing"),
        ("PlaypulseProcessorDown", "resolved"),
    ]
    store = AlertStore(path)
    try:
        notes = store.outbox()
    finally:
        store.close()
    assert [(n.status, n.attempts, n.delivered_at is not None) for n in notes] == [
        ("firing", 3, True),
        ("resolved", 1, True),
    ]


def test_an_unreachable_webhook_is_given_up(tmp_path: Path) -> None:
    pipeline = Pipeline()
    pipeline.bad.add("down")
    evaluator = _evaluator(
        tmp_path / "alerts.db", pipeline.source, ["http://127.0.0.1:9/hook"], max_attempts=2
    )
    t: Callable[[int], float] = lambda i: T0 + i * 100.0  # noqa: E731
    try:
        for i in range(4):
            pipeline.advance()
            evaluator.tick(t(i))
            evaluator.deliver(t(i))
        notes = evaluator.store.outbox()
    finally:
        evaluator.close()
        evaluator.store.close()
    assert [(n.attempts, n.failed_at is not None) for n in notes] == [(2, True)]
    assert notes[0].error
