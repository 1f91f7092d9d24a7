"""Turn plays, sessions and commerce events into store items (the live aggregates).

A *contribution* maps store items ``(pk, sk)`` to attribute amounts. Plays and sessions
can change when more of their events arrive (out of order, late), so the processor
keeps each one's previous contribution and applies only the difference
(:func:`diff`): the store always holds the sum of the current contributions, whatever
the batch boundaries were.

Item keys (DynamoDB-shaped; the query layer reads them):

- ``("TOTAL" | "CONTENT#<id>" | "CREATOR#<name>" | "CTYPE#<type>" |
  "DEVICE#<platform>|<device_type>" | "USER#<id>", "DAY#<utc date>")`` and the same with
  ``"LOCALDAY#<listener's local date>"``: play measures (see :data:`PLAY_MEASURES`).
- ``("CHAPTER#<content id>", "DAY#<date>#CH#<chapter>")``: ``reached``, ``playing_time_s``.
- ``("HOURLY", "UTC#<date>#H<hh>")`` and ``("HOURLY", "LOCAL#<date>#H<hh>")``: ``plays``,
  ``playing_time_s`` by hour.
- ``("SESSIONS", "DAY#<date>")`` and ``("USER#<id>", "SESSIONS#<date>")``: ``sessions``,
  ``session_s``.
- ``("VENDOR#<id>" | "PRODUCT#<id>" | "SHOP", "METRICS#<date>")``: commerce counts and
  ``revenue_minor_<CURRENCY>``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

from playpulse.events.model import CommerceEvent
from playpulse.processor.buckets import local_date, utc_date, utc_hour
from playpulse.processor.buckets import local_hour as _local_hour
from playpulse.processor.plays import PlaySummary
from playpulse.processor.sessions import Session

Contribution = dict[tuple[str, str], dict[str, float]]

#: Attributes a play adds to each of its dimension items.
PLAY_MEASURES = (
    "plays",
    "streams",
    "completed",
    "skipped",
    "playing_time_s",
    "watch_time_s",
    "content_time_s",
    "playing_time_foreground_s",
    "playing_time_background_s",
    "startup_time_s",
    "rebuffer_count",
    "rebuffer_time_s",
)


def _new() -> Contribution:
    return defaultdict(lambda: defaultdict(float))


def play_dimensions(play: PlaySummary) -> list[str]:
    """The partition keys a play counts under: total, content, creator, type, device,
    user."""
    dims = ["TOTAL", f"USER#{play.user_id}"]
    if play.content_id:
        dims.append(f"CONTENT#{play.content_id}")
    if play.creator:
        dims.append(f"CREATOR#{play.creator}")
    if play.content_type:
        dims.append(f"CTYPE#{play.content_type}")
    dims.append(f"DEVICE#{play.platform or 'unknown'}|{play.device_type or 'unknown'}")
    return dims


def play_contribution(play: PlaySummary) -> Contribution:
    """What one play adds to the store.

    Counts (plays, streams, completed, skipped) and whole-play durations (watch time,
    startup, rebuffering) go to the day the play started; playing, content and
    foreground/background time go to the hour and day of each playing segment, so a
    play across midnight splits exactly. Local days use the play's ``timezone`` (UTC
    when it has none).
    """
    out = _new()
    tz = play.timezone
    started = play.started_at
    utc_day, local_day = utc_date(started), local_date(started, tz)
    # The amounts of each day item, in the order the old per-item additions made them
    # (counts on the start days, then each segment's times in segment order: the same
    # sums), then copied into every dimension's item of that day: one dict copy per
    # item instead of an addition per item, attribute and segment.
    counts = {
        name: value
        for name, value in (
            ("plays", 1.0),
            ("streams", float(play.is_stream)),
            ("completed", float(play.completed)),
            ("skipped", float(play.skipped)),
            ("watch_time_s", play.watch_time_s),
            ("startup_time_s", play.startup_time_s),
            ("rebuffer_count", float(play.rebuffer_count)),
            ("rebuffer_time_s", play.rebuffer_time_s),
        )
        if value != 0.0  # zero amounts are left out (they add nothing)
    }
    per_day: dict[str, dict[str, float]] = {
        f"DAY#{utc_day}": dict(counts),
        f"LOCALDAY#{local_day}": dict(counts),
    }
    out[("HOURLY", f"UTC#{utc_day}#H{utc_hour(started):02d}")]["plays"] += 1
    out[("HOURLY", f"LOCAL#{local_day}#H{_local_hour(started, tz):02d}")]["plays"] += 1
    content_id = play.content_id
    if content_id:
        for chapter in play.chapters_reached:
            out[(f"CHAPTER#{content_id}", f"DAY#{utc_day}#CH#{chapter:05d}")]["reached"] += 1
    for seg in play.segments:
        playing_s = seg.playing_s
        fg_name = "playing_time_foreground_s" if seg.foreground else "playing_time_background_s"
        times = [
            (name, value)
            for name, value in (
                ("playing_time_s", playing_s),
                ("content_time_s", playing_s * seg.rate),
                (fg_name, playing_s),
            )
            if value != 0.0
        ]
        seg_utc_day, seg_local_day = utc_date(seg.start), local_date(seg.start, tz)
        for day in (f"DAY#{seg_utc_day}", f"LOCALDAY#{seg_local_day}"):
            amounts = per_day.get(day)
            if amounts is None:
                amounts = per_day[day] = {}
            for name, value in times:
                amounts[name] = amounts.get(name, 0.0) + value
        utc_key = f"UTC#{seg_utc_day}#H{utc_hour(seg.start):02d}"
        local_key = f"LOCAL#{seg_local_day}#H{_local_hour(seg.start, tz):02d}"
        out[("HOURLY", utc_key)]["playing_time_s"] += playing_s
        out[("HOURLY", local_key)]["playing_time_s"] += playing_s
        if content_id and seg.chapter is not None:
            key = (f"CHAPTER#{content_id}", f"DAY#{seg_utc_day}#CH#{seg.chapter:05d}")
            out[key]["playing_time_s"] += playing_s
    # Dimension items are (dim, DAY#... | LOCALDAY#...): no other key above is one.
    for dim in play_dimensions(play):
        for day, amounts in per_day.items():
            if amounts:
                out[(dim, day)] = dict(amounts)
    return out


def session_contribution(user_id: str, sessions: Iterable[Session]) -> Contribution:
    """What a user's listening sessions add: count and length, on each session's start
    day (UTC), overall and per user."""
    out = _new()
    for session in sessions:
        day = utc_date(session.start)
        length_s = session.duration.total_seconds()
        for key in (("SESSIONS", f"DAY#{day}"), (f"USER#{user_id}", f"SESSIONS#{day}")):
            out[key]["sessions"] += 1
            out[key]["session_s"] += length_s
    return out


_COMMERCE_COUNTER = {
    "product_view": "views",
    "vendor_view": "vendor_views",
    "product_favorite": "favorites",
    "cart_add": "cart_adds",
    "order_created": "orders",
    "order_completed": "completed_orders",
}


def commerce_contribution(event: CommerceEvent, out: Contribution) -> None:
    """Add one commerce event to ``out``: a count per vendor, product and the whole shop
    on the event's UTC day; ``order_completed`` also adds ``revenue_minor_<CURRENCY>``
    and ``order_created`` adds ``ordered_minor_<CURRENCY>``."""
    day = f"METRICS#{utc_date(event.occurred_at)}"
    counter = _COMMERCE_COUNTER[event.event_type]
    pks = ["SHOP"]
    if event.vendor_id:
        pks.append(f"VENDOR#{event.vendor_id}")
    if event.product_id:
        pks.append(f"PRODUCT#{event.product_id}")
    for pk in pks:
        item = out[(pk, day)]
        item[counter] += 1
        if event.amount_minor is not None and event.currency:
            if event.event_type == "order_completed":
                item[f"revenue_minor_{event.currency}"] += event.amount_minor
            elif event.event_type == "order_created":
                item[f"ordered_minor_{event.currency}"] += event.amount_minor
        if event.event_type == "cart_add" and event.quantity:
            item["cart_units"] += event.quantity


def diff(
    new: Mapping[tuple[str, str], Mapping[str, float]],
    old: Mapping[tuple[str, str], Mapping[str, float]],
) -> Contribution:
    """``new - old`` per item and attribute (zero differences left out)."""
    out = _new()
    for key in set(new) | set(old):
        a, b = new.get(key, {}), old.get(key, {})
        for name in set(a) | set(b):
            delta = a.get(name, 0.0) - b.get(name, 0.0)
            if delta != 0.0:
                out[key][name] += delta
    return out


def to_rows(contribution: Mapping[tuple[str, str], Mapping[str, float]]) -> list[list[object]]:
    """A contribution as ``[pk, sk, {attr: value}]`` rows (for state blobs), one per item
    with a non-zero amount, zero amounts left out, in the contribution's order
    (:func:`from_rows` does not depend on it; not sorting halves the cost). One row per
    item, not per attribute: a play's rows encode in about half the time and bytes."""
    rows: list[list[object]] = []
    for (pk, sk), attrs in contribution.items():
        nonzero = {name: value for name, value in attrs.items() if value != 0.0}
        if nonzero:
            rows.append([pk, sk, nonzero])
    return rows


def from_rows(rows: Iterable[list[object]]) -> Contribution:
    """Inverse of :func:`to_rows`; also reads the ``[pk, sk, attr, value]`` rows (one
    per attribute) of states written before."""
    out = _new()
    for row in rows:
        if len(row) == 4:
            pk, sk, name, value = row
            out[(str(pk), str(sk))][str(name)] += float(value)  # type: ignore[arg-type]
            continue
        pk, sk, attrs = row
        item = out[(str(pk), str(sk))]
        for name, value in attrs.items():  # type: ignore[attr-defined]
            item[str(name)] += float(value)
    return out
