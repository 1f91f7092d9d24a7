"""Typed settings, read from arguments, then ``PLAYPULSE_*`` environment variables.

Every setting has an environment variable named ``PLAYPULSE_`` + its upper-case name
(``PLAYPULSE_DATA_DIR``, ``PLAYPULSE_WRITE_KEYS`` as a comma-separated list).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Keys = Annotated[list[SecretStr], NoDecode]


#: The URL schemes each backend setting takes: the embedded defaults (SQLite files, a lake
#: folder) and the distributed backends (Kafka; on AWS: Kinesis, DynamoDB, S3).
URL_SCHEMES = {
    "stream_url": ("sqlite", "kafka", "kinesis"),
    "store_url": ("sqlite", "dynamodb"),
    "lake_url": ("file", "s3"),
}


def url_path(url: str) -> Path:
    """The file path of a ``sqlite://`` or ``file://`` URL: ``sqlite:///abs/store.db``
    (absolute), ``sqlite://store.db`` (relative to the working directory). Raises
    :class:`ValueError` when it names no path."""
    parts = urlsplit(url)
    path = parts.netloc + parts.path
    if not path:
        raise ValueError(f"{url!r} names no path (e.g. sqlite:///var/lib/playpulse/store.db)")
    return Path(path)


def _sqlite_path(name: str, url: str | None, default: Path) -> Path:
    if url is None:
        return default
    if urlsplit(url).scheme != "sqlite":
        from playpulse.errors import ConfigError

        raise ConfigError(f"{name} {url} is not a SQLite file: open it with its factory")
    return url_path(url)


def _check_url(name: str, value: object) -> object:
    if value is None or not isinstance(value, str):
        return value
    scheme = urlsplit(value).scheme
    known = URL_SCHEMES[name]
    if scheme not in known:
        raise ValueError(
            f"scheme {scheme or '(none)'!r} is not supported; known: "
            + ", ".join(f"{k}://" for k in known)
        )
    url_path(value)
    return value


def _split_keys(value: object) -> object:
    if isinstance(value, str):
        return [k.strip() for k in value.split(",") if k.strip()]
    return value


class Settings(BaseSettings):
    """Settings for every playpulse process.

    - ``data_dir``: where the embedded stream (``stream.db``), the quarantine
      (``quarantine.db``), the real-time store (``store.db``) and the Parquet lake
      (``lake/``) live; default ``./.playpulse``.
    - ``write_keys``: keys accepted in ``Authorization: Bearer <key>`` on POST
      /v1/events; empty means writes are open to whoever reaches the bound address.
    - ``read_keys``: the same for the read API.
    - ``num_partitions``: partitions of the embedded stream (fixed at creation).
    - ``retention_days``: how long the stream keeps records (never those a consumer group
      has not committed, unless over ``stream_max_bytes``).
    - ``stream_max_bytes``: bytes of records past which the stream's retention deletes the
      oldest even if uncommitted, counting them as lost per group (``status``,
      ``/metrics``); unset (default) means no limit.
    - ``quarantine_max_bytes``: bytes of quarantined entries (raw payload, errors, fields)
      past which the oldest are dropped and counted per reason; default 256 MiB.
    - ``quarantine_retention_days``: entries older than this are dropped and counted;
      default 30.
    - ``stream_synchronous``: ``NORMAL`` survives a process crash, ``FULL`` power loss.
    - ``max_body_bytes``, ``max_events_per_request``: request limits (413 above them).
    - ``max_pending_events``: events waiting for the stream across requests before the
      collector answers 429 (backpressure).
    - ``request_read_timeout_s``: time a request body may take to arrive, from the end of
      its headers; past it the collector answers 408 and closes the connection.
    - ``request_drain_bytes``: how much of a body that is refused before it is read (413,
      401) the collector reads and discards, within ``request_read_timeout_s``, so that
      clients that send the whole body before reading get the answer, not a reset.
    - ``keep_alive_timeout_s``: an idle keep-alive connection is closed after this long.
    - ``max_connections``: concurrent connections plus requests in flight per collector
      process; past it new requests get 503 (uvicorn's ``limit_concurrency``).
    - ``processor_restart_delay_s``: how long ``playpulse up`` waits before it starts a
      dead processor process again; doubled (up to 30 s) while it keeps dying within a
      minute of its start.
    - ``processors``: processor processes ``playpulse up`` runs, as members of one
      consumer group sharing the stream's partitions (a dead one's partitions move to
      the others within seconds, and back when it is started again); results equal one
      processor's. More processors than partitions leave some idle.
    - ``processor_stall_s``: ``/readyz`` reports the processor not ready when it has made
      no progress (no committed batch and no caught-up poll) for this many seconds.
    - ``stream_url``, ``store_url``, ``lake_url``: where the stream, the real-time store
      and the lake are, as URLs (``sqlite:///path/stream.db`` or
      ``kafka://HOST:PORT[,HOST:PORT...]/TOPIC``, ``sqlite:///path/store.db``,
      ``file:///path/lake`` or ``s3://BUCKET/PREFIX``); unset (default): the embedded
      files in ``data_dir``. Every component opens them through its factory
      (``open_stream``, ``open_store``, ``open_lake``). An unknown scheme is refused at
      startup.
    - ``alert_interval_s``: how often ``playpulse up`` evaluates the alert rules
      (docs/monitoring.md).
    - ``alert_for_s``: when set, replaces every built-in rule's ``for`` duration (and its
      look-back window, at least two evaluations long): for tests and impatient operators.
    - ``alert_rules``: a YAML file of user alert rules (``--alert-rules FILE``).
    - ``alert_webhooks``: URLs that get Alertmanager-webhook notifications (comma-separated
      in ``PLAYPULSE_ALERT_WEBHOOKS``; ``--alert-webhook URL``).
    - ``pseudonymize_users``: the collector and importers store user ids (and anonymous
      ids) as keyed pseudonyms (``u_`` / ``a_`` + HMAC-SHA256 hex, the key kept in
      ``<data dir>/privacy/secret``), never in clear (docs/privacy.md).
    - ``quarantine_raw_retention_days``: quarantined raw payloads older than this are
      blanked (the entry, its reason and errors stay until ``quarantine_retention_days``);
      default 7.
    - ``session_max_age_s``: how long a dashboard session cookie (``POST /login``) is
      accepted, seconds; default 12 h.
    - ``metrics_token``: a token (``Authorization: Bearer``) that opens ``GET /metrics``
      only; when set, or when read keys are, ``/metrics`` is no longer open.
    - ``login_failures_per_minute``: wrong read keys a client address may try per minute
      (``/login``, ``?key=``, Bearer) before its keys are refused with 429.
    """

    model_config = SettingsConfigDict(env_prefix="PLAYPULSE_", extra="ignore")

    data_dir: Path = Path(".playpulse")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    write_keys: Keys = Field(default_factory=list)
    read_keys: Keys = Field(default_factory=list)
    num_partitions: int = Field(8, ge=1, le=1024)
    retention_days: float = Field(7.0, gt=0)
    stream_max_bytes: int | None = Field(None, ge=0)
    quarantine_max_bytes: int = Field(256 * 1024 * 1024, ge=1024 * 1024)
    quarantine_retention_days: float = Field(30.0, gt=0)
    stream_synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    max_body_bytes: int = Field(5 * 1024 * 1024, ge=1024)
    max_events_per_request: int = Field(1000, ge=1)
    max_pending_events: int = Field(50_000, ge=1)
    request_read_timeout_s: float = Field(30.0, gt=0)
    request_drain_bytes: int = Field(16 * 1024 * 1024, ge=0)
    keep_alive_timeout_s: int = Field(5, ge=1)
    max_connections: int = Field(1000, ge=1)
    workers: int = Field(1, ge=1, le=64)
    processors: int = Field(1, ge=1, le=64)
    processor_restart_delay_s: float = Field(1.0, gt=0, le=300)
    processor_stall_s: float = Field(60.0, gt=0)
    stream_url: str | None = None
    store_url: str | None = None
    lake_url: str | None = None
    alert_interval_s: float = Field(15.0, gt=0)
    alert_for_s: float | None = Field(None, ge=0)
    alert_rules: Path | None = None
    alert_webhooks: Annotated[list[str], NoDecode] = Field(default_factory=list)
    pseudonymize_users: bool = False
    quarantine_raw_retention_days: float = Field(7.0, gt=0)
    session_max_age_s: int = Field(12 * 3600, ge=60)
    metrics_token: SecretStr | None = None
    login_failures_per_minute: int = Field(10, ge=1)

    _split_write = field_validator("write_keys", "read_keys", mode="before")(_split_keys)
    _split_hooks = field_validator("alert_webhooks", mode="before")(_split_keys)

    @field_validator("stream_url", "store_url", "lake_url")
    @classmethod
    def _known_scheme(cls, value: str | None, info: ValidationInfo) -> str | None:
        _check_url(str(info.field_name), value)
        return value

    def to_env(self) -> dict[str, str]:
        """These settings as ``PLAYPULSE_*`` variables (for worker processes)."""
        env = {}
        for name, value in self.model_dump().items():
            if value is None:  # unset: the worker's default is the same
                continue
            if name in ("write_keys", "read_keys"):
                value = ",".join(k.get_secret_value() for k in getattr(self, name))
            elif name == "alert_webhooks":
                value = ",".join(self.alert_webhooks)
            elif name == "metrics_token" and self.metrics_token is not None:
                value = self.metrics_token.get_secret_value()
            env[f"PLAYPULSE_{name.upper()}"] = str(value)
        return env

    @property
    def retention(self) -> timedelta:
        """``retention_days`` as a duration."""
        return timedelta(days=self.retention_days)

    @property
    def quarantine_retention(self) -> timedelta:
        """``quarantine_retention_days`` as a duration."""
        return timedelta(days=self.quarantine_retention_days)

    @property
    def stream_path(self) -> Path:
        """The stream's SQLite file: ``stream_url``'s, else ``stream.db`` in the data dir.
        Raises :class:`~playpulse.errors.ConfigError` for a stream that is not a SQLite
        file (``kafka://``, ``kinesis://``)."""
        return _sqlite_path("stream_url", self.stream_url, self.data_dir / "stream.db")

    @property
    def store_path(self) -> Path:
        """The real-time store's SQLite file: ``store_url``'s, else ``store.db`` in the
        data dir. Raises :class:`~playpulse.errors.ConfigError` for a store that is not a
        SQLite file (``dynamodb://``)."""
        return _sqlite_path("store_url", self.store_url, self.data_dir / "store.db")

    @property
    def store_is_file(self) -> bool:
        """Whether the real-time store is a SQLite file (the embedded default)."""
        return self.store_url is None or urlsplit(self.store_url).scheme == "sqlite"

    @property
    def lake_path(self) -> Path:
        """The Parquet lake's local root folder: ``lake_url``'s (``file://``), else
        ``lake/`` in the data dir. Raises :class:`~playpulse.errors.ConfigError` for an
        ``s3://`` lake, which has no folder (open it with
        :func:`playpulse.lake.factory.open_lake`; see :attr:`lake_location`)."""
        if self.lake_url and urlsplit(self.lake_url).scheme == "s3":
            from playpulse.errors import ConfigError

            raise ConfigError(
                f"lake_url {self.lake_url} is on S3, not a local folder: open it with open_lake"
            )
        return url_path(self.lake_url) if self.lake_url else self.data_dir / "lake"

    @property
    def lake_location(self) -> str:
        """Where the lake is: ``s3://BUCKET/PREFIX`` (no trailing slash) for an ``s3://``
        ``lake_url``, else the local root folder (:attr:`lake_path`) as a path."""
        if self.lake_url and urlsplit(self.lake_url).scheme == "s3":
            return self.lake_url.rstrip("/")
        return str(self.lake_path)

    @property
    def quarantine_path(self) -> Path:
        """The quarantine's SQLite file."""
        return self.data_dir / "quarantine.db"
