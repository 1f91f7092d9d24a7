"""``playpulse privacy ...``: erase a person (with a receipt), export their events.

Registered in the ``playpulse`` command as ``app.add_typer(privacy_app, name="privacy")``.
The data dir is ``--data-dir`` (here or before the command), else ``PLAYPULSE_DATA_DIR``;
``--project NAME`` picks a project's data dir in it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from playpulse.cli_options import DataDir, command_settings
from playpulse.cli_options import ProjectName as Project
from playpulse.config import Settings
from playpulse.errors import ConfigError

privacy_app = typer.Typer(
    help="Privacy: erase a person's data with a receipt, export their events (docs/privacy.md).",
    no_args_is_help=True,
)

User = Annotated[
    str,
    typer.Option(
        "--user",
        help="The person's user id (or anonymous id), in clear: pseudonymised data dirs "
        "map it to its pseudonyms.",
    ),
]


def _settings(ctx: typer.Context, data_dir: Path | None, project: str | None) -> Settings:
    return command_settings(ctx, data_dir, project)


@privacy_app.command("delete")
def delete(
    ctx: typer.Context,
    user: User,
    project: Project = None,
    suppress: Annotated[
        bool,
        typer.Option(
            "--suppress",
            help="Also refuse this person's later events at the collector (kept as a keyed "
            "hash, not the id).",
        ),
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Erase a person from the stream, the lake, the store and the quarantine, with a
    receipt (printed as JSON, kept in <data dir>/privacy/receipts/).

    With `playpulse up` running, its processor does it between batches and this waits
    for the receipt."""
    from playpulse.privacy.erase import erase_user

    settings = _settings(ctx, data_dir, project)
    receipt = erase_user(settings, user, suppress_later=suppress, project=project)
    typer.echo(json.dumps(receipt, indent=2, sort_keys=True))


@privacy_app.command("export")
def export(
    ctx: typer.Context,
    user: User,
    project: Project = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Write the NDJSON to this file (mode 0600), not stdout."),
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Every event of a person as NDJSON (one a line, in time order): right of access."""
    from playpulse.privacy.export import export_user

    settings = _settings(ctx, data_dir, project)
    if out is None:
        export_user(settings, user, sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return
    import os

    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        raise ConfigError(f"cannot write --out {out}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as f:
        count = export_user(settings, user, f)
    typer.echo(f"{count} event(s) written to {out}", err=True)
