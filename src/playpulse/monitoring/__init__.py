"""Monitoring: the pipeline's metrics on ``/metrics`` (:mod:`playpulse.monitoring.metrics`)
and the export of the alert rules and a Grafana dashboard for existing monitoring
(:mod:`playpulse.monitoring.export`, ``playpulse monitoring export``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from playpulse._lazy import lazy_getattr

if TYPE_CHECKING:
    from playpulse.monitoring.metrics import PipelineMetrics, add_pipeline_metrics

# Imported on first use (PEP 562): every CLI command imports this package (for
# `playpulse monitoring`), and the metrics pull in FastAPI (about 0.12 s per command).
_EXPORTS = {
    "PipelineMetrics": "playpulse.monitoring.metrics",
    "add_pipeline_metrics": "playpulse.monitoring.metrics",
}


__getattr__ = lazy_getattr(__name__, globals(), _EXPORTS)

__all__ = ["PipelineMetrics", "add_pipeline_metrics"]
