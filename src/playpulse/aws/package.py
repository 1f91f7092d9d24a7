"""The Lambda deployment zip: playpulse and its runtime dependencies, as the Lambda
Python runtime imports them (``playpulse aws package``).

Dependencies are installed by pip as manylinux wheels of the Lambda runtime's platform
(``pip install --platform manylinux2014_x86_64 --only-binary=:all: --python-version
3.12 --target ...``), whatever the machine that builds the zip runs, and the zip holds
them at its root beside the ``playpulse`` package. Left out: what the Lambda runtime has
(:data:`RUNTIME_PROVIDED`: boto3 and its dependencies) and, unless ``full``, the
dependencies the two handlers never import (:data:`HANDLER_UNUSED`: DuckDB and sqlglot
serve queries, typer and rich the CLI, uvicorn the HTTP server, confluent-kafka the
Kafka stream, httpx the client), with compiled caches, tests and C headers. The zip is
deterministic: the same inputs give the same bytes (sorted entries, fixed times), so
its digest names an upload.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from playpulse.errors import ConfigError

LAMBDA_PYTHON = "3.12"
LAMBDA_PLATFORM = "manylinux2014_x86_64"
#: Newer wheel platforms the python3.12 runtime (Amazon Linux 2023, glibc 2.34) runs:
#: recent pyarrow releases publish only manylinux_2_28 wheels.
LAMBDA_PLATFORMS_312 = ("manylinux_2_28_x86_64", "manylinux_2_34_x86_64")
#: Distributions the Lambda Python runtime already has.
RUNTIME_PROVIDED = frozenset({"boto3", "botocore", "s3transfer", "jmespath"})
#: Distributions the Lambda handlers do not import (left out unless ``full``).
HANDLER_UNUSED = frozenset(
    {"duckdb", "sqlglot", "typer", "rich", "uvicorn", "confluent-kafka", "httpx"}
)
#: The extra whose dependencies the handlers need besides the base ones.
AWS_EXTRA = "aws"
# Folders no import needs inside a package: compiled caches, tests, C headers.
_SKIP_DIRS = frozenset({"__pycache__", "tests", "include"})
_SKIP_SUFFIXES = (".pyc", ".pyo")
# A zip entry's time: fixed, so the zip's bytes depend only on the files.
_ZIP_TIME = (2020, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class PackageInfo:
    """A built zip: its ``path``, ``size_bytes`` (compressed), ``unzipped_bytes`` (the
    Lambda limit is 250 MB unzipped), ``sha256`` (hex) and the ``requirements`` pip
    installed (empty with ``no_deps``)."""

    path: Path
    size_bytes: int
    unzipped_bytes: int
    sha256: str
    requirements: tuple[str, ...]


def _name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if not match:
        raise ConfigError(f"package: cannot read the requirement '{requirement}'")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def requirements(*, full: bool = False) -> list[str]:
    """The requirements the zip installs: playpulse's base dependencies and those of its
    ``aws`` extra (from the installed playpulse's metadata), without
    :data:`RUNTIME_PROVIDED` and, unless ``full``, :data:`HANDLER_UNUSED`. Raises
    :class:`ConfigError` when playpulse is not installed (its metadata is missing)."""
    try:
        declared = importlib.metadata.requires("playpulse") or []
    except importlib.metadata.PackageNotFoundError as exc:
        raise ConfigError(
            "package: playpulse is not installed (pip install -e .), so its dependencies "
            "are unknown"
        ) from exc
    skip = RUNTIME_PROVIDED | (frozenset() if full else HANDLER_UNUSED)
    out: list[str] = []
    for req in declared:
        spec, _, marker = req.partition(";")
        marker = marker.strip()
        if marker and not re.fullmatch(r"extra\s*==\s*['\"]" + AWS_EXTRA + r"['\"]", marker):
            continue
        if _name(spec) in skip:
            continue
        out.append(spec.strip())
    return sorted(set(out))


def platforms(python_version: str) -> tuple[str, ...]:
    """The wheel platforms pip may pick for the Lambda runtime of ``python_version``
    (python3.11 runs on Amazon Linux 2: manylinux2014 only)."""
    major, _, minor = python_version.partition(".")
    newer = (int(major), int(minor or 0)) >= (3, 12)
    return (LAMBDA_PLATFORM, *(LAMBDA_PLATFORMS_312 if newer else ()))


def _pip_install(reqs: list[str], target: Path, python_version: str) -> None:
    platform_args = [a for p in platforms(python_version) for a in ("--platform", p)]
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-compile",
        *platform_args,
        "--implementation",
        "cp",
        "--python-version",
        python_version,
        "--only-binary=:all:",
        "--target",
        str(target),
        *reqs,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = " ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        raise ConfigError(
            f"package: pip could not install the Lambda dependencies for {LAMBDA_PLATFORM} "
            f"python {python_version}: {tail}"
        )


def _prune(root: Path, drop: frozenset[str]) -> None:
    """Remove the distributions ``drop`` (pulled in as another's dependency) and the
    files no import needs."""
    for dist in root.glob("*.dist-info"):
        if _name(dist.name.split("-")[0]) not in drop:
            continue
        record = dist / "RECORD"
        if record.exists():
            for line in record.read_text().splitlines():
                rel = line.split(",")[0]
                path = (root / rel).resolve()
                if path.is_relative_to(root.resolve()) and path.is_file():
                    path.unlink()
        shutil.rmtree(dist, ignore_errors=True)
    for directory in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if not directory.is_dir():
            continue
        # (a top-level package named tests or include stays)
        unused = directory.name in _SKIP_DIRS and directory.parent != root
        if unused or not any(directory.iterdir()):
            shutil.rmtree(directory, ignore_errors=True)
    if (root / "bin").is_dir():
        shutil.rmtree(root / "bin")


def _copy_playpulse(root: Path) -> None:
    import playpulse

    source = Path(playpulse.__file__).resolve().parent
    shutil.copytree(
        source,
        root / "playpulse",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "static"),
    )


def _write_zip(root: Path, out: Path) -> int:
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not p.name.endswith(_SKIP_SUFFIXES) and "__pycache__" not in p.parts
    )
    unzipped = 0
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for path in files:
            rel = path.relative_to(root).as_posix()
            info = zipfile.ZipInfo(rel, date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (0o755 if os.access(path, os.X_OK) else 0o644) << 16
            data = path.read_bytes()
            unzipped += len(data)
            zf.writestr(info, data)
    tmp.replace(out)
    return unzipped


def build_package(
    out: Path,
    *,
    no_deps: bool = False,
    full: bool = False,
    python_version: str = LAMBDA_PYTHON,
) -> PackageInfo:
    """Build the deployment zip at ``out`` (replaced if it exists) and describe it.

    ``no_deps``: only the playpulse package (for a layer that has the dependencies, or a
    quick test); ``full``: keep :data:`HANDLER_UNUSED`; ``python_version``: the Lambda
    runtime's (``3.12``; ``3.11`` for the python3.11 runtime). Needs pip and an index
    that has the manylinux wheels. Raises :class:`ConfigError` when pip fails or
    playpulse is not installed.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    reqs = [] if no_deps else requirements(full=full)
    with tempfile.TemporaryDirectory(prefix="playpulse-package-") as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        if reqs:
            _pip_install(reqs, root, python_version)
            _prune(root, RUNTIME_PROVIDED | (frozenset() if full else HANDLER_UNUSED))
        _copy_playpulse(root)
        unzipped = _write_zip(root, out)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    return PackageInfo(out, out.stat().st_size, unzipped, digest, tuple(reqs))
