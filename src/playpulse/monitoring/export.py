"""``playpulse monitoring export``: Prometheus alerting and recording rules and a Grafana
dashboard, generated from the alert rules playpulse evaluates itself
(:func:`playpulse.alerts.rules.builtin_rules`, plus user rules), so both watch the same
conditions.

A rule's metric conditions become one PromQL expression (:func:`rule_expr`): each
selector ``agg(fn(metric{label=~"regex"}[window] offset d))``, increases and rates
``or vector(0)`` (a counter with no series yet counts 0, as playpulse's evaluator does),
conditions joined by ``and``. Catalog query checks (the plays rule) have no PromQL
equivalent and stay with playpulse's own evaluator; the export lists them in a comment.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from playpulse.alerts.rules import Condition, Rule, Selector, builtin_rules, load_rules

#: Grafana's dashboard JSON schema version the export writes.
GRAFANA_SCHEMA_VERSION = 39

_DS = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}


def promql_duration(seconds: float) -> str:
    """A PromQL duration: ``300`` -> ``5m``, ``3600`` -> ``1h``, ``0.5`` -> ``500ms``."""
    ms = round(seconds * 1000)
    for unit, size in (("w", 604_800_000), ("d", 86_400_000), ("h", 3_600_000), ("m", 60_000)):
        if ms >= size and ms % size == 0:
            return f"{ms // size}{unit}"
    if ms % 1000 == 0:
        return f"{ms // 1000}s"
    return f"{max(ms, 1)}ms"


def _label_value(pattern: str) -> str:
    return pattern.replace("\\", "\\\\").replace('"', '\\"')


def selector_expr(selector: Selector, window_s: float) -> str:
    """PromQL of one :class:`~playpulse.alerts.rules.Selector` over ``window_s``."""
    matchers = ",".join(f'{k}=~"{_label_value(v)}"' for k, v in sorted(selector.match.items()))
    vector = f"{selector.metric}{{{matchers}}}" if matchers else selector.metric
    offset = f" offset {promql_duration(selector.offset)}" if selector.offset else ""
    window = f"[{promql_duration(window_s)}]"
    if selector.fn == "value":
        inner = f"{vector}{offset}"
    elif selector.fn == "quantile":
        inner = f"quantile_over_time({selector.q:g}, {vector}{window}{offset})"
    else:
        inner = f"{selector.fn}({vector}{window}{offset})"
    out = f"{selector.agg}({inner})"
    if selector.fn in ("increase", "rate"):
        out = f"({out} or vector(0))"
    return out


def _sum(selectors: Sequence[Selector], window_s: float) -> str:
    parts = [selector_expr(s, window_s) for s in selectors]
    return parts[0] if len(parts) == 1 else "(" + " + ".join(parts) + ")"


def condition_value(condition: Condition, window_s: float) -> str:
    """PromQL of a condition's value (without the comparison)."""
    value = _sum(condition.terms, window_s)
    if condition.over is not None:
        value = f"{value} / {_sum(condition.over, window_s)}"
    return value


def rule_expr(rule: Rule) -> str:
    """The PromQL alert expression of a rule with metric conditions. Raises
    :class:`ValueError` for a catalog query rule (no PromQL equivalent)."""
    if not rule.conditions:
        raise ValueError(f"alert {rule.name} is a catalog query check: no PromQL equivalent")
    return " and ".join(
        f"{condition_value(c, rule.window_s)} {c.op} {c.threshold:g}" for c in rule.conditions
    )


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower().removeprefix("playpulse_")


def recording_name(rule: Rule) -> str:
    """The recording rule of an alert's first condition: ``playpulse:<alert>:value``."""
    return f"playpulse:{_snake(rule.name)}:value"


def exportable(rules: Sequence[Rule]) -> tuple[list[Rule], list[Rule]]:
    """``(rules with metric conditions, catalog query rules)``."""
    return [r for r in rules if r.conditions], [r for r in rules if r.check is not None]


def prometheus_rules(rules: Sequence[Rule]) -> dict[str, Any]:
    """A Prometheus rules file (as a mapping): group ``playpulse-recording`` records
    each alert's first condition value, group ``playpulse-alerts`` holds the alerts."""
    metric_rules, _ = exportable(rules)
    recording = [
        {"record": recording_name(r), "expr": condition_value(r.conditions[0], r.window_s)}
        for r in metric_rules
    ]
    alerts = []
    for r in metric_rules:
        annotations = {"summary": r.summary}
        if r.description:
            annotations["description"] = r.description
        alerts.append(
            {
                "alert": r.name,
                "expr": rule_expr(r),
                "for": promql_duration(r.for_s),
                "labels": dict(r.labels),
                "annotations": annotations,
            }
        )
    return {
        "groups": [
            {"name": "playpulse-recording", "rules": recording},
            {"name": "playpulse-alerts", "rules": alerts},
        ]
    }


#: The dashboard's health panels: (title, unit, [(PromQL, legend)]).
HEALTH_PANELS: list[tuple[str, str, list[tuple[str, str]]]] = [
    (
        "Events accepted and rejected per second",
        "ops",
        [
            ("sum(rate(playpulse_events_accepted_total[5m]))", "accepted"),
            ("sum by (reason) (rate(playpulse_events_rejected_total[5m]))", "rejected {{reason}}"),
        ],
    ),
    (
        "Requests per second by status",
        "reqps",
        [("sum by (status) (rate(playpulse_requests_total[5m]))", "{{status}}")],
    ),
    (
        "Request, append and store write latency (p99)",
        "s",
        [
            (
                "histogram_quantile(0.99, sum by (le) "
                "(rate(playpulse_request_duration_seconds_bucket[5m])))",
                "request p99",
            ),
            (
                "histogram_quantile(0.99, sum by (le) "
                "(rate(playpulse_stream_append_duration_seconds_bucket[5m])))",
                "append p99",
            ),
            (
                "histogram_quantile(0.99, sum by (le) "
                "(rate(playpulse_store_write_duration_seconds_bucket[5m])))",
                "store write p99",
            ),
        ],
    ),
    (
        "Freshness: acknowledged -> visible in the store",
        "s",
        [
            (
                "histogram_quantile(0.99, sum by (le) "
                "(rate(playpulse_processing_freshness_seconds_bucket[5m])))",
                "p99 per event",
            ),
            ("max(playpulse_freshness_seconds)", "oldest waiting now"),
        ],
    ),
    (
        "Consumer lag per partition",
        "short",
        [
            (
                'sum by (partition) (playpulse_stream_lag_records{group="processor"})',
                "partition {{partition}}",
            )
        ],
    ),
    (
        "Processed, duplicates and late per second",
        "ops",
        [
            ("sum(rate(playpulse_processor_events_processed_total[5m]))", "processed"),
            ("sum(rate(playpulse_events_duplicates_dropped_total[5m]))", "duplicates dropped"),
            ("sum(rate(playpulse_events_late_total[5m]))", "late"),
        ],
    ),
    (
        "Processors up and restarts",
        "short",
        [
            ("sum by (member) (playpulse_processor_up)", "up {{member}}"),
            ("sum by (member) (increase(playpulse_processor_restarts_total[1h]))", "restarts/h"),
        ],
    ),
    (
        "Stream and quarantine bytes",
        "bytes",
        [
            ("max(playpulse_stream_bytes)", "stream"),
            ("max(playpulse_stream_max_bytes)", "stream cap"),
            ("max(playpulse_quarantine_bytes)", "quarantine"),
            ("max(playpulse_quarantine_max_bytes)", "quarantine cap"),
        ],
    ),
    (
        "Lake bytes per table",
        "bytes",
        [("sum by (table) (playpulse_lake_bytes)", "{{table}}")],
    ),
    (
        "Data dir free space",
        "bytes",
        [
            ("min(playpulse_data_dir_free_bytes)", "free"),
            ("max(playpulse_data_dir_capacity_bytes)", "capacity"),
        ],
    ),
]


def _panel(
    panel_id: int, title: str, unit: str, targets: list[tuple[str, str]], y: int, x: int
) -> dict[str, Any]:
    return {
        "id": panel_id,
        "type": "timeseries",
        "title": title,
        "datasource": _DS,
        "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [
            {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend, "datasource": _DS}
            for i, (expr, legend) in enumerate(targets)
        ],
    }


def grafana_dashboard(rules: Sequence[Rule]) -> dict[str, Any]:
    """A Grafana dashboard (JSON model) of the pipeline's health: the health panels
    (:data:`HEALTH_PANELS`), then one panel per alert rule with metric conditions
    showing its first condition's value against its threshold. The Prometheus data
    source is the ``DS_PROMETHEUS`` variable."""
    panels: list[dict[str, Any]] = []
    panel_id = 1
    y = 0
    panels.append(
        {
            "id": panel_id,
            "type": "row",
            "title": "Pipeline health",
            "collapsed": False,
            "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
            "panels": [],
        }
    )
    y += 1
    for i, (title, unit, targets) in enumerate(HEALTH_PANELS):
        panel_id += 1
        panels.append(_panel(panel_id, title, unit, targets, y + (i // 2) * 8, (i % 2) * 12))
    y += ((len(HEALTH_PANELS) + 1) // 2) * 8
    panel_id += 1
    panels.append(
        {
            "id": panel_id,
            "type": "row",
            "title": "Alert conditions",
            "collapsed": False,
            "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
            "panels": [],
        }
    )
    y += 1
    metric_rules, _ = exportable(rules)
    for i, rule in enumerate(metric_rules):
        panel_id += 1
        condition = rule.conditions[0]
        panel = _panel(
            panel_id,
            f"{rule.name}: {rule.summary}",
            "short",
            [(condition_value(condition, rule.window_s), rule.name)],
            y + (i // 2) * 8,
            (i % 2) * 12,
        )
        panel["fieldConfig"]["defaults"]["thresholds"] = {
            "mode": "absolute",
            "steps": [
                {"color": "green", "value": None},
                {"color": "red", "value": condition.threshold},
            ],
        }
        panel["fieldConfig"]["defaults"]["custom"] = {"thresholdsStyle": {"mode": "line"}}
        panels.append(panel)
    return {
        "title": "playpulse pipeline health",
        "uid": "playpulse-health",
        "tags": ["playpulse"],
        "timezone": "utc",
        "schemaVersion": GRAFANA_SCHEMA_VERSION,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "DS_PROMETHEUS",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                }
            ]
        },
        "annotations": {"list": []},
        "panels": panels,
    }


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    """Every target expression of a dashboard's panels."""
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def export(directory: Path, rules_file: Path | None = None) -> list[Path]:
    """Write ``playpulse-rules.yml`` (Prometheus) and ``playpulse-dashboard.json``
    (Grafana) into ``directory`` (created when missing) from the built-in rules and
    those of ``rules_file``; returns the paths written. Raises
    :class:`~playpulse.errors.ConfigError` for a bad rules file, ``OSError`` when the
    directory cannot be written."""
    import yaml

    rules = builtin_rules() + (load_rules(rules_file) if rules_file is not None else [])
    directory.mkdir(parents=True, exist_ok=True)
    _, checks = exportable(rules)
    header = "# Generated by `playpulse monitoring export`: the rules playpulse evaluates.\n"
    if checks:
        header += (
            "# Catalog query rules have no PromQL equivalent and are evaluated by playpulse "
            "only: " + ", ".join(r.name for r in checks) + "\n"
        )
    rules_path = directory / "playpulse-rules.yml"
    rules_path.write_text(
        header + yaml.safe_dump(prometheus_rules(rules), sort_keys=False, width=1000),
        encoding="utf-8",
    )
    dashboard_path = directory / "playpulse-dashboard.json"
    dashboard_path.write_text(
        json.dumps(grafana_dashboard(rules), indent=2) + "\n", encoding="utf-8"
    )
    return [rules_path, dashboard_path]
