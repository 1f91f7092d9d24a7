"""The project registry: projects, their allowed browser origins and their keys.

A *project* is one app (or one client of an agency) with data of its own. The registry is
a SQLite file, ``projects.db`` in the data dir; each project's events, store and lake are
a full embedded data dir of their own, ``<data_dir>/projects/<name>/`` (the "database per
tenant" model), so a read with one project's key can only ever open that project's files.

Keys (``secrets.token_urlsafe``, 192 bits) are shown once, when issued, and stored as
SHA-256 hex digests (a fast hash is the standard for random API tokens: unlike a
password, a 192-bit key cannot be guessed from its digest). Each key has a *prefix* (its
first 12 characters, e.g. ``pp_r_Ab3dE6g``) under which it is listed, rotated and
revoked. Kinds:

- ``write``: a server write key, ``Authorization: Bearer <key>`` on ``POST /v1/events``;
- ``browser``: a publishable write key for web pages, accepted only from the project's
  allowed origins (``Origin`` header), also in the query string (``?key=``) or in an
  ``{"api_key": ..., "events": [...]}`` body, as ``navigator.sendBeacon`` cannot set
  headers;
- ``read``: the read API, the dashboard and ``playpulse sql``; a read key may be scoped to
  one vendor (``vendor_id``): it then sees only that vendor's shop metrics.

With no project in the registry (or no registry file), playpulse keeps its single-project
behaviour: the data dir itself, with the keys of :class:`~playpulse.config.Settings`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from playpulse.config import Settings
from playpulse.errors import ConfigError

__all__ = [
    "KEY_KINDS",
    "PROJECTS_DIR",
    "REGISTRY_FILE",
    "KeyInfo",
    "KeyKind",
    "Project",
    "ProjectKeys",
    "create_project",
    "get_project",
    "issue_key",
    "list_keys",
    "list_projects",
    "normalize_origin",
    "project_dir",
    "project_names",
    "project_settings",
    "resolve_key",
    "revoke_key",
    "rotate_key",
    "set_origins",
]

#: The registry file in the data dir.
REGISTRY_FILE = "projects.db"
#: The folder of the data dir that holds one data dir per project.
PROJECTS_DIR = "projects"

KeyKind = Literal["write", "browser", "read"]
#: The kinds of key, in the order ``projects create`` prints them.
KEY_KINDS: tuple[KeyKind, ...] = ("write", "browser", "read")
_KIND_LETTER: dict[KeyKind, str] = {"write": "w", "browser": "b", "read": "r"}
_PREFIX_CHARS = 12
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS projects (
    name TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    origins TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS keys (
    prefix TEXT PRIMARY KEY,
    digest TEXT NOT NULL UNIQUE,
    project TEXT NOT NULL REFERENCES projects(name),
    kind TEXT NOT NULL,
    vendor_id TEXT,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
"""


@dataclass(frozen=True)
class Project:
    """A project: its ``name``, when it was created (UTC) and the browser ``origins``
    its browser keys are accepted from (``scheme://host[:port]``)."""

    name: str
    created_at: datetime
    origins: tuple[str, ...]


@dataclass(frozen=True)
class KeyInfo:
    """What the registry knows of a key (never the key itself): its ``prefix``, its
    ``project``, its ``kind``, the vendor a read key is limited to (``None``: every
    vendor), when it was created and revoked (``None``: in force)."""

    prefix: str
    project: str
    kind: KeyKind
    vendor_id: str | None
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        """Whether the key is in force (not revoked)."""
        return self.revoked_at is None


@dataclass(frozen=True)
class ProjectKeys:
    """The keys of a new project, shown once: ``write_key``, ``browser_key``,
    ``read_key`` (clear text)."""

    project: str
    write_key: str
    browser_key: str
    read_key: str

    def as_json(self) -> dict[str, str]:
        """``{"project", "write_key", "browser_key", "read_key"}``."""
        return {
            "project": self.project,
            "write_key": self.write_key,
            "browser_key": self.browser_key,
            "read_key": self.read_key,
        }


def _now() -> datetime:
    return datetime.now(UTC)


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ConfigError(
            f"project name {name!r} is invalid: use 1-63 characters a-z, 0-9, '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def normalize_origin(origin: str) -> str:
    """``origin`` as browsers send it in ``Origin``: ``scheme://host[:port]``, lower case,
    without a default port or a path.

    Raises :class:`~playpulse.errors.ConfigError` for anything that is not an http(s)
    origin (``https://shop.example``, ``http://127.0.0.1:8080``)."""
    parts = urlsplit(origin.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"origin {origin!r} is invalid: expected http(s)://host[:port]")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ConfigError(f"origin {origin!r} is invalid: an origin has no path or query")
    try:
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"origin {origin!r} is invalid: {exc}") from None
    default = {"http": 80, "https": 443}[parts.scheme]
    host = parts.hostname
    if ":" in host:  # IPv6
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default else "")


def registry_path(settings: Settings) -> Path:
    """Where the registry of ``settings``' data dir is (it may not exist)."""
    return settings.data_dir / REGISTRY_FILE


@contextlib.contextmanager
def _open(settings: Settings, create: bool = False) -> Iterator[sqlite3.Connection | None]:
    path = registry_path(settings)
    if not create and not path.exists():
        yield None
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fresh = not path.exists()
    con = sqlite3.connect(path, timeout=10.0, isolation_level=None)
    try:
        if fresh:
            with contextlib.suppress(OSError):
                os.chmod(path, 0o600)
        con.execute("PRAGMA busy_timeout = 10000")
        con.executescript(_SCHEMA)
        yield con
    finally:
        con.close()


def _project(row: tuple[str, str, str]) -> Project:
    return Project(row[0], datetime.fromisoformat(row[1]), tuple(json.loads(row[2])))


def _key(row: tuple[str, str, str, str | None, str, str | None]) -> KeyInfo:
    kind: KeyKind = row[2]  # type: ignore[assignment]
    return KeyInfo(
        prefix=row[0],
        project=row[1],
        kind=kind,
        vendor_id=row[3],
        created_at=datetime.fromisoformat(row[4]),
        revoked_at=datetime.fromisoformat(row[5]) if row[5] else None,
    )


def list_projects(settings: Settings) -> list[Project]:
    """Every project of ``settings``' data dir, by name (empty without a registry)."""
    with _open(settings) as con:
        if con is None:
            return []
        rows = con.execute("SELECT name, created_at, origins FROM projects ORDER BY name")
        return [_project(r) for r in rows]


def project_names(settings: Settings) -> list[str]:
    """The names of the projects of ``settings``' data dir, sorted (empty: single-project
    mode)."""
    return [p.name for p in list_projects(settings)]


def get_project(settings: Settings, name: str) -> Project:
    """Project ``name``; raises :class:`~playpulse.errors.ConfigError` when there is no
    such project (the message lists the projects there are)."""
    with _open(settings) as con:
        row = None
        if con is not None:
            row = con.execute(
                "SELECT name, created_at, origins FROM projects WHERE name = ?", (name,)
            ).fetchone()
    if row is None:
        known = ", ".join(project_names(settings)) or (
            "none: create one with `playpulse projects create NAME`"
        )
        raise ConfigError(f"no project {name!r} in {settings.data_dir} (projects: {known})")
    return _project(row)


def project_dir(settings: Settings, name: str) -> Path:
    """The data dir of project ``name`` (``<data_dir>/projects/<name>``)."""
    return settings.data_dir / PROJECTS_DIR / _check_name(name)


def project_settings(settings: Settings, name: str | None) -> Settings:
    """The settings of project ``name``: ``settings`` with ``data_dir`` set to the
    project's data dir and the global keys cleared (a project's keys are in the
    registry). ``None`` returns ``settings`` unchanged (single-project mode).

    Raises :class:`~playpulse.errors.ConfigError` when the project does not exist, or
    when ``settings`` names a stream, store or lake by URL (projects live in the embedded
    default; one set of URLs cannot keep projects apart)."""
    if name is None:
        return settings
    get_project(settings, name)
    urls = [n for n in ("stream_url", "store_url", "lake_url") if getattr(settings, n)]
    if urls:
        raise ConfigError(
            f"project {name!r}: projects use the embedded default, but {', '.join(urls)} "
            "is set; unset it or run one playpulse per project"
        )
    return settings.model_copy(
        update={"data_dir": project_dir(settings, name), "write_keys": [], "read_keys": []}
    )


def _insert_key(con: sqlite3.Connection, project: str, kind: KeyKind, vendor_id: str | None) -> str:
    key = f"pp_{_KIND_LETTER[kind]}_{secrets.token_urlsafe(24)}"
    con.execute(
        "INSERT INTO keys (prefix, digest, project, kind, vendor_id, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (key[:_PREFIX_CHARS], _digest(key), project, kind, vendor_id, _now().isoformat()),
    )
    return key


def create_project(settings: Settings, name: str, origins: Sequence[str] = ()) -> ProjectKeys:
    """Create project ``name`` (its data dir and a write, a browser and a read key) and
    return the keys, in clear for the only time.

    ``origins``: where its browser key is accepted from (see :func:`normalize_origin`).
    Raises :class:`~playpulse.errors.ConfigError` for an invalid or taken name or an
    invalid origin, or when the data dir uses stream/store/lake URLs."""
    _check_name(name)
    clean = sorted({normalize_origin(o) for o in origins})
    urls = [n for n in ("stream_url", "store_url", "lake_url") if getattr(settings, n)]
    if urls:
        raise ConfigError(f"projects use the embedded default, but {', '.join(urls)} is set")
    with _open(settings, create=True) as con:
        assert con is not None
        try:
            con.execute("BEGIN IMMEDIATE")
            con.execute(
                "INSERT INTO projects (name, created_at, origins) VALUES (?, ?, ?)",
                (name, _now().isoformat(), json.dumps(clean)),
            )
            keys = {kind: _insert_key(con, name, kind, None) for kind in KEY_KINDS}
            con.execute("COMMIT")
        except sqlite3.IntegrityError:
            con.execute("ROLLBACK")
            raise ConfigError(f"project {name!r} already exists in {settings.data_dir}") from None
    directory = project_dir(settings, name)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    _forget_cache()
    return ProjectKeys(name, keys["write"], keys["browser"], keys["read"])


def issue_key(settings: Settings, project: str, kind: KeyKind, vendor_id: str | None = None) -> str:
    """A new key of ``kind`` for ``project`` (a read key limited to ``vendor_id`` when
    given), in clear for the only time. Existing keys stay in force.

    Raises :class:`~playpulse.errors.ConfigError` for an unknown project or kind, or a
    vendor on a key that is not a read key."""
    if kind not in KEY_KINDS:
        raise ConfigError(f"key kind {kind!r} is invalid: use one of {', '.join(KEY_KINDS)}")
    if vendor_id is not None and kind != "read":
        raise ConfigError("only a read key can be limited to a vendor")
    if vendor_id is not None and not vendor_id.strip():
        raise ConfigError("vendor id is empty")
    get_project(settings, project)
    with _open(settings, create=True) as con:
        assert con is not None
        key = _insert_key(con, project, kind, vendor_id)
    _forget_cache()
    return key


def list_keys(settings: Settings, project: str | None = None) -> list[KeyInfo]:
    """The keys of ``project`` (every project's when ``None``), revoked ones included, by
    project, kind and creation time."""
    with _open(settings) as con:
        if con is None:
            return []
        sql = "SELECT prefix, project, kind, vendor_id, created_at, revoked_at FROM keys"
        args: tuple[str, ...] = ()
        if project is not None:
            get_project(settings, project)
            sql += " WHERE project = ?"
            args = (project,)
        rows = con.execute(sql + " ORDER BY project, kind, created_at", args).fetchall()
    return [_key(r) for r in rows]


def revoke_key(settings: Settings, prefix: str) -> KeyInfo:
    """Revoke the key listed under ``prefix`` (from now on, within
    :data:`CACHE_TTL_S` in running servers). Raises
    :class:`~playpulse.errors.ConfigError` when no key has that prefix."""
    with _open(settings) as con:
        found = None
        if con is not None:
            con.execute(
                "UPDATE keys SET revoked_at = ? WHERE prefix = ? AND revoked_at IS NULL",
                (_now().isoformat(), prefix),
            )
            found = con.execute(
                "SELECT prefix, project, kind, vendor_id, created_at, revoked_at FROM keys "
                "WHERE prefix = ?",
                (prefix,),
            ).fetchone()
    if found is None:
        raise ConfigError(f"no key with prefix {prefix!r} (see `playpulse projects keys`)")
    _forget_cache()
    return _key(found)


def rotate_key(settings: Settings, prefix: str) -> tuple[KeyInfo, str]:
    """Replace the key listed under ``prefix`` by a new one of the same project, kind and
    vendor: returns the old key's (now revoked) info and the new key in clear."""
    old = revoke_key(settings, prefix)
    return old, issue_key(settings, old.project, old.kind, old.vendor_id)


def set_origins(settings: Settings, project: str, origins: Sequence[str]) -> Project:
    """Set the origins ``project``'s browser keys are accepted from (replacing the list)."""
    clean = sorted({normalize_origin(o) for o in origins})
    get_project(settings, project)
    with _open(settings) as con:
        assert con is not None
        con.execute("UPDATE projects SET origins = ? WHERE name = ?", (json.dumps(clean), project))
    _forget_cache()
    return get_project(settings, project)


#: How long a running server trusts what it read from the registry (seconds): a revoked
#: key stops working within this time, a new one starts.
CACHE_TTL_S = 2.0
_cache: dict[tuple[Path, str], tuple[float, KeyInfo | None, tuple[str, ...]]] = {}
_cache_lock = threading.Lock()


def _forget_cache() -> None:
    with _cache_lock:
        _cache.clear()


def resolve_key(settings: Settings, key: str) -> tuple[KeyInfo, tuple[str, ...]] | None:
    """The key info of ``key`` and its project's allowed origins, or ``None`` when it is
    not a key in force. Answers from a cache for :data:`CACHE_TTL_S` seconds (a
    request's key check costs a dict lookup, not a SQLite query)."""
    if not key or len(key) > 200:
        return None
    digest = _digest(key)
    cache_key = (settings.data_dir, digest)
    now = time.monotonic()
    with _cache_lock:
        hit = _cache.get(cache_key)
    if hit is not None and now - hit[0] < CACHE_TTL_S:
        return None if hit[1] is None else (hit[1], hit[2])
    info: KeyInfo | None = None
    origins: tuple[str, ...] = ()
    with _open(settings) as con:
        if con is not None:
            row = con.execute(
                "SELECT k.prefix, k.project, k.kind, k.vendor_id, k.created_at, k.revoked_at, "
                "p.origins FROM keys k JOIN projects p ON p.name = k.project "
                "WHERE k.digest = ? AND k.revoked_at IS NULL",
                (digest,),
            ).fetchone()
            if row is not None:
                info = _key(row[:6])
                origins = tuple(json.loads(row[6]))
    with _cache_lock:
        if len(_cache) > 10_000:
            _cache.clear()
        _cache[cache_key] = (now, info, origins)
    return None if info is None else (info, origins)


def resolve_prefix(settings: Settings, prefix: str) -> KeyInfo | None:
    """The key listed under ``prefix`` if it is in force (a signed cookie names its key by
    prefix; a revoked key's cookies stop working), else ``None``."""
    with _open(settings) as con:
        if con is None:
            return None
        row = con.execute(
            "SELECT prefix, project, kind, vendor_id, created_at, revoked_at FROM keys "
            "WHERE prefix = ? AND revoked_at IS NULL",
            (prefix,),
        ).fetchone()
    return None if row is None else _key(row)
