"""``playpulse extension pack``: build the YouTube watch-time extension (zip or directory)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from playpulse.extension import DEFAULT_SOURCE, pack_extension

extension_app = typer.Typer(
    help="The YouTube watch-time browser extension (Chrome, Manifest V3).",
    no_args_is_help=True,
)


@extension_app.callback()
def _extension() -> None:
    """The YouTube watch-time browser extension (Chrome, Manifest V3)."""


@extension_app.command("pack")
def pack(
    out: Annotated[
        Path | None,
        typer.Option("--out", help="The zip to write (default: playpulse-youtube.zip)."),
    ] = None,
    unpacked: Annotated[
        Path | None,
        typer.Option("--unpacked", help="Also (or only) write it as a directory to load."),
    ] = None,
    source: Annotated[
        Path,
        typer.Option("--source", help="The extension's sources (extensions/youtube)."),
    ] = DEFAULT_SOURCE,
) -> None:
    """Build the extension with the browser SDK inside: a zip for the Chrome Web Store
    (--out) and/or a directory for chrome://extensions "Load unpacked" (--unpacked)."""
    if out is None and unpacked is None:
        out = Path("playpulse-youtube.zip")
    names = pack_extension(out, unpacked=unpacked, source=source)
    for target in (out, unpacked):
        if target is not None:
            typer.echo(f"wrote {target} ({len(names)} files)")
