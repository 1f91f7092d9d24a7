"""What the ``playpulse`` command groups share: the ``--data-dir`` and ``--project``
options and the settings a command runs with.

The sub-apps (``privacy``, ``catalog``/``enrich``, ``projects``) import this small module,
not :mod:`playpulse.cli` (which imports them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from playpulse.config import Settings
from playpulse.errors import ConfigError

__all__ = ["DataDir", "ProjectName", "command_settings"]

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Where playpulse keeps its data [env PLAYPULSE_DATA_DIR; default ./.playpulse].",
        show_default=False,
    ),
]
ProjectName = Annotated[
    str | None,
    typer.Option(
        "--project",
        envvar="PLAYPULSE_PROJECT",
        help="Use project NAME's data (`playpulse projects create NAME`) instead of the "
        "data dir's own.",
        show_default=False,
    ),
]


def command_settings(
    ctx: typer.Context | None, data_dir: Path | None = None, project: str | None = None
) -> Settings:
    """The settings a command runs with: the data dir of its own ``--data-dir``, else of
    the global one (``playpulse --data-dir D ...``), else of ``PLAYPULSE_DATA_DIR``; of
    ``project``'s data dir when given (:func:`playpulse.projects.project_settings`).

    Raises :class:`~playpulse.errors.ConfigError` for invalid settings (one line) or an
    unknown project."""
    chosen = data_dir or (ctx.find_root().params.get("data_dir") if ctx is not None else None)
    try:
        settings = Settings(data_dir=chosen) if chosen is not None else Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from None
    if project is None:
        return settings
    from playpulse.projects import project_settings

    return project_settings(settings, project)
