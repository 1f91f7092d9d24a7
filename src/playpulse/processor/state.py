"""The processor's state in the real-time store: every key, every codec, and the typed
readers the rest of playpulse uses.

The processor keeps, beside the store's counters, state blobs (``RealtimeStore.states``)
under these keys (``<p>`` a stream partition):

- ``PLAY#<p>#<play key>``: a play not yet final (:class:`PlayState`, compressed), and
  ``PEV#<p>#<play key>#<offset>``: a chunk of its raw events (msgpack list of bytes);
- ``SESS#<p>#<user>``: the user's sessions that can still change
  (:class:`SessionState`), and ``OSESS#<p>#<user>``: the user's open session,
  ``(start_us, end_us, events)``;
- ``WM#<p>``: the partition's watermark; ``UWM#<user>``: the user's watermark (decimal
  microseconds since the epoch, UTC);
- ``LIVE#<user>``: the user's newest playback event (:class:`LiveState`);
- ``META#newest_received_us#<p>``: the newest receipt time the partition's batches held.

No other module spells these keys: the processor builds them with the functions here,
and ``query/`` and ``api/`` read the state through :func:`open_plays`,
:func:`open_sessions`, :func:`live_listeners` and :func:`newest_received_us`.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import msgspec
import pyarrow as pa

from playpulse.errors import StoreError
from playpulse.events.codec import decode_stored
from playpulse.events.model import PlaybackEvent
from playpulse.processor.plays import PlaySummary, summarize_play
from playpulse.store.base import RealtimeStore

#: Key prefixes (see the module docstring).
PLAY_PREFIX = "PLAY#"
CHUNK_PREFIX = "PEV#"
SESSION_PREFIX = "SESS#"
OPEN_SESSION_PREFIX = "OSESS#"
LIVE_PREFIX = "LIVE#"
_NEWEST_RECEIVED_PREFIX = "META#newest_received_us#"

#: States read per query when scanning many.
SCAN_CHUNK = 500


def play_key(partition: int, play: str) -> str:
    """The state key of play ``play`` (its play key) of stream partition ``partition``."""
    return f"{PLAY_PREFIX}{partition}#{play}"


def play_prefix(partition: int) -> str:
    """The prefix of the play state keys of stream partition ``partition``."""
    return f"{PLAY_PREFIX}{partition}#"


def chunk_key(partition: int, play: str, offset: int) -> str:
    """The key of a chunk of play ``play``'s raw events, written by the batch whose last
    offset is ``offset``."""
    return f"{CHUNK_PREFIX}{partition}#{play}#{offset}"


def session_key(partition: int, user: str) -> str:
    """The key of ``user``'s session state (:class:`SessionState`)."""
    return f"{SESSION_PREFIX}{partition}#{user}"


def open_session_key(partition: int, user: str) -> str:
    """The key of ``user``'s open session, ``(start_us, end_us, events)``."""
    return f"{OPEN_SESSION_PREFIX}{partition}#{user}"


def watermark_key(partition: int) -> str:
    """The key of stream partition ``partition``'s watermark."""
    return f"WM#{partition}"


def user_watermark_key(user: str) -> str:
    """The key of ``user``'s watermark."""
    return f"UWM#{user}"


def live_key(user: str) -> str:
    """The key of ``user``'s newest playback event (:class:`LiveState`)."""
    return f"{LIVE_PREFIX}{user}"


def newest_received_key(partition: int) -> str:
    """The key of the newest receipt time stream partition ``partition``'s batches held."""
    return f"{_NEWEST_RECEIVED_PREFIX}{partition}"


def split_key(key: str) -> tuple[int, str]:
    """``(partition, rest)`` of a ``<PREFIX>#<partition>#<rest>`` key (plays, sessions,
    open sessions). Raises :class:`ValueError` for another shape."""
    _, partition, rest = key.split("#", 2)
    return int(partition), rest


class PlayState(msgspec.Struct):
    """A play that is not final yet: its raw events, what it added to the store's
    counters (``contribution``, to retract when it changes), its last event time, whether
    it is closed, its user, and the offsets of its event chunks."""

    # Events stored inline (states written before event chunks existed); new events go
    # to chunks.
    events: list[bytes]
    contribution: list[list[Any]]
    last_us: int
    closed: bool = False
    user: str = ""
    # The play's raw events are appended per batch to chunks (``PEV#<partition>#<play
    # key>#<offset>``, offset = the batch's last): a batch writes only its new events
    # instead of the whole play again, which made long open plays quadratic. When the
    # play closes, its chunks are folded into ``events`` and the state is compressed:
    # a closed play's events (kept for late events) take about a tenth of their JSON.
    chunks: list[int] = msgspec.field(default_factory=list)
    count: int = 0  # events in ``events`` and all chunks

    def chunk_keys(self, partition: int, play: str) -> list[str]:
        """The keys of the play's event chunks."""
        return [chunk_key(partition, play, offset) for offset in self.chunks]


class PlayHead(msgspec.Struct):
    """What finalizing needs of a :class:`PlayState` (its other fields are skipped
    when decoding)."""

    last_us: int
    closed: bool = False
    user: str = ""
    chunks: list[int] = msgspec.field(default_factory=list)


class SessionState(msgspec.Struct):
    """A user's sessions that can still change."""

    # The user's event times (us, ascending) from the first session that can still
    # change on.
    times_us: list[int]
    contribution: list[list[Any]]
    # Closed sessions already written to the lake, as [start_us, end_us, events].
    emitted: list[list[int]] = msgspec.field(default_factory=list)
    # ``sessionize_us(times_us)``, so that later events extend the sessions instead of
    # sessionizing every time again (empty in states written before it existed).
    spans: list[tuple[int, int, int]] = msgspec.field(default_factory=list)


class LiveState(msgspec.Struct):
    """A user's newest playback event: when (us), whether it says playing, and the
    content."""

    at_us: int
    playing: bool
    content_id: str | None = None


# Play and session states are stored zstd-compressed behind the marker ``s`` and the
# msgpack's length (4 bytes, little-endian): zstd at level 1 takes about a fifth of the
# CPU of zlib at level 6 on closed plays' states, for smaller blobs (measured on the
# processing benchmark's workload: 31 vs 150 us a play, 11.0 vs 11.5 % of the msgpack).
# Blobs written before are still read: zlib behind the marker ``z``, or plain msgpack.
# A msgpack state never starts with a marker: they are the positive fixints 115 and
# 122, and states are maps.
_ZSTD = b"s"
_ZLIB = b"z"
_zstd = pa.Codec("zstd", compression_level=1)
#: Compression levels of states rewritten at most batches (open plays, sessions) and of
#: the states of closed plays, written once and kept for late events.
LEVEL_OPEN = 1
LEVEL_CLOSED = 1

encoder = msgspec.msgpack.Encoder()
decode_play = msgspec.msgpack.Decoder(PlayState).decode
decode_head = msgspec.msgpack.Decoder(PlayHead).decode
decode_session = msgspec.msgpack.Decoder(SessionState).decode
decode_live = msgspec.msgpack.Decoder(LiveState).decode
decode_open_session = msgspec.msgpack.Decoder(tuple[int, int, int]).decode
decode_chunk = msgspec.msgpack.Decoder(list[bytes]).decode


def pack(value: Any, level: int = LEVEL_OPEN) -> bytes:
    """``value`` as msgpack, zstd-compressed at ``level``, behind the marker and the
    msgpack's length."""
    raw = encoder.encode(value)
    codec = _zstd if level == 1 else pa.Codec("zstd", compression_level=level)
    compressed: bytes = codec.compress(raw, asbytes=True)
    return _ZSTD + len(raw).to_bytes(4, "little") + compressed


def unpack(blob: bytes) -> bytes:
    """The msgpack of a stored state: compressed by :func:`pack` (zstd), by earlier
    versions (zlib), or plain. Raises :class:`ValueError` for a compressed blob that
    does not decompress."""
    marker = blob[:1]
    if marker == _ZSTD:
        size = int.from_bytes(blob[1:5], "little")
        try:
            raw: bytes = _zstd.decompress(blob[5:], decompressed_size=size, asbytes=True)
        except (OSError, pa.ArrowException) as exc:
            raise ValueError(f"a zstd state blob does not decompress: {exc}") from None
        return raw
    if marker == _ZLIB:
        try:
            return zlib.decompress(blob[1:])
        except zlib.error as exc:
            raise ValueError(f"a zlib state blob does not decompress: {exc}") from None
    return blob


def play_raw_events(store: RealtimeStore, state: PlayState, key: str) -> list[bytes] | None:
    """All raw events of the open play under ``key`` whose state was read as ``state``,
    in the order they were added; ``None`` when the play closed or was forgotten since
    that read.

    A reader beside a running processor reads a state, then its chunks, in two reads: a
    batch committed between them may have folded the chunks into the closed play's state
    and deleted them. A missing chunk therefore means a newer state: it is read again
    (at most 5 times, then :class:`~playpulse.errors.StoreError`)."""
    partition, play = split_key(key)
    for _ in range(5):
        keys = state.chunk_keys(partition, play)
        chunks = store.states(keys)
        if all(k in chunks for k in keys):
            raw = list(state.events)
            for k in keys:
                raw.extend(decode_chunk(chunks[k]))
            return raw
        blob = store.states([key]).get(key)
        if blob is None:
            return None
        raw_state = unpack(blob)
        if decode_head(raw_state).closed:
            return None
        state = decode_play(raw_state)
    raise StoreError(f"the event chunks of open play {key} kept changing while being read")


def _scan(store: RealtimeStore, prefix: str) -> Iterator[tuple[str, bytes]]:
    """Every state under ``prefix``, a few hundred at a time."""
    keys = store.state_keys(prefix)
    for start in range(0, len(keys), SCAN_CHUNK):
        yield from store.states(keys[start : start + SCAN_CHUNK]).items()


def open_sessions(store: RealtimeStore) -> list[tuple[str, int, int, int]]:
    """The listening sessions the processor holds open (not yet in the lake's
    ``sessions`` table): ``(user, start_us, end_us, events)``, times in microseconds
    since the epoch (UTC)."""
    out = []
    for key, blob in _scan(store, OPEN_SESSION_PREFIX):
        start_us, end_us, events = decode_open_session(blob)
        out.append((split_key(key)[1], start_us, end_us, events))
    return out


def open_plays(
    store: RealtimeStore, idle_timeout: timedelta = timedelta(minutes=30)
) -> list[PlaySummary]:
    """Plays the processor holds open (no closing event yet, not idle-closed), as they
    stand now: the part of the picture not yet in the lake's ``plays`` table."""
    out = []
    for key, blob in _scan(store, PLAY_PREFIX):
        raw_state = unpack(blob)
        if decode_head(raw_state).closed:
            continue
        raws = play_raw_events(store, decode_play(raw_state), key)
        if raws is None:  # closed meanwhile: its row is in the lake's plays table now
            continue
        events = [decode_stored(raw) for raw in raws]
        playback = [e for e in events if isinstance(e, PlaybackEvent)]
        if playback:
            out.append(summarize_play(playback, idle_timeout=idle_timeout))
    return out


@dataclass(frozen=True, slots=True)
class LiveListener:
    """A listener's newest playback event: ``user``, when (``at_us``, microseconds since
    the epoch, UTC, event time), whether it says ``playing``, and its ``content_id``."""

    user: str
    at_us: int
    playing: bool
    content_id: str | None


def live_listeners(store: RealtimeStore) -> list[LiveListener]:
    """Every listener's newest playback event (what "concurrent listeners" counts)."""
    out = []
    for key, blob in _scan(store, LIVE_PREFIX):
        state = decode_live(blob)
        out.append(
            LiveListener(
                key.removeprefix(LIVE_PREFIX), state.at_us, state.playing, state.content_id
            )
        )
    return out


def newest_received_us(store: RealtimeStore) -> int | None:
    """The newest receipt time of the events the processor took in (microseconds since
    the epoch, UTC), over every partition; ``None`` before any."""
    values = store.states(store.state_keys(_NEWEST_RECEIVED_PREFIX)).values()
    return max((int(v) for v in values), default=None)


def slowest_newest_received_us(store: RealtimeStore) -> int | None:
    """The oldest of the partitions' newest receipt times (microseconds since the epoch,
    UTC): every partition has taken in events received up to at least this. ``None``
    before any. Dedup keys that expired well before it can go: no partition can still
    meet a copy they would catch, however far apart the partitions' processors are."""
    values = store.states(store.state_keys(_NEWEST_RECEIVED_PREFIX)).values()
    return min((int(v) for v in values), default=None)
