"""The quarantine (dead-letter store): every rejected event, kept with its reason.

Nothing playpulse rejects is dropped silently: the raw payload, the reason code, the
errors and the receive time are stored here, and can be listed, shown and replayed after
a fix (``playpulse quarantine list|show|replay``).
"""

from playpulse.quarantine.replay import ReplayResult, replay
from playpulse.quarantine.store import (
    QuarantineEntry,
    QuarantineStats,
    QuarantineStore,
    Rejection,
    open_quarantine,
)

__all__ = [
    "QuarantineEntry",
    "QuarantineStats",
    "QuarantineStore",
    "Rejection",
    "ReplayResult",
    "open_quarantine",
    "replay",
]
