"""Alerts: rules (:mod:`playpulse.alerts.rules`), the samples they read
(:mod:`playpulse.alerts.samples`), evaluation, state and webhook notifications
(:mod:`playpulse.alerts.engine`). ``playpulse up`` runs :func:`start_alerting`;
``playpulse alerts list|history`` reads the state (docs/monitoring.md)."""

from playpulse.alerts.engine import (
    AlertError,
    AlertManager,
    AlertState,
    AlertStore,
    Evaluator,
    firing_alerts,
    start_alerting,
    state_path,
    step,
    webhook_payload,
)
from playpulse.alerts.rules import Rule, active_rules, builtin_rules, load_rules
from playpulse.alerts.samples import (
    AppSource,
    ExpositionSource,
    History,
    MetricSource,
    ScrapeSource,
    StaticSource,
)

__all__ = [
    "AlertError",
    "AlertManager",
    "AlertState",
    "AlertStore",
    "AppSource",
    "Evaluator",
    "ExpositionSource",
    "History",
    "MetricSource",
    "Rule",
    "ScrapeSource",
    "StaticSource",
    "active_rules",
    "builtin_rules",
    "firing_alerts",
    "load_rules",
    "start_alerting",
    "state_path",
    "step",
    "webhook_payload",
]
