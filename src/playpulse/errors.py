"""One exception root for playpulse, with a subclass per kind of failure.

Catch :class:`PlaypulseError` to handle anything playpulse raises on purpose; catch a
subclass to handle one kind. Every message says what failed, where and why, in one line
that the CLI prints as is (no traceback).
"""

from __future__ import annotations


class PlaypulseError(Exception):
    """Root of every error playpulse raises on purpose."""


class ConfigError(PlaypulseError):
    """A setting is missing or invalid (names the setting and the accepted values)."""


class EventValidationError(PlaypulseError):
    """An event does not match the event model.

    ``errors`` is a list of ``{"loc": str, "msg": str}`` dicts, one per problem, where
    ``loc`` is a dotted path into the event (``"content.duration_s"``). ``reason`` is a
    short machine-readable code (``invalid_event``, ``unknown_event_type``,
    ``malformed_json``, ``event_too_large``, ``occurred_at_out_of_range``) used as the
    quarantine reason and the rejected-events metric label.
    """

    def __init__(
        self,
        message: str,
        errors: list[dict[str, str]] | None = None,
        reason: str = "invalid_event",
    ) -> None:
        super().__init__(message)
        self.errors = errors or [{"loc": "event", "msg": message}]
        self.reason = reason


class BodyError(PlaypulseError):
    """A request body cannot be read as events at all (malformed JSON, bad gzip).

    ``status`` is the HTTP status the collector answers with (400 or 413).
    """

    def __init__(self, message: str, status: int = 400, reason: str = "malformed_body") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class StreamError(PlaypulseError):
    """The event stream failed to append, read or commit."""


class BackpressureError(StreamError):
    """The stream cannot keep up right now; retry after ``retry_after_s`` seconds."""

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class OffsetOutOfRangeError(StreamError):
    """A read or commit named an offset the partition does not have (or no longer has)."""


class StoreError(PlaypulseError):
    """The real-time store failed to read or apply a batch."""


class LakeError(PlaypulseError):
    """The Parquet lake failed to write, read or compact files."""


class QuarantineError(PlaypulseError):
    """The quarantine cannot store, find or replay an entry."""
