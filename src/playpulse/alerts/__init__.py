"""Alerts: rules (:mod:`playpulse.alerts.rules`), the samples they read
(:mod:`playpulse.alerts.samples`), evaluation, state and webhook notifications
(:mod:`playpulse.alerts.engine`). ``playpulse up`` runs :func:`start_alerting`;
``playpulse alerts list|history`` reads the state (docs/monitoring.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from playpulse._lazy import lazy_getattr

if TYPE_CHECKING:
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
    from playpulse.alerts.rules import (
        Rule,
        active_rules,
        builtin_rules,
        load_rules,
    )
    from playpulse.alerts.samples import (
        AppSource,
        ExpositionSource,
        History,
        MetricSource,
        ScrapeSource,
        StaticSource,
    )

# Imported on first use (PEP 562): `playpulse alerts ...` and every other CLI command
# import this package, and the engine pulls in httpx (about 0.1 s per command).
_EXPORTS = {
    "AlertError": "playpulse.alerts.engine",
    "AlertManager": "playpulse.alerts.engine",
    "AlertState": "playpulse.alerts.engine",
    "AlertStore": "playpulse.alerts.engine",
    "Evaluator": "playpulse.alerts.engine",
    "firing_alerts": "playpulse.alerts.engine",
    "start_alerting": "playpulse.alerts.engine",
    "state_path": "playpulse.alerts.engine",
    "step": "playpulse.alerts.engine",
    "webhook_payload": "playpulse.alerts.engine",
    "Rule": "playpulse.alerts.rules",
    "active_rules": "playpulse.alerts.rules",
    "builtin_rules": "playpulse.alerts.rules",
    "load_rules": "playpulse.alerts.rules",
    "AppSource": "playpulse.alerts.samples",
    "ExpositionSource": "playpulse.alerts.samples",
    "History": "playpulse.alerts.samples",
    "MetricSource": "playpulse.alerts.samples",
    "ScrapeSource": "playpulse.alerts.samples",
    "StaticSource": "playpulse.alerts.samples",
}


__getattr__ = lazy_getattr(__name__, globals(), _EXPORTS)

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
