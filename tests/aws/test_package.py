"""The Lambda deployment zip (playpulse.aws.package, ``playpulse aws package``): built
once for the module with its dependencies as manylinux wheels for python3.12 (pip through
the configured index; about 30 s), then read: the handlers and every distribution they
import are in it, boto3 and the handlers' unused dependencies are not, the compiled
extensions are CPython 3.12 x86_64 Linux builds, it fits Lambda's 250 MB, and the same
inputs give the same bytes."""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from playpulse.aws.package import (
    HANDLER_UNUSED,
    RUNTIME_PROVIDED,
    PackageInfo,
    build_package,
    requirements,
)
from playpulse.cli import app

LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> PackageInfo:
    return build_package(tmp_path_factory.mktemp("package") / "lambda.zip")


def names(info: PackageInfo) -> list[str]:
    with zipfile.ZipFile(info.path) as zf:
        return zf.namelist()


def distributions(entries: list[str]) -> set[str]:
    """Normalized names of the distributions whose dist-info is in the zip."""
    found = set()
    for entry in entries:
        top = entry.split("/", 1)[0]
        if top.endswith(".dist-info"):
            name = top.removesuffix(".dist-info").rsplit("-", 1)[0]
            found.add(re.sub(r"[-_.]+", "-", name).lower())
    return found


def test_holds_playpulse_and_its_handlers(package: PackageInfo) -> None:
    entries = names(package)
    for module in ("aws/processor_handler.py", "aws/collector_handler.py", "config.py"):
        assert f"playpulse/{module}" in entries
    assert not any("__pycache__" in e or e.endswith(".pyc") for e in entries)


def test_leaves_out_what_the_runtime_has_and_the_handlers_do_not_use(
    package: PackageInfo,
) -> None:
    dists = distributions(names(package))
    assert not dists & RUNTIME_PROVIDED
    assert not dists & HANDLER_UNUSED
    assert {"pyarrow", "pydantic", "fastapi", "msgspec", "mangum"} <= dists
    tops = {e.split("/", 1)[0] for e in names(package)}
    assert not {"boto3", "botocore", "duckdb", "sqlglot", "uvicorn"} & tops


HANDLERS = ("playpulse.aws.processor_handler", "playpulse.aws.collector_handler")


def _import_handlers(blocked: list[str]) -> subprocess.CompletedProcess[str]:
    """Import both handlers in a fresh interpreter where the top-level modules
    ``blocked`` cannot be imported; prints the top-level modules loaded, as JSON."""
    code = (
        "import json, sys\n"
        f"for name in {blocked!r}:\n"
        "    sys.modules[name] = None\n"
        f"for handler in {list(HANDLERS)!r}:\n"
        "    __import__(handler)\n"
        "print(json.dumps(sorted({m.split('.')[0] for m, v in sys.modules.items() if v})))\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_the_handlers_import_with_only_what_is_in_it(package: PackageInfo) -> None:
    # The zip's wheels are CPython 3.12 builds this interpreter cannot load, so: import
    # both handlers here with every installed distribution that the zip lacks (and the
    # Lambda runtime does not provide) made unimportable; they must still import.
    # (numpy, orjson ... are optional imports of pyarrow, fastapi ...: blocked, they
    # are skipped.)
    done = _import_handlers([])
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout)
    owners = importlib.metadata.packages_distributions()
    in_zip = distributions(names(package)) | RUNTIME_PROVIDED | {"playpulse"}
    foreign = sorted(
        module
        for module in loaded
        if module not in sys.stdlib_module_names
        and module in owners
        and not {re.sub(r"[-_.]+", "-", d).lower() for d in owners[module]} & in_zip
    )
    assert "pyarrow" in loaded  # the check sees real imports
    blocked = _import_handlers(foreign)
    assert blocked.returncode == 0, f"blocking {foreign}: {blocked.stderr[-2000:]}"
    # And blocking a distribution that is in the zip does break them: the check can fail.
    assert _import_handlers([*foreign, "msgspec"]).returncode != 0


def test_compiled_extensions_are_for_the_lambda_runtime(package: PackageInfo) -> None:
    extensions = [e for e in names(package) if e.endswith(".so") and ".cpython-" in e]
    assert extensions
    for entry in extensions:
        assert ".cpython-312-x86_64-linux-gnu.so" in entry or "abi3" in entry, entry


def test_fits_lambda_and_reports_its_size(package: PackageInfo) -> None:
    with zipfile.ZipFile(package.path) as zf:
        unzipped = sum(i.file_size for i in zf.infolist())
    assert unzipped == package.unzipped_bytes
    assert package.unzipped_bytes < LAMBDA_UNZIPPED_LIMIT
    assert package.size_bytes == package.path.stat().st_size
    assert package.requirements == tuple(requirements())


def test_same_inputs_same_bytes(tmp_path: Path) -> None:
    first = build_package(tmp_path / "a.zip", no_deps=True)
    second = build_package(tmp_path / "b.zip", no_deps=True)
    assert first.sha256 == second.sha256
    assert first.path.read_bytes() == second.path.read_bytes()
    dists = distributions(names(first))
    assert dists == set()  # no dependencies at all
    assert "playpulse/aws/template.py" in names(first)


def test_requirements_come_from_playpulse_metadata() -> None:
    reqs = requirements()
    base = {re.split(r"[<>=!~\[ ;]", r, maxsplit=1)[0].lower() for r in reqs}
    assert "mangum" in base  # from the aws extra
    assert "boto3" not in base
    assert "duckdb" not in base
    assert "duckdb" in {
        re.split(r"[<>=!~\[ ;]", r, maxsplit=1)[0].lower() for r in requirements(full=True)
    }


def test_cli_builds_the_zip(tmp_path: Path) -> None:
    out = tmp_path / "cli.zip"
    result = CliRunner().invoke(app, ["aws", "package", "--no-deps", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert zipfile.is_zipfile(out)
    assert str(out) in result.output
    assert "MB zipped" in result.output
