"""The YouTube watch-time extension (Chrome, Manifest V3): packing it for installation.

The extension's sources are in the repository's ``extensions/youtube/`` (manifest,
service worker, content script, options page). :func:`pack_extension` adds the browser
SDK (:data:`playpulse.sdk_js.SDK_PATH`) and writes the zip the Chrome Web Store takes, or
an unpacked directory for "Load unpacked". ``playpulse extension pack`` is its command
(:mod:`playpulse.extension.cli`).
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

from playpulse.errors import ConfigError

__all__ = ["DEFAULT_SOURCE", "EXCLUDED", "extension_files", "pack_extension"]

_PACKAGED = Path(__file__).resolve().parent / "youtube"
#: Where the sources are: ``playpulse/extension/youtube`` when a wheel carries them
#: there, else ``extensions/youtube`` of the source checkout this package runs from.
DEFAULT_SOURCE = (
    _PACKAGED
    if (_PACKAGED / "manifest.json").is_file()
    else Path(__file__).resolve().parents[3] / "extensions" / "youtube"
)
#: Files of the source directory that are not part of the extension.
EXCLUDED = frozenset({"README.md"})
#: The SDK's name inside the extension (the manifest's content script loads it).
SDK_NAME = "playpulse.js"
#: Zip entries get this time, so one source gives the same bytes (reproducible builds).
_ZIP_TIME = (2024, 1, 1, 0, 0, 0)


def extension_files(source: Path = DEFAULT_SOURCE) -> dict[str, Path]:
    """The extension's files by their name in the package: ``{relative posix path:
    file}``, the SDK included, sorted by name.

    Raises :class:`ConfigError` when ``source`` has no ``manifest.json``, the manifest is
    not Manifest V3 JSON, or a file it names is missing.
    """
    manifest_path = source / "manifest.json"
    if not manifest_path.is_file():
        raise ConfigError(
            f"extension: no manifest.json in {source}: pass --source extensions/youtube "
            "of a playpulse checkout"
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        raise ConfigError(f"extension: {manifest_path} is not readable JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("manifest_version") != 3:
        raise ConfigError(f"extension: {manifest_path} is not a Manifest V3 manifest")
    files: dict[str, Path] = {}
    for path in sorted(source.rglob("*")):
        name = path.relative_to(source).as_posix()
        if (
            path.is_file()
            and name not in EXCLUDED
            and not any(part.startswith(".") for part in path.relative_to(source).parts)
        ):
            files[name] = path
    # Here, not at the top: playpulse.sdk_js imports FastAPI, which every CLI command
    # would then load (the CLI imports this module for `playpulse extension`).
    from playpulse.sdk_js import SDK_PATH

    files[SDK_NAME] = SDK_PATH
    named = [manifest.get("background", {}).get("service_worker")]
    named += [manifest.get("options_ui", {}).get("page")]
    for script in manifest.get("content_scripts", []):
        named += script.get("js", [])
    missing = sorted(n for n in named if n and n not in files)
    if missing:
        raise ConfigError(f"extension: {manifest_path} names missing files: {missing}")
    return dict(sorted(files.items()))


def pack_extension(
    out: Path | None = None, *, unpacked: Path | None = None, source: Path = DEFAULT_SOURCE
) -> list[str]:
    """Build the extension: a zip at ``out`` and/or a directory at ``unpacked``.

    The zip is deterministic (sorted entries, fixed times, deflated). ``unpacked`` is
    replaced if it exists and holds a ``manifest.json`` (an earlier build), and refused
    otherwise when not empty. Returns the packed names. Raises :class:`ConfigError` for
    a bad source (see :func:`extension_files`), a refused ``unpacked`` directory, or
    neither output given.
    """
    if out is None and unpacked is None:
        raise ConfigError("extension pack: give --out FILE.zip and/or --unpacked DIR")
    files = extension_files(source)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, path in files.items():
                info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                archive.writestr(info, path.read_bytes())
    if unpacked is not None:
        if unpacked.exists() and any(unpacked.iterdir()):
            if not (unpacked / "manifest.json").is_file():
                raise ConfigError(
                    f"extension pack: {unpacked} is not empty and is not an earlier build "
                    "(no manifest.json): choose another --unpacked directory"
                )
            shutil.rmtree(unpacked)
        for name, path in files.items():
            target = unpacked / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
    return list(files)
