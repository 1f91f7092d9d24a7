"""Privacy (issue #14): erase a person with a receipt, export their events, keyed
pseudonyms of user ids, the suppression list. See docs/privacy.md.

- :func:`erase_user` (``playpulse privacy delete``), :mod:`playpulse.privacy.erase`;
- :func:`user_events` / :func:`export_user` (``playpulse privacy export``);
- :class:`UserPrivacy` (the collector's hook), :func:`pseudonymize_events` (imports),
  :func:`identities`, :func:`subject_hash`, :func:`suppress`.
"""

from __future__ import annotations

from playpulse.privacy.erase import erase_user, search_data_dir
from playpulse.privacy.export import export_user, user_events
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
