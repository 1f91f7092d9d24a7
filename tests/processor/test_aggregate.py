"""Contribution rows (what a play's or a user's sessions' state keeps to retract later)
round-trip exactly, and states written before the grouped rows still read."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from playpulse.processor import aggregate
from playpulse.processor.state import PlayState, decode_play, encoder

_names = st.sampled_from(["plays", "streams", "playing_time_s", "watch_time_s", "reached"])
_amounts = st.one_of(st.just(0.0), st.floats(-1e9, 1e9, allow_nan=False, allow_subnormal=False))
_contributions = st.dictionaries(
    st.tuples(st.sampled_from(["TOTAL", "USER#u", "CONTENT#c"]), st.sampled_from(["DAY#1", "X"])),
    st.dictionaries(_names, _amounts, max_size=4),
    max_size=6,
)


def _nonzero(contribution: dict[tuple[str, str], dict[str, float]]) -> dict[object, object]:
    out = {
        item: {name: value for name, value in attrs.items() if value != 0.0}
        for item, attrs in contribution.items()
    }
    return {item: attrs for item, attrs in out.items() if attrs}


@given(_contributions)
def test_rows_round_trip_through_a_stored_state(contribution):
    rows = aggregate.to_rows(contribution)
    assert len(rows) == len(_nonzero(contribution))  # one row per item with an amount
    stored = decode_play(encoder.encode(PlayState([], rows, 0)))
    assert _nonzero(aggregate.from_rows(stored.contribution)) == _nonzero(contribution)


@given(_contributions)
def test_rows_of_earlier_states_one_per_attribute_still_read(contribution):
    old_rows = [
        [pk, sk, name, value]
        for (pk, sk), attrs in contribution.items()
        for name, value in attrs.items()
        if value != 0.0
    ]
    stored = decode_play(encoder.encode(PlayState([], old_rows, 0)))
    assert _nonzero(aggregate.from_rows(stored.contribution)) == _nonzero(contribution)
