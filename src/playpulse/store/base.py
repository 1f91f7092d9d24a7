"""The real-time store interface: live aggregates, dedup keys, state and offsets.

The data model is DynamoDB-shaped so that a DynamoDB backend maps one to one:

- *items* keyed by a partition key and a sort key (``pk="CONTENT#book-42"``,
  ``sk="DAY#2026-11-21"``) holding numeric attributes that only ever get added to
  (``plays``, ``playing_time_s``, ...);
- *sets* of members for exact distinct counts (unique listeners of a title on a day);
- *dedup keys*: event ids already processed, each with an expiry time;
- *state* blobs: open plays and sessions that span batches;
- *offsets*: per consumer and stream partition, the next offset to process.

:meth:`RealtimeStore.apply` writes all of a :class:`StoreBatch` atomically, offsets
included: a processor that crashes at any point resumes from the offsets of the last
applied batch, so nothing is lost and nothing counts twice (exactly-once on top of an
at-least-once stream).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from playpulse.errors import StoreError

ItemKey = tuple[str, str]


def checked_text(value: object, what: str) -> str:
    """``value`` if it is a string every backend can keep (UTF-8 encodable: no lone
    surrogates); raises :class:`~playpulse.errors.StoreError` naming ``what`` (``"set
    key"``, ``"store key"`` ...) otherwise."""
    if not isinstance(value, str):
        raise StoreError(f"{what} must be a string, got {value!r}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise StoreError(f"{what} {value!r} is not valid text: {exc}") from exc
    return value


def replayed(batch: StoreBatch, applied: dict[int, int]) -> bool:
    """Whether ``batch`` was applied already, given its consumer's ``applied`` offsets
    (partition -> next offset): every offset of the batch is at or below the applied
    one (see :meth:`RealtimeStore.apply`). ``False`` for a batch without offsets.
    Raises :class:`~playpulse.errors.StoreError` for a batch that mixes applied and new
    positions."""
    if not batch.offsets:
        return False
    old = [
        p
        for p, o in batch.offsets.items()
        if p in applied and isinstance(o, int) and o <= applied[p]
    ]
    if not old:
        return False
    if len(old) < len(batch.offsets):
        raise StoreError(
            f"a batch of {batch.consumer!r} mixes applied positions (partitions "
            f"{sorted(old)}) with new ones: refused"
        )
    return True


@dataclass
class StoreBatch:
    """Everything one processed micro-batch changes, applied as one unit.

    - ``consumer``: the processor's name; ``offsets``: partition -> next offset to read.
    - ``increments``: (pk, sk) -> attribute -> amount to add (may be negative to
      retract an earlier contribution).
    - ``members``: (set key, member) pairs to add to sets.
    - ``dedup``: (event_id, expires_at) of events processed in this batch.
    - ``states``: key -> blob to store, or ``None`` to delete.
    """

    consumer: str
    offsets: dict[int, int] = field(default_factory=dict)
    increments: dict[ItemKey, dict[str, float]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(float))
    )
    members: set[tuple[str, str]] = field(default_factory=set)
    dedup: list[tuple[str, datetime]] = field(default_factory=list)
    states: dict[str, bytes | None] = field(default_factory=dict)

    def add(self, pk: str, sk: str, **amounts: float) -> None:
        """Add ``amounts`` to the attributes of item (pk, sk)."""
        item = self.increments[(pk, sk)]
        for name, amount in amounts.items():
            item[name] += amount


class RealtimeStore(ABC):
    """Backend for live metrics (see the module docstring).

    Backends implement the abstract methods and pass ``tests/store/test_contract.py``.
    """

    @abstractmethod
    def apply(self, batch: StoreBatch) -> None:
        """Apply ``batch`` atomically: all of it or, on error, none of it.

        Idempotent per (consumer, partition, position): a batch whose every offset is at
        or below the offset its consumer already applied for that partition (the same
        batch again, or an older one: a redelivery) changes nothing. A batch that
        mixes such offsets with new ones raises. Batches without offsets always apply.
        A backend without large transactions keeps this by fencing each item update
        with the position (DynamoDB), not by one transaction.

        Raises :class:`~playpulse.errors.StoreError` on failure, and for a batch that
        mixes applied and new positions.
        """

    @abstractmethod
    def replace(self, batch: StoreBatch) -> None:
        """Replace what the store derived (items, sets, states) by what ``batch`` writes
        into an empty store, atomically: readers see the old contents or the new, never
        a mix. What the stream delivered stays: consumers' offsets (the batch's own are
        set) and dedup keys (the batch's are added). What a reprocess does with the
        store it recomputed.

        Raises :class:`~playpulse.errors.StoreError` on failure (nothing changed then).
        """

    @abstractmethod
    def offsets(self, consumer: str) -> dict[int, int]:
        """Next offset to process per partition for ``consumer`` ({} if never applied)."""

    @abstractmethod
    def dedup_expiries(self, event_ids: Sequence[str]) -> dict[str, datetime]:
        """The expiry time (UTC-aware) of each id among ``event_ids`` that has a dedup
        key (not yet removed by :meth:`expire_dedup`); ids without one are left out."""

    def seen(self, event_ids: Sequence[str]) -> set[str]:
        """The ids among ``event_ids`` that have a dedup key (see :meth:`dedup_expiries`)."""
        return set(self.dedup_expiries(event_ids))

    @abstractmethod
    def states(self, keys: Iterable[str]) -> dict[str, bytes]:
        """Stored state blobs for ``keys`` (missing keys are left out)."""

    @abstractmethod
    def state_keys(self, prefix: str) -> list[str]:
        """Every stored state key starting with ``prefix``."""

    @abstractmethod
    def item(self, pk: str, sk: str) -> dict[str, float]:
        """Attributes of one item ({} if absent)."""

    @abstractmethod
    def items(self, pk: str, sk_prefix: str = "") -> list[tuple[str, dict[str, float]]]:
        """(sk, attributes) of the items under ``pk`` whose sort key starts with
        ``sk_prefix``, by sort key."""

    @abstractmethod
    def scan(self, pk_prefix: str, sk: str) -> list[tuple[str, dict[str, float]]]:
        """(pk, attributes) of the items with sort key ``sk`` whose partition key starts
        with ``pk_prefix`` (a DynamoDB GSI on sk in a DynamoDB backend)."""

    @abstractmethod
    def count_members(self, set_key: str) -> int:
        """Exact number of distinct members of a set."""

    @abstractmethod
    def expire_dedup(self, before: datetime) -> int:
        """Forget dedup keys that expire before ``before``; return how many."""

    def keep_states_alive(self) -> int:
        """Rewrite the states that would otherwise expire while no batch is applied,
        and return how many were rewritten. A backend whose states expire unless an
        apply carries them forward (DynamoDB's state packs have a TTL) does it here.
        ``playpulse up`` calls it hourly while idle; ``playpulse aws run-processor`` and
        the stack's EventBridge rule call it daily. The default: states never expire
        here, so nothing to do (0). Raises :class:`~playpulse.errors.StoreError` on
        failure."""
        return 0

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
