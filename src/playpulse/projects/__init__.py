"""Projects: several apps' data kept apart in one playpulse, each with its own keys.

:mod:`playpulse.projects.registry` keeps the projects and their keys (hashed);
:mod:`playpulse.projects.gateway` is the HTTP front that authenticates a request with a
project's key and hands it to that project's collector, read API and dashboard. With no
project created, playpulse works as a single project (the data dir itself).
"""

from playpulse.projects.registry import (
    KEY_KINDS,
    KeyInfo,
    KeyKind,
    Project,
    ProjectKeys,
    create_project,
    get_project,
    issue_key,
    list_keys,
    list_projects,
    project_dir,
    project_names,
    project_settings,
    resolve_key,
    revoke_key,
    rotate_key,
    set_origins,
)

__all__ = [
    "KEY_KINDS",
    "KeyInfo",
    "KeyKind",
    "Project",
    "ProjectKeys",
    "create_project",
    "get_project",
    "issue_key",
    "list_keys",
    "list_projects",
    "project_dir",
    "project_names",
    "project_settings",
    "resolve_key",
    "revoke_key",
    "rotate_key",
    "set_origins",
]
