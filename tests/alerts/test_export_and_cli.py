"""The Prometheus/Grafana export (promtool, metric names a real /metrics exposes), user
rules in YAML, `playpulse alerts` and `monitoring export`, and start_alerting."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from playpulse.alerts import AlertStore, Evaluator, StaticSource, load_rules, start_alerting
from playpulse.alerts.cli import alerts_app
from playpulse.alerts.engine import check_queries, state_path
from playpulse.alerts.rules import active_rules, builtin_rules
from playpulse.collector.app import create_app
from playpulse.config import Settings
from playpulse.errors import ConfigError
from playpulse.monitoring.cli import monitoring_app
from playpulse.monitoring.export import (
    GRAFANA_SCHEMA_VERSION,
    dashboard_exprs,
    grafana_dashboard,
    prometheus_rules,
)
from playpulse.monitoring.metrics import PIPELINE_METRICS, add_pipeline_metrics
from playpulse.processor.metrics import ProcessorMetrics
from playpulse.service import write_processor_status

USER_RULES = """
rules:
  - name: ManyBufferingRejects
    metric: playpulse_events_rejected_total
    fn: increase
    match: {reason: "invalid.*"}
    threshold: 50
    for: 1m
    window: 10m
    labels: {severity: page, team: data}
  - name: FewPlaysOnTV
    query: overview
    column: plays
    range: 1h
    params: {content_type: video}
    op: "<"
    threshold: 5
    for: 30m
"""


def _exposed_names(settings: Settings) -> set[str]:
    # A real collector app's /metrics with the pipeline's metrics, after traffic.
    app = create_app(settings)
    add_pipeline_metrics(app, settings)
    measured = ProcessorMetrics()
    measured.store_write.observe(0.01)
    status = {"state": "running", "pid": os.getpid(), "restarts": 0}
    write_processor_status(settings, {**status, "metrics": measured.as_json()})
    with TestClient(app) as client:
        client.post("/v1/events", content=b'[{"event_type": "nope"}]')
        text = client.get("/metrics").text
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names.add(name)
            if kind == "counter" and not name.endswith("_total"):
                names.add(f"{name}_total")
            if kind == "histogram":
                names.update(f"{name}_{s}" for s in ("bucket", "sum", "count"))
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def _metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\bplaypulse_[a-z0-9_]+", expr))


def test_every_exported_query_names_a_metric_that_metrics_exposes(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, stream_max_bytes=10**9)
    exposed = _exposed_names(settings)
    assert set(PIPELINE_METRICS) <= exposed
    rules = builtin_rules() + load_rules(_rules_file(tmp_path))
    dashboard = grafana_dashboard(rules)
    assert dashboard["schemaVersion"] == GRAFANA_SCHEMA_VERSION
    exprs = dashboard_exprs(dashboard)
    assert len(exprs) > 20
    exprs += [r["expr"] for g in prometheus_rules(rules)["groups"] for r in g["rules"]]
    for expr in exprs:
        names = _metric_names(expr)
        assert names, expr
        assert names <= exposed, f"{expr}: {names - exposed} not on /metrics"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"])


def _rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yml"
    path.write_text(USER_RULES, encoding="utf-8")
    return path


def test_monitoring_export_passes_promtool(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(
        monitoring_app, ["export", "--dir", str(out), "--alert-rules", str(_rules_file(tmp_path))]
    )
    assert result.exit_code == 0, result.output
    rules_file = out / "playpulse-rules.yml"
    doc = yaml.safe_load(rules_file.read_text())
    alerts = {r["alert"]: r for r in doc["groups"][1]["rules"]}
    exported = {r.name for r in builtin_rules() if r.conditions} | {"ManyBufferingRejects"}
    assert set(alerts) == exported
    assert alerts["PlaypulseRejectedShareHigh"]["for"] == "5m"
    assert alerts["ManyBufferingRejects"]["labels"] == {"severity": "page", "team": "data"}
    assert 'reason=~"invalid.*"' in alerts["ManyBufferingRejects"]["expr"]
    assert "[10m]" in alerts["ManyBufferingRejects"]["expr"]
    assert "FewPlaysOnTV" in rules_file.read_text()  # listed as evaluated by playpulse only
    dashboard = json.loads((out / "playpulse-dashboard.json").read_text())
    assert dashboard["schemaVersion"] == GRAFANA_SCHEMA_VERSION
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    check = subprocess.run(
        [promtool, "check", "rules", str(rules_file)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {2 * len(exported)} rules found" in check.stdout


def test_user_rules_load_and_fire(tmp_path: Path, receiver: Any) -> None:
    rules = load_rules(_rules_file(tmp_path))
    metric, query = rules
    assert (metric.for_s, metric.window_s, query.for_s) == (60.0, 600.0, 1800.0)
    assert query.check is not None
    assert query.check.params == {"content_type": "video"}
    check_queries(rules)
    source = StaticSource()
    evaluator = Evaluator([metric], AlertStore(tmp_path / "a.db"), source, webhooks=[receiver.url])
    try:
        t = 1_800_000_000.0
        for i in range(130):  # over 50 matching after ~51 s, then 60 s pending
            source.add("playpulse_events_rejected_total", 1, reason="invalid_event")
            source.add("playpulse_events_rejected_total", 5, reason="other")
            evaluator.tick(t + i)
        evaluator.deliver(t + 130)
        assert evaluator.states()["ManyBufferingRejects"].state == "firing"
    finally:
        evaluator.close()
        evaluator.store.close()
    assert receiver.events() == [("ManyBufferingRejects", "firing")]
    assert receiver.received[0]["commonLabels"]["team"] == "data"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("rules: [{name: X, metric: playpulse_x, threshold: 1, for: soon}]", "for"),
        ("rules: [{name: 'bad name', metric: playpulse_x, threshold: 1}]", "alert name"),
        ("rules: [{name: X, metric: playpulse_x}]", "threshold"),
        ("rules: [{name: X, threshold: 1}]", "either conditions"),
        (
            "rules: [{name: X, metric: m, threshold: 1}, {name: X, metric: m, threshold: 2}]",
            "used twice",
        ),
        ("rules: {", "not YAML"),
    ],
)
def test_bad_user_rules_are_one_clear_error(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "rules.yml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=problem) as caught:
        load_rules(path)
    assert str(path) in str(caught.value)


def test_unknown_query_or_column_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "rules.yml"
    path.write_text("- {name: X, query: nope, column: plays, threshold: 1}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown query 'nope'"):
        check_queries(load_rules(path))
    path.write_text("- {name: X, query: overview, column: nope, threshold: 1}\n")
    with pytest.raises(ConfigError, match="no column 'nope'"):
        check_queries(load_rules(path))


def test_bad_query_params_and_webhooks_are_refused_at_start(tmp_path: Path) -> None:
    path = tmp_path / "rules.yml"
    path.write_text(
        "- {name: X, query: overview, column: plays, params: {colour: red}, threshold: 1}\n"
    )
    with pytest.raises(ConfigError, match="alert X: query parameter colour"):
        check_queries(load_rules(path))
    settings = Settings(data_dir=tmp_path, alert_webhooks=["ftp://user:secret@host/x"])
    with pytest.raises(ConfigError, match="not an http") as caught:
        start_alerting(settings, source=StaticSource())
    assert "secret" not in str(caught.value)
    assert not state_path(settings).exists()


def test_alert_for_s_tunes_builtin_rules_only(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path, alert_for_s=0.5, alert_interval_s=0.1, alert_rules=_rules_file(tmp_path)
    )
    rules = {r.name: r for r in active_rules(settings)}
    assert rules["PlaypulseThrottling"].for_s == 0.5
    assert rules["PlaypulseThrottling"].window_s == 0.5
    assert rules["ManyBufferingRejects"].for_s == 60.0
    assert "PlaypulseEventsDropped" not in rules  # export only


def test_start_alerting_and_the_alerts_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(data_dir=tmp_path, alert_interval_s=0.05)
    # The processor of an earlier run failed; none runs now.
    write_processor_status(settings, {"state": "failed", "pid": os.getpid(), "restarts": 3})
    app = create_app(settings)
    with TestClient(app):
        manager = start_alerting(settings, app)
        manager.stop()
    assert state_path(settings).exists()
    monkeypatch.setenv("PLAYPULSE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "200")
    runner = CliRunner()
    listed = runner.invoke(alerts_app, ["list", "--all", "--format", "json"])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.output)
    assert {r["name"] for r in rows} == {r.name for r in active_rules(settings)}
    # No processor runs on this data dir: that one is pending.
    states = {r["name"]: r["state"] for r in rows}
    assert states["PlaypulseProcessorDown"] == "pending"
    firing_now = runner.invoke(alerts_app, ["list"])
    assert firing_now.exit_code == 0
    assert "PlaypulseProcessorDown" in firing_now.output
    history = runner.invoke(alerts_app, ["history", "--format", "json"])
    assert history.exit_code == 0, history.output
    assert json.loads(history.output)[0] == {
        **json.loads(history.output)[0],
        "name": "PlaypulseProcessorDown",
        "from": "inactive",
        "to": "pending",
    }
    shown = runner.invoke(alerts_app, ["rules"])
    assert shown.exit_code == 0
    assert "PlaypulseRejectedShareHigh" in shown.output


def test_docs_name_every_metric_and_rule_and_their_yaml_loads(tmp_path: Path) -> None:
    docs = (Path(__file__).parents[2] / "docs" / "monitoring.md").read_text(encoding="utf-8")
    exposed = _exposed_names(Settings(data_dir=tmp_path / "d", stream_max_bytes=10**9))
    families = {n for n in exposed if not n.endswith(("_bucket", "_count", "_sum", "_created"))}
    assert len(families) >= 30
    for name in sorted(families):
        assert f"`{name}`" in docs, f"docs/monitoring.md does not describe {name}"
    for rule in builtin_rules():
        assert f"`{rule.name}`" in docs, f"docs/monitoring.md does not describe {rule.name}"
    example = docs.split("```yaml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "rules.yml"
    path.write_text(example, encoding="utf-8")
    rules = load_rules(path)
    check_queries(rules)
    assert [r.name for r in rules] == [
        "ManyInvalidEvents",
        "ManyServerErrors",
        "FewVideoPlays",
        "ListeningDroppedWeekOverWeek",
    ]
    share = rules[1].conditions
    assert [c.op for c in share] == [">", ">="]
    assert share[1].threshold == 200
