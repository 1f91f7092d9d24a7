"""Alert rules: the built-in ones (:func:`builtin_rules`) and user rules from a YAML file
(:func:`load_rules`), one model for both, which both playpulse's own evaluator
(:mod:`playpulse.alerts.engine`) and the Prometheus export (:mod:`playpulse.monitoring.
export`) read.

A rule is either metric conditions (:class:`Condition`, all must hold: a sum of metric
selectors, optionally divided by another sum, compared with a threshold) or a catalog
query check (:class:`QueryCheck`: a column of a catalog query over the last ``range``,
optionally as a fraction of the same range ``compare_offset`` earlier). It fires once its
conditions have held for its ``for`` duration. Durations are seconds, or text such as
``"90s"``, ``"5m"``, ``"1h"``, ``"7d"``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from playpulse.config import Settings
from playpulse.errors import ConfigError

Op = Literal[">", ">=", "<", "<=", "==", "!="]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_METRIC = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


def parse_duration(value: object) -> float:
    """Seconds of ``value``: a number (seconds) or text such as ``"500ms"``, ``"90s"``,
    ``"5m"``, ``"1h"``, ``"7d"``, ``"1w"`` (no unit: seconds). Raises
    :class:`ValueError` for anything else or a negative duration."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNITS[m.group(2) or "s"]
    else:
        raise ValueError(f"{value!r} is not a duration such as 30s, 5m, 1h or 7d")
    if seconds < 0:
        raise ValueError(f"{value!r} is negative")
    return seconds


def compare(value: float, op: Op, threshold: float) -> bool:
    """``value op threshold``."""
    if op == ">":
        return value > threshold
    if op == ">=":
        return value >= threshold
    if op == "<":
        return value < threshold
    if op == "<=":
        return value <= threshold
    if op == "==":
        return value == threshold
    return value != threshold


class Selector(BaseModel):
    """One metric reduced to one number.

    ``metric`` is a sample name as ``/metrics`` exposes it (counters with ``_total``);
    ``match`` keeps the series whose labels fully match each regular expression;
    ``fn`` is ``value`` (the newest sample), ``increase`` or ``rate`` (per second) over
    the rule's window, or ``quantile`` (``q`` of the samples over the window, per series);
    ``agg`` combines the series (``sum``, ``max``, ``min``); ``offset`` looks that much
    further back (seconds).
    """

    model_config = ConfigDict(extra="forbid")

    metric: str
    match: dict[str, str] = Field(default_factory=dict)
    fn: Literal["value", "increase", "rate", "quantile"] = "value"
    agg: Literal["sum", "max", "min"] = "sum"
    q: float = Field(0.99, ge=0, le=1)
    offset: float = Field(0.0, ge=0)

    @field_validator("metric")
    @classmethod
    def _metric_name(cls, value: str) -> str:
        if not _METRIC.match(value):
            raise ValueError(f"{value!r} is not a Prometheus metric name")
        return value

    @field_validator("match")
    @classmethod
    def _regexes(cls, value: dict[str, str]) -> dict[str, str]:
        for label, pattern in value.items():
            if not _NAME.match(label):
                raise ValueError(f"{label!r} is not a label name")
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"label {label}: {pattern!r} is not a regex: {exc}") from None
        return value

    @field_validator("offset", mode="before")
    @classmethod
    def _offset(cls, value: object) -> float:
        return parse_duration(value)


class Condition(BaseModel):
    """``sum(terms) [/ sum(over)] op threshold``. With ``over``, a zero denominator
    makes the condition unknown (it holds neither way)."""

    model_config = ConfigDict(extra="forbid")

    terms: list[Selector] = Field(min_length=1)
    over: list[Selector] | None = None
    op: Op = ">"
    threshold: float


class QueryCheck(BaseModel):
    """A catalog query's ``column`` (summed over its rows) over ``[now - range, now)``,
    with the query's ``params`` (filters such as ``content_type``). With
    ``compare_offset``, the value is that sum divided by the same sum over the range
    ``compare_offset`` earlier (a week: the same hour of the same weekday), unknown
    while that baseline is below ``min_baseline`` (too little to compare with)."""

    model_config = ConfigDict(extra="forbid")

    query: str
    column: str
    range: float = 3600.0
    compare_offset: float | None = None
    min_baseline: float = Field(0.0, ge=0)
    params: dict[str, str] = Field(default_factory=dict)
    op: Op = "<"
    threshold: float

    @field_validator("range", "compare_offset", mode="before")
    @classmethod
    def _durations(cls, value: object) -> float | None:
        return None if value is None else parse_duration(value)


class Rule(BaseModel):
    """One alert rule.

    ``name`` is the alert's ``alertname`` (letters, digits, ``_``); ``summary`` says
    what is wrong in one line; ``conditions`` (all must hold) or ``check`` (a catalog
    query) say when; ``for_s`` how long they must hold before it fires (``for`` in
    YAML); ``window_s`` the look-back of ``increase``, ``rate`` and ``quantile``
    (``window``); ``labels`` are added to the alert's (``severity`` by default
    ``warning``). ``builtin`` rules follow ``alert_for_s``; ``export_only`` rules are
    only exported to Prometheus (playpulse keeps no week of samples to evaluate them).
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str
    summary: str
    description: str = ""
    conditions: list[Condition] = Field(default_factory=list)
    check: QueryCheck | None = None
    for_s: float = Field(300.0, alias="for")
    window_s: float = Field(300.0, alias="window")
    labels: dict[str, str] = Field(default_factory=lambda: {"severity": "warning"})
    builtin: bool = False
    export_only: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"{value!r} is not an alert name (letters, digits and _)")
        return value

    @field_validator("for_s", "window_s", mode="before")
    @classmethod
    def _durations(cls, value: object) -> float:
        return parse_duration(value)

    @model_validator(mode="after")
    def _one_kind(self) -> Rule:
        if bool(self.conditions) == (self.check is not None):
            raise ValueError("a rule has either conditions (metrics) or a check (a query)")
        for label in self.labels:
            if not _NAME.match(label) or label == "alertname":
                raise ValueError(f"{label!r} cannot be a label of an alert")
        return self

    @property
    def alert_labels(self) -> dict[str, str]:
        """The alert's labels: ``alertname`` and the rule's ``labels``."""
        return {"alertname": self.name, **self.labels}

    def metrics(self) -> set[str]:
        """The metric names the rule's conditions read."""
        out = set()
        for condition in self.conditions:
            for selector in [*condition.terms, *(condition.over or [])]:
                out.add(selector.metric)
        return out

    def tuned(self, for_s: float | None, interval_s: float) -> Rule:
        """This rule with ``alert_for_s`` applied: a built-in rule's ``for`` becomes
        ``for_s`` and its window ``max(for_s, 2 * interval_s)`` (a window covers at least
        two evaluations); user rules and ``for_s=None`` leave it unchanged."""
        if for_s is None or not self.builtin:
            return self
        return self.model_copy(update={"for_s": for_s, "window_s": max(for_s, 2 * interval_s)})


def _sel(metric: str, fn: str = "value", agg: str = "sum", **kw: Any) -> Selector:
    return Selector.model_validate({"metric": metric, "fn": fn, "agg": agg, **kw})


#: Fewer events than this in a window never fire the rejected-share rule.
MIN_REJECT_SAMPLE = 100


def builtin_rules() -> list[Rule]:
    """The built-in rules (docs/monitoring.md explains each)."""
    accepted = _sel("playpulse_events_accepted_total", "increase")
    rejected = _sel("playpulse_events_rejected_total", "increase")
    rules = [
        Rule(
            name="PlaypulseFreshnessHigh",
            summary="events take over 1 s from acknowledgement to the store (p99 over the window)",
            conditions=[
                Condition(
                    terms=[_sel("playpulse_freshness_seconds", "quantile", "max", q=0.99)],
                    threshold=1.0,
                )
            ],
        ),
        Rule(
            name="PlaypulseRejectedShareHigh",
            summary="over 1 % of the events sent are rejected (quarantined)",
            description=f"at least {MIN_REJECT_SAMPLE} events in the window, so that a few "
            "bad events at low traffic do not page",
            conditions=[
                Condition(terms=[rejected], over=[accepted, rejected], threshold=0.01),
                Condition(terms=[accepted, rejected], op=">=", threshold=MIN_REJECT_SAMPLE),
            ],
        ),
        Rule(
            name="PlaypulseThrottling",
            summary="the collector answers 429 or 503 (backpressure, stream unavailable)",
            conditions=[
                Condition(
                    terms=[
                        _sel("playpulse_requests_total", "increase", match={"status": "429|503"})
                    ],
                    threshold=0,
                )
            ],
        ),
        Rule(
            name="PlaypulseProcessorDown",
            summary="a processor is not running (failed, restarting, stopped or gone)",
            conditions=[
                Condition(terms=[_sel("playpulse_processor_up", agg="min")], op="<", threshold=1)
            ],
            labels={"severity": "critical"},
        ),
        Rule(
            name="PlaypulseProcessorRestarting",
            summary="a processor died and was started again (processor errors)",
            conditions=[
                Condition(
                    terms=[_sel("playpulse_processor_restarts_total", "increase")], threshold=0
                )
            ],
        ),
        Rule(
            name="PlaypulseProcessorNoProgress",
            summary="the processors process nothing while events wait in the stream",
            conditions=[
                Condition(
                    terms=[_sel("playpulse_processor_events_processed_total", "increase")],
                    op="==",
                    threshold=0,
                ),
                Condition(
                    terms=[_sel("playpulse_stream_lag_records", match={"group": "processor"})],
                    threshold=0,
                ),
            ],
            labels={"severity": "critical"},
        ),
        Rule(
            name="PlaypulseConsumerBehindRetention",
            summary="the processors are behind by over 80 % of the stream's retention",
            conditions=[
                Condition(
                    terms=[_sel("playpulse_freshness_seconds", agg="max")],
                    over=[_sel("playpulse_stream_retention_seconds", agg="max")],
                    threshold=0.8,
                )
            ],
            labels={"severity": "critical"},
        ),
        Rule(
            name="PlaypulseRecordsLost",
            summary="retention deleted records the processors had not processed",
            conditions=[
                Condition(
                    terms=[_sel("playpulse_stream_lost_records_total", "increase")], threshold=0
                )
            ],
            labels={"severity": "critical"},
        ),
        Rule(
            name="PlaypulseStreamNearCap",
            summary="the stream holds over 90 % of stream_max_bytes (the oldest records go next)",
            conditions=[
                Condition(
                    terms=[_sel("playpulse_stream_bytes", agg="max")],
                    over=[_sel("playpulse_stream_max_bytes", agg="max")],
                    threshold=0.9,
                )
            ],
        ),
        Rule(
            name="PlaypulseQuarantineNearCap",
            summary="the quarantine holds over 90 % of quarantine_max_bytes (the oldest go next)",
            conditions=[
                Condition(
                    terms=[_sel("playpulse_quarantine_bytes", agg="max")],
                    over=[_sel("playpulse_quarantine_max_bytes", agg="max")],
                    threshold=0.9,
                )
            ],
        ),
        Rule(
            name="PlaypulseDiskNearFull",
            summary="under 10 % of the data dir's file system is free",
            conditions=[
                Condition(
                    terms=[_sel("playpulse_data_dir_free_bytes", agg="min")],
                    over=[_sel("playpulse_data_dir_capacity_bytes", agg="max")],
                    op="<",
                    threshold=0.1,
                )
            ],
            labels={"severity": "critical"},
        ),
        Rule(
            name="PlaypulsePlaysDropped",
            summary="plays in the last hour are under half of the same hour a week earlier",
            description="a silent app release that breaks tracking; needs at least 20 plays "
            "a week earlier",
            check=QueryCheck(
                query="overview",
                column="plays",
                range=3600,
                compare_offset=7 * 86400,
                min_baseline=20,
                op="<",
                threshold=0.5,
            ),
            window_s=3600,
        ),
        Rule(
            name="PlaypulseEventsDropped",
            summary="events kept in the last hour are under half of the same hour a week earlier",
            conditions=[
                Condition(
                    terms=[_sel("playpulse_events_kept_total", "increase")],
                    over=[_sel("playpulse_events_kept_total", "increase", offset=7 * 86400)],
                    op="<",
                    threshold=0.5,
                ),
                Condition(
                    terms=[_sel("playpulse_events_kept_total", "increase", offset=7 * 86400)],
                    op=">=",
                    threshold=100,
                ),
            ],
            window_s=3600,
            export_only=True,
        ),
    ]
    for rule in rules:
        rule.builtin = True
    return rules


def _user_rule(entry: object, where: str) -> Rule:
    """A rule from one YAML entry, with the short forms: ``metric``/``fn``/``match``/
    ``agg``/``over``/``op``/``threshold``/``min_samples`` for one condition, ``query``/
    ``column``/``range``/``compare_offset``/``min_baseline``/``params`` for a check."""
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: a rule is a mapping (name, metric or query, ...)")
    data = dict(entry)
    if "metric" in data:
        selector = {k: data.pop(k) for k in ("metric", "fn", "match", "agg", "q") if k in data}
        over = data.pop("over", None)
        if isinstance(over, str):
            over = [over]
        condition: dict[str, Any] = {"terms": [selector]}
        if over is not None:
            condition["over"] = [
                o if isinstance(o, dict) else {"metric": o, "fn": selector.get("fn", "value")}
                for o in over
            ]
        for key in ("op", "threshold"):
            if key in data:
                condition[key] = data.pop(key)
        conditions = [condition]
        if "min_samples" in data:
            conditions.append(
                {
                    "terms": condition.get("over") or [selector],
                    "op": ">=",
                    "threshold": data.pop("min_samples"),
                }
            )
        data["conditions"] = conditions
    elif "query" in data:
        data["check"] = {
            k: data.pop(k)
            for k in (
                "query",
                "column",
                "range",
                "compare_offset",
                "min_baseline",
                "params",
                "op",
                "threshold",
            )
            if k in data
        }
    elif "conditions" not in data and "check" not in data:
        raise ConfigError(
            f"{where}: a rule needs a metric or a query (either conditions or a check)"
        )
    data.setdefault("summary", f"user rule {data.get('name')}")
    try:
        return Rule.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(x) for x in first["loc"])
        raise ConfigError(f"{where}: {loc}: {first['msg']}") from None


def load_rules(path: Path) -> list[Rule]:
    """The user rules of YAML file ``path``: a list of rules, or a mapping with a
    ``rules`` list (docs/monitoring.md shows the format). Raises
    :class:`~playpulse.errors.ConfigError` naming the file and the rule when the file
    cannot be read or a rule is wrong, or a name repeats."""
    try:
        import yaml
    except ImportError:  # pragma: no cover - pyyaml ships with the dev and aws extras
        raise ConfigError(f"reading {path} needs PyYAML (pip install pyyaml)") from None
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the alert rules {path}: {exc.strerror or exc}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not YAML: {' '.join(str(exc).split())}") from None
    if isinstance(doc, dict):
        doc = doc.get("rules")
    if doc is None:
        return []
    if not isinstance(doc, list):
        raise ConfigError(f"{path}: expected a list of rules (or rules: [...])")
    rules = [_user_rule(entry, f"{path} rule {i + 1}") for i, entry in enumerate(doc)]
    _unique(rules, str(path))
    return rules


def _unique(rules: Sequence[Rule], where: str) -> None:
    seen: set[str] = set()
    for rule in rules:
        if rule.name in seen:
            raise ConfigError(f"{where}: the alert name {rule.name} is used twice")
        seen.add(rule.name)


def active_rules(settings: Settings) -> list[Rule]:
    """The rules ``playpulse up`` evaluates with ``settings``: the built-in ones (with
    ``alert_for_s`` applied, export-only ones left out) and those of ``alert_rules``.
    Raises :class:`~playpulse.errors.ConfigError` for a bad rules file or a user rule
    named like a built-in one."""
    rules = [
        r.tuned(settings.alert_for_s, settings.alert_interval_s)
        for r in builtin_rules()
        if not r.export_only
    ]
    if settings.alert_rules is not None:
        rules += load_rules(settings.alert_rules)
    _unique(rules, str(settings.alert_rules or "the built-in rules"))
    return rules
