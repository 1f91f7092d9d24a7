"""Listeners also played: item-to-item similarity from co-listening within sessions.

Each listener session (a listener's plays with no gap over :data:`SESSION_GAP` between
one play's end and the next play's start) is a basket of the distinct content ids it
played. For two items ``i`` and ``j``:

- ``shared_sessions`` = the sessions holding both (co-occurrence);
- ``score`` = cosine of their session vectors =
  ``shared_sessions / sqrt(sessions(i) * sessions(j))`` (0 to 1);
- ``shared_listeners`` = distinct listeners with at least one such session (what a
  title page shows: "N listeners also played").

A pair counts only with at least ``min_support`` shared sessions (default 2: one
session proves nothing). Each item keeps its ``top_k`` best neighbours (score, then
shared sessions, then id). :func:`compute_similar` is the pure computation (used by the
job and by bench/recommend.py); :func:`refresh_similar` is the scheduled job over the
lake's plays (:func:`play_sessions`), never the ingest path.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from playpulse.config import Settings
from playpulse.enrich.catalog import open_catalog, record_job

#: A gap longer than this between plays starts a new listener session (the engine's
#: sessions use the same 30 minutes).
SESSION_GAP = timedelta(minutes=30)
#: Items of a session past this many distinct ones are left out of its pairs (a
#: day-long radio session says little about any pair and costs n^2).
MAX_SESSION_ITEMS = 200


@dataclass(frozen=True)
class Neighbor:
    """One similar item: ``content_id``, cosine ``score`` (0-1), ``shared_sessions`` and
    ``shared_listeners`` (see the module docstring)."""

    content_id: str
    score: float
    shared_sessions: int
    shared_listeners: int


@dataclass(frozen=True)
class Session:
    """One listener session: ``listener`` and the content ids it played, in order
    (repeats kept)."""

    listener: str
    items: tuple[str, ...]


def compute_similar(
    sessions: Iterable[Session], *, min_support: int = 2, top_k: int = 20
) -> dict[str, list[Neighbor]]:
    """Each item's ``top_k`` neighbours by session cosine with at least ``min_support``
    shared sessions (module docstring). Items with no such neighbour are left out.
    Counts pairs in Python dictionaries: about a second for 50,000 plays."""
    if min_support < 1 or top_k < 1:
        raise ValueError("min_support and top_k must be at least 1")
    index: dict[str, int] = {}
    count: dict[int, int] = defaultdict(int)
    co: dict[tuple[int, int], int] = defaultdict(int)
    # Sessions grouped by listener: a pair's listeners are counted when its last one
    # changes (two small integers a pair, not a set).
    listeners: dict[tuple[int, int], int] = defaultdict(int)
    last: dict[tuple[int, int], int] = {}
    who: dict[str, int] = {}
    for s in sorted(sessions, key=lambda s: s.listener):
        me = who.setdefault(s.listener, len(who))
        first = list(dict.fromkeys(s.items))[:MAX_SESSION_ITEMS]
        distinct = sorted(index.setdefault(item, len(index)) for item in first)
        for n, a in enumerate(distinct):
            count[a] += 1
            for b in distinct[n + 1 :]:
                co[a, b] += 1
                if last.get((a, b)) != me:
                    last[a, b] = me
                    listeners[a, b] += 1
    names = list(index)
    candidates: dict[int, list[tuple[float, int, int]]] = defaultdict(list)
    for (a, b), shared in co.items():
        if shared < min_support:
            continue
        score = min(1.0, shared / math.sqrt(count[a] * count[b]))
        candidates[a].append((score, shared, b))
        candidates[b].append((score, shared, a))
    out: dict[str, list[Neighbor]] = {}
    for a, found in candidates.items():
        found.sort(key=lambda c: (-c[0], -c[1], names[c[2]]))
        out[names[a]] = [
            Neighbor(names[b], score, shared, listeners[min(a, b), max(a, b)])
            for score, shared, b in found[:top_k]
        ]
    return out


def popularity(sessions: Iterable[Session]) -> list[tuple[str, int]]:
    """Items by plays (most first, then id): the baseline a recommender must beat."""
    plays: dict[str, int] = defaultdict(int)
    for s in sessions:
        for item in s.items:
            plays[item] += 1
    return sorted(plays.items(), key=lambda kv: (-kv[1], kv[0]))


def sessions_from_plays(
    plays: Iterable[tuple[str, str, float, float | None]], gap: timedelta = SESSION_GAP
) -> list[Session]:
    """Listener sessions from plays ``(listener, content_id, started_epoch_s,
    ended_epoch_s or None)`` in any order: a listener's plays sorted by start, a new
    session when a play starts more than ``gap`` after the latest end so far."""
    by_listener: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    for listener, item, started, ended in plays:
        by_listener[listener].append((started, ended if ended is not None else started, item))
    limit = gap.total_seconds()
    out: list[Session] = []
    for listener in sorted(by_listener):
        current: list[str] = []
        latest = -math.inf
        for started, ended, item in sorted(by_listener[listener]):
            if current and started > latest + limit:
                out.append(Session(listener, tuple(current)))
                current = []
            current.append(item)
            latest = max(latest, ended)
        if current:
            out.append(Session(listener, tuple(current)))
    return out


_PLAYS_SQL = """
SELECT user_id, content_id, epoch_us(started_at) / 1e6,
       epoch_us(coalesce(ended_at, started_at)) / 1e6
FROM plays_all WHERE user_id IS NOT NULL AND content_id IS NOT NULL
"""


def play_sessions(settings: Settings) -> list[Session]:
    """The listener sessions of every play in ``settings``' data dir (the lake's plays
    and the open ones), read through :func:`playpulse.query.engine.connect`."""
    from playpulse.query.engine import connect

    con = connect(settings)
    try:
        rows = con.execute(_PLAYS_SQL).fetchall()
    finally:
        con.close()
    return sessions_from_plays((r[0], r[1], float(r[2]), float(r[3])) for r in rows)


def store_similar(settings: Settings, similar: dict[str, list[Neighbor]]) -> int:
    """Replace the catalog's ``similar`` table with ``similar``; returns the pairs."""
    rows = [
        (item, n.content_id, n.score, n.shared_sessions, n.shared_listeners, rank)
        for item, neighbors in similar.items()
        for rank, n in enumerate(neighbors, start=1)
    ]
    with open_catalog(settings) as db:
        db.execute("DELETE FROM similar")
        db.executemany("INSERT INTO similar VALUES (?, ?, ?, ?, ?, ?)", rows)
        record_job(db, "similar", len(rows))
    return len(rows)


def refresh_similar(settings: Settings, *, min_support: int = 2, top_k: int = 20) -> int:
    """The scheduled job: recompute "listeners also played" from every play of the
    data dir and store it (:func:`store_similar`); returns the pairs stored."""
    return store_similar(
        settings, compute_similar(play_sessions(settings), min_support=min_support, top_k=top_k)
    )


def recommend(
    similar: dict[str, list[Neighbor]], item: str, k: int = 10, *, exclude: Sequence[str] = ()
) -> list[str]:
    """The ``k`` items most similar to ``item`` (fewer when it has fewer neighbours),
    leaving out ``exclude``."""
    skip = set(exclude)
    return [n.content_id for n in similar.get(item, []) if n.content_id not in skip][:k]
