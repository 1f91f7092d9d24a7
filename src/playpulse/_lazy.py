"""Public names of a package imported from their modules on first use (PEP 562)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_getattr(
    package: str, namespace: dict[str, Any], exports: Mapping[str, str]
) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` for ``package``: a name of ``exports`` (name ->
    module that defines it) is imported from its module on first use and kept in
    ``namespace`` (the package's ``globals()``); any other name raises
    :class:`AttributeError`. Declare the names under ``TYPE_CHECKING`` too, for type
    checkers. A name that is also a submodule's name must not be lazy: importing the
    submodule would set the package attribute to the module first."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    return __getattr__
