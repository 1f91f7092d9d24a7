"""Monitoring: the pipeline's metrics on ``/metrics`` (:mod:`playpulse.monitoring.metrics`)
and the export of the alert rules and a Grafana dashboard for existing monitoring
(:mod:`playpulse.monitoring.export`, ``playpulse monitoring export``)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from playpulse.monitoring.metrics import PipelineMetrics, add_pipeline_metrics

# Imported on first use (PEP 562): every CLI command imports this package (for
# `playpulse monitoring`), and the metrics pull in FastAPI (about 0.12 s per command).
_EXPORTS = {
    "PipelineMetrics": "playpulse.monitoring.metrics",
    "add_pipeline_metrics": "playpulse.monitoring.metrics",
}


def __getattr__(name: str) -> Any:
    """The public name ``name``, imported from its module on first use."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = ["PipelineMetrics", "add_pipeline_metrics"]
