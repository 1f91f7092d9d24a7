"""``playpulse monitoring export --dir DIR``: Prometheus alerting and recording rules and
a Grafana dashboard JSON generated from the rules playpulse evaluates
(:mod:`playpulse.monitoring.export`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

monitoring_app = typer.Typer(
    help="Export playpulse's alert rules and dashboard to Prometheus and Grafana.",
    no_args_is_help=True,
)


@monitoring_app.callback()
def _group() -> None:
    """Export playpulse's alert rules and dashboard to Prometheus and Grafana."""


@monitoring_app.command("export")
def export_cmd(
    directory: Annotated[Path, typer.Option("--dir", help="Folder to write the files into.")],
    alert_rules: Annotated[
        Path | None, typer.Option("--alert-rules", help="A YAML file of user rules to add.")
    ] = None,
) -> None:
    """Write playpulse-rules.yml (check it with `promtool check rules`) and
    playpulse-dashboard.json (import it into Grafana)."""
    from playpulse.monitoring.export import export

    for path in export(directory, alert_rules):
        typer.echo(str(path))
