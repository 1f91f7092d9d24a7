"""Helpers shared by the benchmarks in bench/: the machine line, the command paragraph
and docs/benchmarks.md.

Each benchmark owns one section of docs/benchmarks.md, between its
``<!-- bench:NAME:begin -->`` and ``<!-- bench:NAME:end -->`` markers, and replaces only
that section (``write_docs``).
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
from pathlib import Path

import psutil

_DOC_HEADER = """# Benchmarks

Each benchmark in `bench/` measures one part of playpulse on one machine and, when run
with `--write-docs`, replaces its own section below in place: the text between its
`<!-- bench:NAME:begin -->` and `<!-- bench:NAME:end -->` markers. Sections of benchmarks
that do not exist yet are placeholders.
"""

_PLACEHOLDERS = (
    ("ingest", "## Ingest (bench/ingest.py)"),
    ("process", "## Processing"),
    ("query", "## Query"),
)


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- bench:{name}:begin -->", f"<!-- bench:{name}:end -->"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = psutil.virtual_memory().total / 2**30
    return (
        f"{os.cpu_count()} cores ({cpu}), {memory:.0f} GiB RAM, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}"
    )


def command_lines(command: str) -> list[str]:
    """The section's ``Command:`` paragraph as Markdown lines: ``command`` in a ``sh``
    code block, with a blank line before and after."""
    return ["", "Command:", "", "```sh", command, "```", ""]


def write_docs(path: Path, name: str, section: str) -> None:
    """Replace section ``name`` of ``path`` in place (create the file or section if new)."""
    if path.exists():
        text = path.read_text()
    else:
        text = _DOC_HEADER
        for placeholder, heading in _PLACEHOLDERS:
            begin, end = _markers(placeholder)
            text += f"\n{begin}\n{heading}\n\nNot measured yet.\n{end}\n"
    begin, end = _markers(name)
    block = f"{begin}\n{section.strip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = text.rstrip("\n") + f"\n\n{block}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
