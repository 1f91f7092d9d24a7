"""``playpulse projects ...``: create projects, list, issue, rotate and revoke their keys.

Keys are printed once, when issued; the registry keeps only their digests. The data dir
is the global ``--data-dir`` (``playpulse --data-dir D projects ...``) or
``PLAYPULSE_DATA_DIR``.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from playpulse.cli_options import command_settings
from playpulse.config import Settings
from playpulse.errors import ConfigError
from playpulse.projects import registry

projects_app = typer.Typer(
    help="Projects: several apps' data kept apart, each with its own keys.",
    no_args_is_help=True,
)

Fmt = Annotated[str, typer.Option("--format", help="table or json.")]
Origins = Annotated[
    list[str] | None,
    typer.Option(
        "--origin",
        help="A web origin its browser key is accepted from, e.g. https://shop.example "
        "(repeatable).",
    ),
]


def _settings(ctx: typer.Context) -> Settings:
    return command_settings(ctx)


def _check_format(fmt: str) -> None:
    if fmt not in ("table", "json"):
        raise ConfigError(f"--format must be table or json, not {fmt!r}")


def _key_row(info: registry.KeyInfo) -> dict[str, str | None]:
    return {
        "prefix": info.prefix,
        "project": info.project,
        "kind": info.kind,
        "vendor_id": info.vendor_id,
        "created_at": info.created_at.isoformat(),
        "revoked_at": info.revoked_at.isoformat() if info.revoked_at else None,
    }


@projects_app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Project name: a-z, 0-9, '_', '-'.")],
    origins: Origins = None,
    fmt: Fmt = "table",
) -> None:
    """Create a project and print its write, browser and read keys (shown only now)."""
    _check_format(fmt)
    keys = registry.create_project(_settings(ctx), name, origins or [])
    if fmt == "json":
        typer.echo(json.dumps(keys.as_json()))
        return
    console = Console()
    console.print(f"project {escape(name)} created; store these keys now (not shown again):")
    for kind, key in (
        ("write key (servers)", keys.write_key),
        ("browser key (web pages)", keys.browser_key),
        ("read key (API, dashboard)", keys.read_key),
    ):
        console.print(f"  {kind}: {escape(key)}", soft_wrap=True)


@projects_app.command("list")
def list_(ctx: typer.Context, fmt: Fmt = "table") -> None:
    """List the projects with their allowed browser origins."""
    _check_format(fmt)
    projects = registry.list_projects(_settings(ctx))
    if fmt == "json":
        rows = [
            {"project": p.name, "created_at": p.created_at.isoformat(), "origins": list(p.origins)}
            for p in projects
        ]
        typer.echo(json.dumps(rows))
        return
    table = Table("project", "created_at", "origins")
    for p in projects:
        table.add_row(escape(p.name), p.created_at.isoformat(), escape(" ".join(p.origins)))
    Console().print(table)


@projects_app.command("keys")
def keys(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="Only this project's keys.")] = None,
    fmt: Fmt = "table",
) -> None:
    """List keys by prefix (never the keys themselves), revoked ones included."""
    _check_format(fmt)
    rows = [_key_row(k) for k in registry.list_keys(_settings(ctx), name)]
    if fmt == "json":
        typer.echo(json.dumps(rows))
        return
    table = Table("prefix", "project", "kind", "vendor_id", "created_at", "revoked_at")
    for row in rows:
        table.add_row(*(escape(v) if v else "" for v in row.values()))
    Console().print(table)


@projects_app.command("issue-key")
def issue_key(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The project.")],
    kind: Annotated[str, typer.Option(help="write, browser or read.")] = "read",
    vendor: Annotated[
        str | None,
        typer.Option("--vendor", help="Limit a read key to this vendor's shop metrics."),
    ] = None,
) -> None:
    """Issue one more key for a project and print it (shown only now)."""
    if kind not in registry.KEY_KINDS:
        raise ConfigError(f"--kind must be write, browser or read, not {kind!r}")
    key = registry.issue_key(_settings(ctx), name, kind, vendor)
    typer.echo(key)


@projects_app.command("rotate")
def rotate(
    ctx: typer.Context, prefix: Annotated[str, typer.Argument(help="The key's prefix.")]
) -> None:
    """Revoke a key and print its replacement (same project, kind and vendor)."""
    old, key = registry.rotate_key(_settings(ctx), prefix)
    typer.echo(f"revoked {old.prefix}; new {old.kind} key:", err=True)
    typer.echo(key)


@projects_app.command("revoke")
def revoke(
    ctx: typer.Context, prefix: Annotated[str, typer.Argument(help="The key's prefix.")]
) -> None:
    """Revoke a key: running servers refuse it within two seconds."""
    info = registry.revoke_key(_settings(ctx), prefix)
    typer.echo(f"revoked {info.prefix} ({info.kind} key of {info.project})")


@projects_app.command("origins")
def origins(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The project.")],
    origin: Annotated[list[str], typer.Argument(help="Allowed origins (replace the list).")],
) -> None:
    """Set the web origins a project's browser keys are accepted from."""
    project = registry.set_origins(_settings(ctx), name, origin)
    typer.echo(f"{project.name}: {' '.join(project.origins)}")
