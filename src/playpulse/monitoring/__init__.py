"""Monitoring: the pipeline's metrics on ``/metrics`` (:mod:`playpulse.monitoring.metrics`)
and the export of the alert rules and a Grafana dashboard for existing monitoring
(:mod:`playpulse.monitoring.export`, ``playpulse monitoring export``)."""

from playpulse.monitoring.metrics import PipelineMetrics, add_pipeline_metrics

__all__ = ["PipelineMetrics", "add_pipeline_metrics"]
