"""The enrichment runner: the scheduled jobs, in the background, off the ingest path.

Each round (:meth:`EnrichmentRunner.run_once`) runs, in order:

1. ``seen``: the catalog's titles from the lake's events
   (:func:`playpulse.enrich.catalog.refresh_seen`);
2. ``similar``: listeners also played (:func:`playpulse.enrich.similarity.refresh_similar`);
3. ``tags``: up to ``tag_limit`` titles tagged by the provider, at most ``titles_per_s``
   per second (:func:`playpulse.enrich.tags.tag_pending`), when a provider is set.

It reads the lake (Parquet) and the real-time store only through the query engine, and
writes only its own catalog file (``DATA_DIR/enrich/catalog.db``): the stream, the
processor's store and the lake are never touched, so processing neither waits for it
nor sees it. A job that fails is logged and recorded in the catalog's ``jobs`` table and
the round goes on; the next round tries again. :meth:`EnrichmentRunner.start` runs
rounds every ``interval_s`` in a daemon thread at a lower CPU priority (nice +10);
``playpulse enrich run --every S`` runs them in a process of its own, which is what
``playpulse up`` should start beside the processor.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from dataclasses import dataclass, field

from playpulse.config import Settings
from playpulse.enrich.catalog import open_catalog, record_job, refresh_seen
from playpulse.enrich.providers import TagProvider
from playpulse.enrich.similarity import refresh_similar
from playpulse.enrich.tags import TagRun, tag_pending

log = logging.getLogger("playpulse.enrich")


@dataclass
class Round:
    """What one round did: ``seen`` titles, ``pairs`` of similar titles, ``tags`` (the
    tagging job's :class:`~playpulse.enrich.tags.TagRun`, ``None`` without a provider),
    and ``errors`` (job name -> one-line reason)."""

    seen: int = 0
    pairs: int = 0
    tags: TagRun | None = None
    errors: dict[str, str] = field(default_factory=dict)


class EnrichmentRunner:
    """Runs the enrichment jobs of ``settings``' data dir (module docstring).

    ``provider``: the tagger (``None``: no tagging). ``interval_s``: seconds between
    rounds in :meth:`start`. ``titles_per_s``, ``tag_limit``: the tagging job's rate and
    titles per round. ``min_support``, ``top_k``: the similarity job's. Thread-safe for
    one :meth:`start`/:meth:`stop` pair; :attr:`rounds`, :attr:`last`, :attr:`job_errors`
    and :attr:`tags_failed` tell what ran.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        provider: TagProvider | None = None,
        interval_s: float = 300.0,
        titles_per_s: float = 5.0,
        tag_limit: int = 500,
        min_support: int = 2,
        top_k: int = 20,
    ) -> None:
        self.settings = settings
        self.provider = provider
        self.interval_s = interval_s
        self.titles_per_s = titles_per_s
        self.tag_limit = tag_limit
        self.min_support = min_support
        self.top_k = top_k
        self.rounds = 0
        self.last: Round | None = None
        #: Since the start: failures per job name, and titles whose tagging failed.
        self.job_errors: dict[str, int] = {}
        self.tags_failed = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> Round:
        """One round of every job (module docstring); never raises for a job's failure."""
        result = Round()
        jobs = [("seen", self._seen), ("similar", self._similar)]
        if self.provider is not None:
            jobs.append((f"tags:{self.provider.name}", self._tags))
        for name, job in jobs:
            if self._stop.is_set():
                break
            try:
                job(result)
            except Exception as exc:  # a job's failure must never stop the runner
                reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
                result.errors[name] = reason
                self.job_errors[name] = self.job_errors.get(name, 0) + 1
                log.warning("enrich: job %s failed: %s", name, reason)
                with contextlib.suppress(Exception), open_catalog(self.settings) as db:
                    record_job(db, name, 0, reason)
        if result.tags is not None:
            self.tags_failed += result.tags.failed
        self.rounds += 1
        self.last = result
        return result

    def _seen(self, result: Round) -> None:
        result.seen = refresh_seen(self.settings)

    def _similar(self, result: Round) -> None:
        result.pairs = refresh_similar(
            self.settings, min_support=self.min_support, top_k=self.top_k
        )

    def _tags(self, result: Round) -> None:
        assert self.provider is not None
        result.tags = tag_pending(
            self.settings,
            self.provider,
            limit=self.tag_limit,
            titles_per_s=self.titles_per_s,
            stop=self._stop,
        )

    def _loop(self) -> None:
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        while not self._stop.is_set():
            self.run_once()
            self._stop.wait(self.interval_s)

    def start(self) -> None:
        """Run rounds every ``interval_s`` in a daemon thread (the first one now)."""
        if self._thread is not None:
            raise RuntimeError("the enrichment runner is already started")
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="playpulse-enrich", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Ask the thread to stop (a round in progress ends after its current job or
        tagging batch) and wait up to ``timeout_s`` for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def wait(self, timeout_s: float | None = None) -> None:
        """Block until :meth:`stop` is called (for ``playpulse enrich run --every``)."""
        self._stop.wait(timeout_s)
