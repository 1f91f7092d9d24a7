"""Where alert rules get their numbers: metric sources and a short history of samples.

A :class:`MetricSource` returns the current samples (``{metric name: [(labels,
value), ...]}``, names as Prometheus exposes them: counters with ``_total``, histograms
as ``_bucket``/``_sum``/``_count``). Inside ``playpulse up`` the source is the app's own
``/metrics`` exposition (:class:`AppSource`: the collector's registry and the pipeline's
metrics, in-process, no HTTP); :class:`ExpositionSource` parses any exposition text,
:class:`ScrapeSource` fetches one over HTTP;
:class:`StaticSource` holds values a caller sets (tests, scripts).

:class:`History` keeps the samples of the last minutes and answers a rule's selectors
(:meth:`History.select`): the newest value, an increase or rate over a window (counter
resets handled as Prometheus does), a quantile over a window.
"""

from __future__ import annotations

import math
import re
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from prometheus_client.parser import text_string_to_metric_families

from playpulse.alerts.rules import Selector
from playpulse.errors import PlaypulseError

#: ``{metric name: [(labels, value), ...]}``.
Samples = dict[str, list[tuple[dict[str, str], float]]]


class MetricSource(Protocol):
    """Anything that returns the current samples."""

    def samples(self) -> Samples:
        """The samples now. Raises any :class:`~playpulse.errors.PlaypulseError` when they
        cannot be read (the evaluator then skips the metric rules for that round)."""
        ...  # pragma: no cover - a protocol


def parse_exposition(text: str) -> Samples:
    """Samples of Prometheus text exposition ``text``. Raises :class:`ValueError` for
    text that is not one."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return out


class ExpositionSource:
    """Samples parsed from the text ``fetch()`` returns (``bytes`` or ``str``), such as a
    registry's ``generate_latest`` or a scrape of ``/metrics``."""

    def __init__(self, fetch: Callable[[], bytes | str]) -> None:
        self._fetch = fetch

    def samples(self) -> Samples:
        """Fetch and parse now."""
        raw = self._fetch()
        return parse_exposition(raw.decode() if isinstance(raw, bytes) else raw)


class AppSource(ExpositionSource):
    """The ``/metrics`` of an app made by :func:`playpulse.collector.app.create_app`
    (its collector's registry, with everything registered on it), read in-process."""

    def __init__(self, app: Any) -> None:
        metrics = app.state.collector.metrics
        super().__init__(metrics.exposition)


class ScrapeSource(ExpositionSource):
    """A scrape of ``url`` (a ``/metrics`` over HTTP), for an evaluator outside the
    collector's process (``playpulse up --workers N``: any worker's ``/metrics`` sums
    the counters over all). A failed scrape raises :class:`~playpulse.errors.
    PlaypulseError` (the evaluator skips the metric rules that round)."""

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self.url = url
        self.timeout_s = timeout_s
        super().__init__(self._get)

    def _get(self) -> bytes:
        import httpx

        try:
            response = httpx.get(self.url, timeout=self.timeout_s)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise PlaypulseError(f"cannot scrape {self.url}: {exc}") from None
        return response.content


class StaticSource:
    """Samples a caller sets with :meth:`set` (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def set(self, metric: str, value: float, **labels: str) -> None:
        """Set ``metric{labels}`` to ``value``."""
        with self._lock:
            self._values[(metric, tuple(sorted(labels.items())))] = float(value)

    def add(self, metric: str, amount: float, **labels: str) -> None:
        """Add ``amount`` to ``metric{labels}`` (a counter; starts at 0)."""
        key = (metric, tuple(sorted(labels.items())))
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def remove(self, metric: str, **labels: str) -> None:
        """Drop the series ``metric{labels}``."""
        with self._lock:
            self._values.pop((metric, tuple(sorted(labels.items()))), None)

    def samples(self) -> Samples:
        """The values set so far."""
        out: Samples = {}
        with self._lock:
            for (metric, labels), value in self._values.items():
                out.setdefault(metric, []).append((dict(labels), value))
        return out


def _matches(labels: Mapping[str, str], match: Mapping[str, str]) -> bool:
    return all(re.fullmatch(p, labels.get(k, "")) is not None for k, p in match.items())


def _key(labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def _quantile(values: Sequence[float], q: float) -> float:
    # Prometheus' quantile_over_time: linear interpolation between the closest ranks.
    ordered = sorted(values)
    rank = q * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    weight = rank - low
    return ordered[low] * (1 - weight) + ordered[high] * weight


def _aggregate(values: Sequence[float], agg: str) -> float | None:
    if not values:
        return None
    if agg == "max":
        return max(values)
    if agg == "min":
        return min(values)
    return math.fsum(values)


class History:
    """Samples taken at times (Unix seconds, ascending), kept for ``keep_s`` seconds."""

    def __init__(self, keep_s: float) -> None:
        self.keep_s = keep_s
        self._taken: deque[tuple[float, Samples]] = deque()

    def __len__(self) -> int:
        return len(self._taken)

    def add(self, at: float, samples: Samples) -> None:
        """Record ``samples`` taken at ``at``; forget those older than ``keep_s``. A time
        not after the newest one replaces nothing and is ignored."""
        if self._taken and at <= self._taken[-1][0]:
            return
        self._taken.append((at, samples))
        while self._taken and self._taken[0][0] < at - self.keep_s:
            self._taken.popleft()

    def _between(self, start: float, end: float) -> list[tuple[float, Samples]]:
        return [(t, s) for t, s in self._taken if start <= t <= end]

    def select(self, selector: Selector, window_s: float, now: float) -> float | None:
        """``selector`` at ``now`` (see :class:`~playpulse.alerts.rules.Selector`), or
        ``None`` when unknown: no sample of a ``value`` or ``quantile`` metric, fewer
        than two samples in an ``increase`` or ``rate`` window (no such series in them
        counts 0)."""
        end = now - selector.offset
        if selector.fn == "value":
            taken = self._between(end - max(window_s, 0.0) - self.keep_s, end)
            if not taken:
                return None
            _, newest = taken[-1]
            values = [
                v
                for labels, v in newest.get(selector.metric, [])
                if _matches(labels, selector.match)
            ]
            return _aggregate(values, selector.agg)
        taken = self._between(end - window_s, end)
        if selector.fn == "quantile":
            series: dict[tuple[tuple[str, str], ...], list[float]] = {}
            for _, samples in taken:
                for labels, v in samples.get(selector.metric, []):
                    if _matches(labels, selector.match) and not math.isnan(v):
                        series.setdefault(_key(labels), []).append(v)
            return _aggregate([_quantile(v, selector.q) for v in series.values()], selector.agg)
        if len(taken) < 2:
            return None
        increases: dict[tuple[tuple[str, str], ...], float] = {}
        previous: dict[tuple[tuple[str, str], ...], float] = {}
        for i, (_, samples) in enumerate(taken):
            current = {
                _key(labels): v
                for labels, v in samples.get(selector.metric, [])
                if _matches(labels, selector.match)
            }
            for key, v in current.items():
                if i == 0:
                    continue
                before = previous.get(key, 0.0)
                # A counter that went down was reset (a restart): it counted v since.
                increases[key] = increases.get(key, 0.0) + (v - before if v >= before else v)
            previous = current
        total = _aggregate(list(increases.values()), selector.agg) or 0.0
        if selector.fn == "rate":
            span = taken[-1][0] - taken[0][0]
            return total / span if span > 0 else None
        return total
