"""``playpulse alerts list|history``: the alert states and transitions that ``playpulse
up`` keeps in ``<data dir>/alerts.db``, and ``playpulse alerts rules`` (the rules it
evaluates). The data dir is the global ``--data-dir`` or ``PLAYPULSE_DATA_DIR``."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from playpulse.config import Settings
from playpulse.errors import ConfigError

if TYPE_CHECKING:
    from playpulse.alerts.engine import AlertStore

alerts_app = typer.Typer(
    help="Alerts: what fires now, what fired, the rules (docs/monitoring.md).",
    no_args_is_help=True,
)

Fmt = Annotated[str, typer.Option("--format", help="table or json.")]


def _settings(ctx: typer.Context, **overrides: Any) -> Settings:
    data_dir: Path | None = ctx.find_root().params.get("data_dir")
    values = {k: v for k, v in overrides.items() if v is not None}
    if data_dir is not None:
        values["data_dir"] = data_dir
    try:
        return Settings(**values)
    except ValidationError as exc:
        raise ConfigError(f"invalid settings: {exc.errors()[0]['msg']}") from None


def _check_format(fmt: str) -> None:
    if fmt not in ("table", "json"):
        raise ConfigError(f"--format must be table or json, not {fmt!r}")


def _open(settings: Settings) -> AlertStore:
    # Imported here: the engine (httpx) and the rules (pydantic models) cost every CLI
    # command about 0.13 s at import.
    from playpulse.alerts.engine import AlertStore, state_path

    path = state_path(settings)
    if not path.exists():
        raise ConfigError(
            f"no alert state in {settings.data_dir}: alerts are evaluated by `playpulse up`"
        )
    return AlertStore(path, create=False)


@alerts_app.command("list")
def list_alerts(
    ctx: typer.Context,
    fmt: Fmt = "table",
    all_states: Annotated[
        bool, typer.Option("--all", help="Also inactive and resolved alerts.")
    ] = False,
) -> None:
    """Alerts firing or pending now (with --all: every alert judged so far)."""
    _check_format(fmt)
    store = _open(_settings(ctx))
    try:
        rows = store.rows()
    finally:
        store.close()
    if not all_states:
        rows = [r for r in rows if r["state"] in ("firing", "pending")]
    if fmt == "json":
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo("no alert is firing or pending" + ("" if all_states else " (--all: every one)"))
        return
    table = Table("alert", "state", "since", "value", "summary")
    for r in rows:
        since = r["fired_at"] if r["state"] == "firing" else r["changed_at"]
        value = "" if r["value"] is None else f"{r['value']:.4g}"
        table.add_row(escape(r["name"]), r["state"], since or "", value, escape(r["summary"]))
    Console().print(table)


@alerts_app.command("history")
def history(
    ctx: typer.Context,
    fmt: Fmt = "table",
    limit: Annotated[int, typer.Option(min=1, help="Newest transitions to show.")] = 50,
) -> None:
    """State changes of the alerts, newest first."""
    _check_format(fmt)
    store = _open(_settings(ctx))
    try:
        rows: list[dict[str, Any]] = [
            {
                "name": t.name,
                "from": t.from_state,
                "to": t.to_state,
                "at": datetime.fromtimestamp(t.at, UTC).isoformat(),
                "value": t.value,
            }
            for t in store.history(limit)
        ]
    finally:
        store.close()
    if fmt == "json":
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table("at", "alert", "from", "to", "value")
    for r in rows:
        value = "" if r["value"] is None else f"{r['value']:.4g}"
        table.add_row(r["at"], escape(r["name"]), r["from"], r["to"], value)
    Console().print(table)


@alerts_app.command("rules")
def rules(
    ctx: typer.Context,
    alert_rules: Annotated[
        Path | None, typer.Option("--alert-rules", help="A YAML file of user rules.")
    ] = None,
    fmt: Fmt = "table",
) -> None:
    """The rules `playpulse up` evaluates (built-in, then user rules)."""
    _check_format(fmt)
    from playpulse.alerts.rules import active_rules

    found = active_rules(_settings(ctx, alert_rules=alert_rules))
    if fmt == "json":
        typer.echo(json.dumps([r.model_dump(by_alias=True) for r in found], indent=2))
        return
    table = Table("alert", "for", "labels", "summary")
    for r in found:
        labels = ", ".join(f"{k}={v}" for k, v in r.labels.items())
        table.add_row(escape(r.name), f"{r.for_s:g} s", escape(labels), escape(r.summary))
    Console().print(table)
