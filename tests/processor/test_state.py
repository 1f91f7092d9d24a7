"""The processor's state module: keys, codecs and the typed readers query/ and api/ use,
on both store backends."""

from __future__ import annotations

import zlib
from collections.abc import Iterator

import pytest

from playpulse.processor import state
from playpulse.store.base import RealtimeStore, StoreBatch
from playpulse.store.memory import MemoryStore
from playpulse.store.sqlite import SQLiteStore


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path) -> Iterator[RealtimeStore]:
    backend: RealtimeStore = (
        MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "store.db")
    )
    yield backend
    backend.close()


def test_newest_received_is_the_newest_over_partitions_and_none_before_any(store) -> None:
    assert state.newest_received_us(store) is None
    batch = StoreBatch("c")
    batch.states[state.newest_received_key(0)] = b"1700000000000000"
    batch.states[state.newest_received_key(3)] = b"1700000000500000"
    store.apply(batch)
    assert state.newest_received_us(store) == 1_700_000_000_500_000


def test_live_listeners_read_what_the_processor_writes(store) -> None:
    batch = StoreBatch("c")
    for user, at_us, playing, content in (("ann", 10, True, "book-1"), ("bo", 20, False, None)):
        batch.states[state.live_key(user)] = state.encoder.encode(
            state.LiveState(at_us, playing, content)
        )
    store.apply(batch)
    got = sorted(state.live_listeners(store), key=lambda listener: listener.user)
    assert got == [
        state.LiveListener("ann", 10, True, "book-1"),
        state.LiveListener("bo", 20, False, None),
    ]


def test_open_sessions_read_the_open_session_states(store) -> None:
    batch = StoreBatch("c")
    batch.states[state.open_session_key(2, "ann#x")] = state.encoder.encode((5, 9, 3))
    batch.states[state.session_key(2, "ann#x")] = b"not an open session"
    store.apply(batch)
    assert state.open_sessions(store) == [("ann#x", 5, 9, 3)]


def test_keys_split_back_into_partition_and_name() -> None:
    assert state.split_key(state.play_key(7, "u1:p#1")) == (7, "u1:p#1")
    assert state.play_key(7, "x").startswith(state.play_prefix(7))
    assert state.unpack(state.pack({"a": 1}, state.LEVEL_CLOSED)) == state.encoder.encode({"a": 1})
    assert state.unpack(b"\x81\xa1a\x01") == b"\x81\xa1a\x01"  # written before compression


def test_states_round_trip_and_blobs_of_earlier_versions_are_read() -> None:
    play = state.PlayState([b'{"event_id": "e1"}'] * 50, [["TOTAL", "DAY#x", "plays", 1.0]], 7)
    raw = state.encoder.encode(play)
    packed = state.pack(play, state.LEVEL_CLOSED)
    assert packed[:1] == b"s"
    assert len(packed) < len(raw) / 3
    assert state.unpack(packed) == raw
    # Earlier versions wrote zlib behind "z", and plain msgpack before that.
    assert state.unpack(b"z" + zlib.compress(raw, 6)) == raw
    assert state.unpack(raw) == raw
    assert state.decode_play(state.unpack(packed)) == play


@pytest.mark.parametrize("blob", [b"s\x10\x00\x00\x00not zstd", b"znot zlib"])
def test_a_compressed_state_that_does_not_decompress_is_a_clear_error(blob: bytes) -> None:
    with pytest.raises(ValueError, match="state blob does not decompress"):
        state.unpack(blob)


def test_a_play_closed_between_reading_its_state_and_its_chunks_is_no_longer_open(
    store,
) -> None:
    # A reader beside the processor reads a play's state, then its chunks; a batch
    # committed in between folds the chunks into the closed play's state and deletes them.
    key, chunk = state.play_key(0, "p"), state.chunk_key(0, "p", 5)
    open_state = state.PlayState([], [], 1, user="u", chunks=[5], count=2)
    batch = StoreBatch("c")
    batch.states[key] = state.pack(open_state)
    batch.states[chunk] = state.encoder.encode([b"e1", b"e2"])
    store.apply(batch)
    assert state.play_raw_events(store, open_state, key) == [b"e1", b"e2"]

    closed = state.PlayState([b"e1", b"e2", b"e3"], [], 2, closed=True, user="u", count=3)
    fold = StoreBatch("c")
    fold.states[key] = state.pack(closed, state.LEVEL_CLOSED)
    fold.states[chunk] = None
    store.apply(fold)
    # The state read before the fold names a chunk that is gone: the play closed.
    assert state.play_raw_events(store, open_state, key) is None
    assert state.open_plays(store) == []

    forget = StoreBatch("c")
    forget.states[key] = None
    store.apply(forget)
    assert state.play_raw_events(store, open_state, key) is None
