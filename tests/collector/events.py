"""Events shared by the collector tests: :func:`event`, a valid ``play_start``.

``tests`` is not a package (importlib import mode): load this file with
:func:`playpulse.testing.load_module`, as the test modules here do::

    events = load_module(Path(__file__).with_name("events.py"), "playpulse_tests_collector_events")
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any


def event(**overrides: Any) -> dict[str, Any]:
    """A valid ``play_start`` event as a JSON-ready dict: a fresh ``event_id``, occurred
    now (UTC), user ``u1``, playback ``p1``, audiobook ``book-1``; ``overrides`` replace
    or add top-level fields."""
    base: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "event_type": "play_start",
        "occurred_at": datetime.now(UTC).isoformat(),
        "user_id": "u1",
        "playback_id": "p1",
        "content": {"content_id": "book-1", "content_type": "audiobook"},
    }
    base.update(overrides)
    return base
