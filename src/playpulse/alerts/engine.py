"""Alert evaluation, state and notifications.

:func:`step` is the pure state machine of one alert: (rule, whether its condition holds,
previous state, now) -> (new state, notification or None). States: ``inactive`` (the
condition does not hold), ``pending`` (it holds, for less than the rule's ``for``),
``firing``, ``resolved`` (it fired and stopped holding; ``pending`` again when it holds
again). A condition that cannot be judged (no samples yet, a zero denominator, a rule
below its minimum sample) leaves the state as it is.

:class:`AlertStore` keeps the states, their history and an outbox of notifications in
``alerts.db`` in the data dir (mode 0600). A transition and its notifications are
written in one transaction, and a notification is marked delivered once a webhook
answered 2xx, so a restart neither forgets an alert nor notifies it twice (a process
killed between the webhook's answer and the mark sends that one again: at least once).

:class:`Evaluator` evaluates rules against a :class:`~playpulse.alerts.samples.
MetricSource` and the catalog, and delivers the outbox to webhooks
(Alertmanager-webhook payloads, retries with exponential backoff).
:class:`AlertManager` runs it on a thread every ``alert_interval_s``; :func:`start_alerting`
is what ``playpulse up`` calls.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import httpx

from playpulse.alerts.rules import QueryCheck, Rule, active_rules, compare
from playpulse.alerts.samples import AppSource, History, MetricSource
from playpulse.config import Settings
from playpulse.errors import ConfigError, PlaypulseError

log = logging.getLogger("playpulse.alerts")

State = Literal["inactive", "pending", "firing", "resolved"]
Status = Literal["firing", "resolved"]

#: The alert state file in the data dir.
STATE_FILE = "alerts.db"

#: Alertmanager's "zero" time: an alert's ``endsAt`` while it fires.
ZERO_TIME = "0001-01-01T00:00:00Z"


class AlertError(PlaypulseError):
    """The alert state file cannot be read or written (the message says which and why)."""


@dataclass(frozen=True)
class AlertState:
    """One alert's state. Times are Unix seconds (UTC): ``active_since`` when its
    condition started holding, ``fired_at`` when it last fired, ``resolved_at`` when it
    last resolved; ``value`` the last value judged (``None``: unknown)."""

    name: str
    state: State = "inactive"
    active_since: float | None = None
    fired_at: float | None = None
    resolved_at: float | None = None
    value: float | None = None
    changed_at: float | None = None


def step(
    rule: Rule, holds: bool | None, value: float | None, previous: AlertState | None, now: float
) -> tuple[AlertState, Status | None]:
    """The next state of ``rule``'s alert and the notification it sends (``"firing"``,
    ``"resolved"`` or ``None``), given whether its condition ``holds`` at ``now``
    (``None``: unknown, the state stays) and the ``value`` judged. Pure."""
    prev = previous or AlertState(rule.name)
    seen = replace(prev, value=value)
    if holds is None:
        return seen, None
    if holds:
        if prev.state in ("inactive", "resolved"):
            pending = replace(seen, state="pending", active_since=now, changed_at=now)
            if rule.for_s <= 0:
                return replace(pending, state="firing", fired_at=now), "firing"
            return pending, None
        if prev.state == "pending":
            since = prev.active_since if prev.active_since is not None else now
            if now - since >= rule.for_s:
                return replace(seen, state="firing", fired_at=now, changed_at=now), "firing"
        return seen, None
    if prev.state == "pending":
        return replace(seen, state="inactive", active_since=None, changed_at=now), None
    if prev.state == "firing":
        resolved = replace(seen, state="resolved", resolved_at=now, changed_at=now)
        return replace(resolved, active_since=None), "resolved"
    return seen, None


def _iso(at: float | None) -> str | None:
    return None if at is None else datetime.fromtimestamp(at, UTC).isoformat()


def _rfc3339(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")


def fingerprint(labels: dict[str, str]) -> str:
    """A stable id of an alert's label set (16 hex digits)."""
    text = json.dumps(labels, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def webhook_payload(
    rule: Rule, state: AlertState, status: Status, external_url: str = ""
) -> dict[str, Any]:
    """The Alertmanager webhook (version 4) payload of ``rule``'s alert going
    ``status``: one alert, grouped by ``alertname``; ``startsAt`` is when it fired,
    ``endsAt`` when it resolved (the zero time while it fires)."""
    labels = rule.alert_labels
    annotations = {"summary": rule.summary}
    if rule.description:
        annotations["description"] = rule.description
    if state.value is not None and math.isfinite(state.value):
        annotations["value"] = f"{state.value:.6g}"
    starts = state.fired_at if state.fired_at is not None else time.time()
    ends = _rfc3339(state.resolved_at) if status == "resolved" and state.resolved_at else None
    return {
        "version": "4",
        "groupKey": f'{{}}:{{alertname="{rule.name}"}}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "playpulse",
        "groupLabels": {"alertname": rule.name},
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": external_url,
        "alerts": [
            {
                "status": status,
                "labels": labels,
                "annotations": annotations,
                "startsAt": _rfc3339(starts),
                "endsAt": ends or ZERO_TIME,
                "generatorURL": external_url,
                "fingerprint": fingerprint(labels),
            }
        ],
    }


_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    name TEXT PRIMARY KEY, state TEXT NOT NULL, active_since REAL, fired_at REAL,
    resolved_at REAL, value REAL, changed_at REAL, labels TEXT NOT NULL, summary TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, from_state TEXT NOT NULL,
    to_state TEXT NOT NULL, at REAL NOT NULL, value REAL
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, status TEXT NOT NULL, url TEXT NOT NULL,
    payload TEXT NOT NULL, created_at REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL, delivered_at REAL, failed_at REAL, error TEXT
);
"""


@dataclass(frozen=True)
class Transition:
    """A change of an alert's state (``at`` in Unix seconds)."""

    name: str
    from_state: str
    to_state: str
    at: float
    value: float | None


@dataclass(frozen=True)
class Notification:
    """A row of the outbox: one notification to one webhook."""

    id: int
    name: str
    status: str
    url: str
    payload: dict[str, Any]
    attempts: int
    delivered_at: float | None
    failed_at: float | None
    error: str | None


def _note(row: tuple[Any, ...]) -> Notification:
    return Notification(
        id=row[0],
        name=row[1],
        status=row[2],
        url=row[3],
        payload=json.loads(row[4]),
        attempts=row[5],
        delivered_at=row[6],
        failed_at=row[7],
        error=row[8],
    )


class AlertStore:
    """``alerts.db``: states, history and the notification outbox (see the module
    docstring). Created with mode 0600 when missing. Raises :class:`AlertError` when the
    file cannot be opened."""

    def __init__(self, path: Path, *, create: bool = True) -> None:
        self.path = path
        try:
            if create:
                path.parent.mkdir(parents=True, exist_ok=True)
                os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
                os.chmod(path, 0o600)
            elif not path.exists():
                raise AlertError(f"no alert state in {path.parent}: `playpulse up` never ran there")
            self._db = sqlite3.connect(
                path, timeout=10.0, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            if create:
                self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise AlertError(f"cannot open the alert state {path}: {exc}") from None
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                    self._db.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise AlertError(f"cannot write the alert state {self.path}: {exc}") from None

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise AlertError(f"cannot read the alert state {self.path}: {exc}") from None

    def states(self) -> dict[str, AlertState]:
        """Every alert's stored state, by name."""
        rows = self._read(
            "SELECT name, state, active_since, fired_at, resolved_at, value, changed_at FROM alerts"
        )
        return {r[0]: AlertState(*r) for r in rows}

    def rows(self) -> list[dict[str, Any]]:
        """Every alert as JSON-ready values: ``name``, ``state``, ``labels``, ``summary``,
        ``value``, ``active_since``, ``fired_at``, ``resolved_at``, ``changed_at``
        (ISO 8601 UTC or null); firing first, then pending, then by name."""
        rows = self._read(
            "SELECT name, state, active_since, fired_at, resolved_at, value, changed_at, "
            "labels, summary FROM alerts"
        )
        order = {"firing": 0, "pending": 1, "resolved": 2, "inactive": 3}
        out = [
            {
                "name": r[0],
                "state": r[1],
                "labels": json.loads(r[7]),
                "summary": r[8],
                "value": r[5],
                "active_since": _iso(r[2]),
                "fired_at": _iso(r[3]),
                "resolved_at": _iso(r[4]),
                "changed_at": _iso(r[6]),
            }
            for r in rows
        ]
        return sorted(out, key=lambda a: (order.get(a["state"], 9), a["name"]))

    def history(self, limit: int = 100) -> list[Transition]:
        """The newest ``limit`` transitions, newest first."""
        rows = self._read(
            "SELECT name, from_state, to_state, at, value FROM history ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [Transition(*r) for r in rows]

    def save(
        self,
        rule: Rule,
        state: AlertState,
        previous: AlertState | None,
        notifications: Sequence[tuple[str, dict[str, Any]]],
        now: float,
    ) -> Transition | None:
        """Store ``state`` of ``rule``; with a state change, a history row and the
        ``(url, payload)`` notifications, all in one transaction. Returns the transition,
        if any."""
        before = previous.state if previous is not None else "inactive"
        changed = previous is None or before != state.state
        with self._transaction() as db:
            db.execute(
                "INSERT INTO alerts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO "
                "UPDATE SET state=excluded.state, active_since=excluded.active_since, "
                "fired_at=excluded.fired_at, resolved_at=excluded.resolved_at, "
                "value=excluded.value, changed_at=excluded.changed_at, "
                "labels=excluded.labels, summary=excluded.summary",
                (
                    state.name,
                    state.state,
                    state.active_since,
                    state.fired_at,
                    state.resolved_at,
                    state.value,
                    state.changed_at,
                    json.dumps(rule.alert_labels, sort_keys=True),
                    rule.summary,
                ),
            )
            if not changed or before == state.state:
                return None
            db.execute(
                "INSERT INTO history (name, from_state, to_state, at, value) "
                "VALUES (?, ?, ?, ?, ?)",
                (state.name, before, state.state, now, state.value),
            )
            for url, payload in notifications:
                db.execute(
                    "INSERT INTO outbox (name, status, url, payload, created_at, next_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (state.name, payload["status"], url, json.dumps(payload), now, now),
                )
        return Transition(state.name, before, state.state, now, state.value)

    def outbox(self, *, undelivered: bool = False) -> list[Notification]:
        """The notifications, oldest first (only those still to deliver when
        ``undelivered``)."""
        where = "WHERE delivered_at IS NULL AND failed_at IS NULL" if undelivered else ""
        rows = self._read(
            "SELECT id, name, status, url, payload, attempts, delivered_at, failed_at, error, "
            f"next_at FROM outbox {where} ORDER BY id"
        )
        return [_note(r) for r in rows]

    def due(self, now: float) -> list[tuple[Notification, float]]:
        """Undelivered notifications with their next attempt time, oldest first."""
        rows = self._read(
            "SELECT id, name, status, url, payload, attempts, delivered_at, failed_at, error, "
            "next_at FROM outbox WHERE delivered_at IS NULL AND failed_at IS NULL ORDER BY id"
        )
        return [(_note(r), float(r[9])) for r in rows]

    def delivered(self, notification_id: int, now: float) -> None:
        """Mark a notification delivered."""
        with self._transaction() as db:
            db.execute(
                "UPDATE outbox SET delivered_at = ?, attempts = attempts + 1, error = NULL "
                "WHERE id = ?",
                (now, notification_id),
            )

    def attempt_failed(
        self, notification_id: int, error: str, next_at: float | None, now: float
    ) -> None:
        """Record a failed attempt: try again at ``next_at``, or give up (``None``)."""
        with self._transaction() as db:
            db.execute(
                "UPDATE outbox SET attempts = attempts + 1, error = ?, next_at = ?, "
                "failed_at = ? WHERE id = ?",
                (
                    error[:500],
                    next_at if next_at is not None else now,
                    None if next_at is not None else now,
                    notification_id,
                ),
            )

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._db.close()


#: ``(check, start, end) -> the summed column``, or ``None`` when there is no answer.
QueryRunner = Callable[[QueryCheck, datetime, datetime], float | None]


def catalog_runner(settings: Settings) -> QueryRunner:
    """A :data:`QueryRunner` over the catalog of ``settings.data_dir``
    (:func:`playpulse.query.catalog.run_query`)."""

    def run(check: QueryCheck, start: datetime, end: datetime) -> float | None:
        from playpulse.query.catalog import QueryParams, run_query

        params = QueryParams.model_validate({**check.params, "start": start, "end": end})
        table = run_query(check.query, params, settings, now=end)
        values = [v for v in table.column(check.column).to_pylist() if v is not None]
        return float(math.fsum(float(v) for v in values))

    return run


def check_queries(rules: Sequence[Rule]) -> None:
    """Raise :class:`~playpulse.errors.ConfigError` when a rule's check names a query
    the catalog does not have or a column that query does not return."""
    from pydantic import ValidationError

    from playpulse.query.catalog import CATALOG, QueryParams

    for rule in rules:
        if rule.check is None:
            continue
        spec = CATALOG.get(rule.check.query)
        if spec is None:
            raise ConfigError(
                f"alert {rule.name}: unknown query {rule.check.query!r}; known: "
                + ", ".join(sorted(CATALOG))
            )
        try:
            QueryParams.model_validate(rule.check.params)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(x) for x in first["loc"])
            raise ConfigError(
                f"alert {rule.name}: query parameter {where}: {first['msg']}"
            ) from None
        if rule.check.column not in spec.columns:
            raise ConfigError(
                f"alert {rule.name}: query {spec.name} has no column {rule.check.column!r}; "
                f"it has {', '.join(spec.columns)}"
            )


@dataclass(frozen=True)
class Judgement:
    """Whether a rule's condition holds (``None``: unknown) and the value judged (the
    first condition's, or the check's)."""

    holds: bool | None
    value: float | None


def judge(rule: Rule, history: History, now: float) -> Judgement:
    """Judge ``rule``'s metric conditions on ``history`` at ``now`` (Unix seconds).
    Every condition must hold; any unknown one (and none false) makes it unknown."""
    holds: bool | None = True
    first: float | None = None
    for i, condition in enumerate(rule.conditions):
        parts = [history.select(s, rule.window_s, now) for s in condition.terms]
        value: float | None = (
            None if any(p is None for p in parts) else math.fsum(p for p in parts if p is not None)
        )
        if value is not None and condition.over is not None:
            below = [history.select(s, rule.window_s, now) for s in condition.over]
            if any(b is None for b in below):
                value = None
            else:
                denominator = math.fsum(b for b in below if b is not None)
                value = value / denominator if denominator else None
        if i == 0:
            first = value
        if value is None or math.isnan(value):
            if holds:
                holds = None
        elif not compare(value, condition.op, condition.threshold):
            holds = False
    return Judgement(holds, first)


def judge_check(check: QueryCheck, runner: QueryRunner, now: float) -> Judgement:
    """Judge a catalog query check at ``now`` with ``runner``."""
    end = datetime.fromtimestamp(now, UTC)
    start = datetime.fromtimestamp(now - check.range, UTC)
    value = runner(check, start, end)
    if value is None:
        return Judgement(None, None)
    if check.compare_offset is not None:
        offset = check.compare_offset
        base = runner(
            check,
            datetime.fromtimestamp(now - offset - check.range, UTC),
            datetime.fromtimestamp(now - offset, UTC),
        )
        if base is None or base < check.min_baseline or base <= 0:
            return Judgement(None, None)
        value = value / base
    return Judgement(compare(value, check.op, check.threshold), value)


class Evaluator:
    """Evaluates ``rules`` (their states in ``store``) and delivers notifications.

    ``source`` gives the metric samples (``None``: metric rules stay unknown),
    ``runner`` answers catalog checks (``None``: check rules stay unknown); ``webhooks``
    are the URLs notified; ``retry_base_s`` the first retry delay (doubled per failed
    attempt, at most ``retry_max_s``), ``max_attempts`` per notification before it is
    given up (logged). Not thread-safe: one thread calls :meth:`tick` and
    :meth:`deliver`.
    """

    def __init__(
        self,
        rules: Sequence[Rule],
        store: AlertStore,
        source: MetricSource | None,
        *,
        runner: QueryRunner | None = None,
        webhooks: Sequence[str] = (),
        interval_s: float = 15.0,
        retry_base_s: float = 1.0,
        retry_max_s: float = 300.0,
        max_attempts: int = 30,
        timeout_s: float = 5.0,
        external_url: str = "",
    ) -> None:
        self.rules = list(rules)
        self.store = store
        self.source = source
        self.runner = runner
        self.webhooks = list(webhooks)
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        self.max_attempts = max_attempts
        self.external_url = external_url
        keep = max([r.window_s for r in self.rules if r.conditions] or [0.0])
        self.history = History(keep + 2 * interval_s)
        self._metrics = set().union(*(r.metrics() for r in self.rules))
        self._client = httpx.Client(timeout=timeout_s)
        # The store's states, read once: this evaluator is their only writer.
        self._states = store.states()
        known = {r.name for r in self.rules}
        for name in set(self._states) - known:
            log.info("alert %s is in the state file but no rule has that name now", name)

    def states(self) -> dict[str, AlertState]:
        """The current state of every rule's alert (``inactive`` when never judged)."""
        return {r.name: self._states.get(r.name, AlertState(r.name)) for r in self.rules}

    def tick(self, now: float | None = None) -> list[Transition]:
        """Take the samples, judge every rule at ``now`` (Unix seconds; default the
        clock), store the new states and queue notifications. Returns the transitions.
        A source or query that fails leaves the rules it feeds unknown (logged)."""
        now = time.time() if now is None else now
        if self.source is not None and self._metrics:
            try:
                samples = self.source.samples()
                self.history.add(now, {k: v for k, v in samples.items() if k in self._metrics})
            except (PlaypulseError, OSError, ValueError) as exc:
                log.warning("alert metrics unavailable this round: %s", exc)
        transitions = []
        for rule in self.rules:
            if rule.check is not None:
                try:
                    judged = (
                        judge_check(rule.check, self.runner, now)
                        if self.runner is not None
                        else Judgement(None, None)
                    )
                except (PlaypulseError, OSError, ValueError) as exc:
                    log.warning("alert %s: query %s failed: %s", rule.name, rule.check.query, exc)
                    judged = Judgement(None, None)
            else:
                judged = (
                    judge(rule, self.history, now)
                    if self.source is not None
                    else Judgement(None, None)
                )
            previous = self._states.get(rule.name)
            state, status = step(rule, judged.holds, judged.value, previous, now)
            notes = []
            if status is not None:
                payload = webhook_payload(rule, state, status, self.external_url)
                notes = [(url, payload) for url in self.webhooks]
                log.warning("alert %s is %s: %s", rule.name, status, rule.summary)
            if previous is None or state != previous:
                transition = self.store.save(rule, state, previous, notes, now)
                if transition is not None:
                    transitions.append(transition)
            self._states[rule.name] = state
        return transitions

    def deliver(self, now: float | None = None) -> int:
        """Send the notifications that are due (oldest first; a later notification of an
        alert waits while an earlier one to the same webhook is undelivered). Returns how
        many were delivered."""
        sent = 0
        blocked: set[tuple[str, str]] = set()
        for note, next_at in self.store.due(time.time() if now is None else now):
            key = (note.url, note.name)
            clock = time.time() if now is None else now
            if key in blocked or next_at > clock:
                blocked.add(key)
                continue
            try:
                response = self._client.post(note.url, json=note.payload)
                ok = 200 <= response.status_code < 300
                error = "" if ok else f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                ok, error = False, f"{type(exc).__name__}: {exc}"
            clock = time.time() if now is None else now
            if ok:
                self.store.delivered(note.id, clock)
                sent += 1
                continue
            blocked.add(key)
            attempts = note.attempts + 1
            if attempts >= self.max_attempts:
                log.error(
                    "alert %s: giving up notifying %s (%s) after %d attempts: %s",
                    note.name,
                    _safe_url(note.url),
                    note.status,
                    attempts,
                    error,
                )
                self.store.attempt_failed(note.id, error, None, clock)
            else:
                delay = min(self.retry_max_s, self.retry_base_s * 2 ** (attempts - 1))
                log.warning(
                    "alert %s: notifying %s failed (%s); again in %.1f s",
                    note.name,
                    _safe_url(note.url),
                    error,
                    delay,
                )
                self.store.attempt_failed(note.id, error, clock + delay, clock)
        return sent

    def close(self) -> None:
        """Close the HTTP client (not the store)."""
        self._client.close()


def _safe_url(url: str) -> str:
    # A webhook URL may carry a token in its user part or query: log scheme, host, path.
    parts = httpx.URL(url)
    return f"{parts.scheme}://{parts.host}{f':{parts.port}' if parts.port else ''}{parts.path}"


def check_webhooks(urls: Sequence[str]) -> None:
    """Raise :class:`~playpulse.errors.ConfigError` for a webhook URL that is not
    ``http://`` or ``https://`` with a host (the message shows it without credentials)."""
    for url in urls:
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError):
            parsed = None
        if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
            shown = url if parsed is None else _safe_url(url)
            raise ConfigError(f"alert webhook {shown!r} is not an http:// or https:// URL")


def state_path(settings: Settings) -> Path:
    """``<data dir>/alerts.db``."""
    return settings.data_dir / STATE_FILE


class AlertManager:
    """Runs an :class:`Evaluator` every ``interval_s`` on a daemon thread until
    :meth:`stop`."""

    def __init__(self, evaluator: Evaluator, interval_s: float) -> None:
        self.evaluator = evaluator
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="playpulse-alerts", daemon=True)

    def _run(self) -> None:
        # One round at least, even when stopped at once (then stop() waits for it).
        while True:
            try:
                self.evaluator.tick()
                self.evaluator.deliver()
            except PlaypulseError as exc:
                log.error("alert evaluation failed: %s", exc)
            except Exception:  # the evaluator must outlive any one round
                log.exception("alert evaluation failed")
            if self._stop.wait(self.interval_s):
                return

    def start(self) -> AlertManager:
        """Start the thread; returns ``self``."""
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the thread (after its round) and close the evaluator and its store."""
        self._stop.set()
        self._thread.join(timeout_s)
        self.evaluator.close()
        self.evaluator.store.close()


def start_alerting(
    settings: Settings, app: Any = None, *, source: MetricSource | None = None
) -> AlertManager:
    """What ``playpulse up`` calls in its lifespan: evaluate the built-in rules and
    ``settings.alert_rules`` every ``settings.alert_interval_s`` on a thread, notifying
    ``settings.alert_webhooks``; returns the running :class:`AlertManager` (call
    ``.stop()`` at shutdown). Metrics come from ``source``, else from ``app``'s
    ``/metrics`` in-process (the pipeline's metrics are added to it:
    :func:`playpulse.monitoring.add_pipeline_metrics`). Raises
    :class:`~playpulse.errors.ConfigError` for bad rules, :class:`AlertError` when the
    state file cannot be opened."""
    rules = active_rules(settings)
    check_queries(rules)
    check_webhooks(settings.alert_webhooks)
    if source is None and app is not None:
        from playpulse.monitoring.metrics import add_pipeline_metrics

        add_pipeline_metrics(app, settings)
        source = AppSource(app)
    store = AlertStore(state_path(settings))
    evaluator = Evaluator(
        rules,
        store,
        source,
        runner=catalog_runner(settings),
        webhooks=settings.alert_webhooks,
        interval_s=settings.alert_interval_s,
    )
    return AlertManager(evaluator, settings.alert_interval_s).start()


def firing_alerts(settings: Settings) -> list[dict[str, Any]]:
    """The alerts of ``settings.data_dir`` that fire now (see :meth:`AlertStore.rows`),
    for the dashboard and ``playpulse alerts list``; ``[]`` when no state file exists."""
    path = state_path(settings)
    if not path.exists():
        return []
    store = AlertStore(path, create=False)
    try:
        return [a for a in store.rows() if a["state"] == "firing"]
    finally:
        store.close()
