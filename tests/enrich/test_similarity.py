"""Listeners also played: session cosine with minimum support, shared listeners."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest

from playpulse.enrich.similarity import (
    Session,
    compute_similar,
    popularity,
    recommend,
    sessions_from_plays,
)


def test_cosine_support_and_shared_listeners() -> None:
    sessions = [
        Session("u1", ("a", "b", "c")),
        Session("u1", ("a", "b", "a")),  # a repeat counts once
        Session("u2", ("a", "b")),
        Session("u2", ("c", "d")),
        Session("u3", ("a", "d")),
    ]
    similar = compute_similar(sessions, min_support=2)
    # a is in 4 sessions, b in 3, both in 3: 3 / sqrt(4 * 3); two listeners share them.
    (ab,) = [n for n in similar["a"] if n.content_id == "b"]
    assert ab.score == pytest.approx(3 / math.sqrt(12))
    assert (ab.shared_sessions, ab.shared_listeners) == (3, 2)
    # Pairs seen in one session only (a-c, a-d, c-d, b-c) are below the support.
    assert [n.content_id for n in similar["a"]] == ["b"]
    assert set(similar) == {"a", "b"}
    # With support 1, a's neighbours by score: b, then d (1/sqrt(4*2)) and c (same) by id.
    loose = compute_similar(sessions, min_support=1)
    assert [n.content_id for n in loose["a"]] == ["b", "c", "d"]
    assert loose["c"][0].score == pytest.approx(1 / math.sqrt(2 * 2))
    assert recommend(loose, "a", 2) == ["b", "c"]
    assert recommend(loose, "a", 10, exclude=["b"]) == ["c", "d"]
    assert recommend(loose, "zzz") == []


def test_top_k_and_bad_arguments() -> None:
    sessions = [Session(f"u{i}", ("x", f"y{i}")) for i in range(5)] * 2
    assert len(compute_similar(sessions, min_support=2, top_k=3)["x"]) == 3
    with pytest.raises(ValueError, match="at least 1"):
        compute_similar(sessions, min_support=0)


def test_sessions_split_on_gap_per_listener() -> None:
    hour = 3600.0
    plays = [
        ("u1", "b", 200.0, 380.0),
        ("u1", "a", 0.0, 180.0),
        ("u1", "c", 380.0 + 31 * 60, None),  # more than 30 min after b ended
        ("u2", "a", 10 * hour, 10 * hour + 60),
    ]
    sessions = sessions_from_plays(plays, timedelta(minutes=30))
    assert sessions == [
        Session("u1", ("a", "b")),
        Session("u1", ("c",)),
        Session("u2", ("a",)),
    ]
    assert popularity(sessions) == [("a", 2), ("b", 1), ("c", 1)]
