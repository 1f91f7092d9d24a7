"""Replay quarantined events: validate them again and append those that now pass."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from playpulse.errors import EventValidationError
from playpulse.events.codec import validate_event
from playpulse.quarantine.store import QuarantineEntry, QuarantineStore
from playpulse.stream.base import EventStream


@dataclass
class ReplayResult:
    """What a replay did: ids appended to the stream, ids still failing, ids skipped
    and why (:attr:`skip_reasons`).

    Entries rejected as a whole body (``malformed_body``) hold no single event and are
    skipped; fix the payload and send it again instead.
    """

    replayed: list[int] = field(default_factory=list)
    still_failing: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    #: Why each skipped entry was skipped: :data:`ALREADY_REPLAYED` or :data:`WHOLE_BODY`.
    skip_reasons: dict[int, str] = field(default_factory=dict)

    def summary(self) -> str:
        """One line: ``replayed 3, still failing 1, skipped 2 (1 already replayed: 4;
        1 a whole rejected request body, not one event (send it again, fixed): 7)``;
        up to 10 ids named per reason."""
        line = (
            f"replayed {len(self.replayed)}, still failing {len(self.still_failing)}, "
            f"skipped {len(self.skipped)}"
        )
        if not self.skipped:
            return line
        by_reason: dict[str, list[int]] = {}
        for entry_id in self.skipped:
            by_reason.setdefault(self.skip_reasons.get(entry_id, "skipped"), []).append(entry_id)
        parts = []
        for why, ids in by_reason.items():
            named = ", ".join(str(i) for i in ids[:10]) + (", ..." if len(ids) > 10 else "")
            parts.append(f"{len(ids)} {why}: {named}")
        return f"{line} ({'; '.join(parts)})"


#: Why an entry was skipped: it was replayed before.
ALREADY_REPLAYED = "already replayed"
#: Why an entry was skipped: a whole request body was rejected, there is no one event.
WHOLE_BODY = "a whole rejected request body, not one event (send it again, fixed)"


def replay(
    quarantine: QuarantineStore,
    stream: EventStream,
    entry_ids: Sequence[int] | None = None,
    *,
    batch_size: int = 500,
) -> ReplayResult:
    """Validate quarantined entries again and append the valid ones to ``stream``.

    ``entry_ids`` selects entries (default: every entry still quarantined). Each event is
    validated as of its original ``received_at``, so an event rejected for being too far
    in the future stays rejected. Valid events are appended, then marked ``replayed``;
    invalid ones keep their place with the new reason. A crash between the append and
    the mark can append an event twice: the processor's dedup by ``event_id`` absorbs it.
    Raises :class:`~playpulse.errors.QuarantineError` for an unknown id.
    """
    result = ReplayResult()
    if entry_ids is None:
        entries: list[QuarantineEntry] = []
        after = 0
        while page := quarantine.list(status="quarantined", limit=1000, after_id=after):
            entries.extend(page)
            after = page[-1].id
    else:
        entries = [quarantine.get(i) for i in entry_ids]
    pending: list[tuple[int, str, bytes]] = []
    for entry in entries:
        if entry.status != "quarantined" or entry.reason == "malformed_body":
            result.skipped.append(entry.id)
            why = ALREADY_REPLAYED if entry.status != "quarantined" else WHOLE_BODY
            result.skip_reasons[entry.id] = why
            continue
        try:
            accepted = validate_event(entry.raw, entry.received_at)
        except EventValidationError as exc:
            quarantine.update_rejection(entry.id, exc.reason, exc.errors)
            result.still_failing.append(entry.id)
            continue
        pending.append((entry.id, accepted.event.actor_id, accepted.payload))
    for start in range(0, len(pending), batch_size):
        chunk = pending[start : start + batch_size]
        stream.append([(key, payload) for _, key, payload in chunk])
        ids = [entry_id for entry_id, _, _ in chunk]
        quarantine.mark_replayed(ids, datetime.now(UTC))
        result.replayed.extend(ids)
    return result
