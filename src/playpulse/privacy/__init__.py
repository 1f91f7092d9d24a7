"""Privacy (issue #14): erase a person with a receipt, export their events, keyed
pseudonyms of user ids, the suppression list. See docs/privacy.md.

- :func:`erase_user` (``playpulse privacy delete``), :mod:`playpulse.privacy.erase`;
- :func:`user_events` / :func:`export_user` (``playpulse privacy export``);
- :class:`UserPrivacy` (the collector's hook), :func:`pseudonymize_events` (imports),
  :func:`identities`, :func:`subject_hash`, :func:`suppress`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from playpulse._lazy import lazy_getattr

# Eager: a light module, and its function ``pseudonym`` shares the submodule's name
# (a lazy name would be shadowed by the submodule once anything imports it).
from playpulse.privacy.pseudonym import (
    UserPrivacy,
    identities,
    load_secret,
    pseudonym,
    pseudonymize_events,
    subject_hash,
    suppress,
    suppressed,
)

if TYPE_CHECKING:
    from playpulse.privacy.erase import erase_user, search_data_dir
    from playpulse.privacy.export import export_user, user_events

# Imported on first use (PEP 562): every CLI command imports this package (for
# `playpulse privacy`), and erasing pulls in httpx and numpy (about 0.06 s per command).
_EXPORTS = {
    "erase_user": "playpulse.privacy.erase",
    "search_data_dir": "playpulse.privacy.erase",
    "export_user": "playpulse.privacy.export",
    "user_events": "playpulse.privacy.export",
}


__getattr__ = lazy_getattr(__name__, globals(), _EXPORTS)

__all__ = [
    "UserPrivacy",
    "erase_user",
    "export_user",
    "identities",
    "load_secret",
    "pseudonym",
    "pseudonymize_events",
    "search_data_dir",
    "subject_hash",
    "suppress",
    "suppressed",
    "user_events",
]
