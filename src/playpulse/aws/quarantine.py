"""Where the Lambda functions keep rejected events: S3, the log, and the (ephemeral)
SQLite quarantine in ``/tmp`` (see :mod:`playpulse.aws.collector_handler` for the
layout). Both handlers use it: the collector for events it rejects, the processor for
stream records it cannot decode.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import tempfile
import threading
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from playpulse.config import Settings
from playpulse.errors import ConfigError, QuarantineError
from playpulse.quarantine.store import (
    DEFAULT_MAX_BYTES,
    DEFAULT_RETENTION,
    QuarantineStore,
    Rejection,
)

log = logging.getLogger("playpulse.aws.quarantine")

#: Where rejected events are kept durably: ``s3://BUCKET/PREFIX`` (see the module
#: docstring for the default).
QUARANTINE_URL_ENV = "PLAYPULSE_QUARANTINE_URL"
#: The fields of one line of a quarantine object in S3.
S3_LINE_FIELDS = (
    "received_at",  # ISO 8601, UTC
    "source",  # "collector"
    "reason",  # the reason code, as in the HTTP answer's errors
    "errors",  # [{"loc", "msg"}]
    "event_id",  # str | None
    "origin",  # str | None
    "raw_bytes",  # int: size of raw (already cut to QUARANTINE_RAW_BYTES by the collector)
    "raw_base64",  # the raw bytes as received, base64
)


def lambda_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """The settings from ``PLAYPULSE_*`` variables, with ``data_dir`` defaulting to
    ``<tmp>/playpulse`` (a Lambda's only writable folder) instead of ``./.playpulse``.

    ``environ`` defaults to ``os.environ`` (settings are read from the process
    environment either way; ``environ`` only decides whether ``PLAYPULSE_DATA_DIR`` is
    set). Raises :class:`~playpulse.errors.ConfigError` for an invalid setting.
    """
    env = os.environ if environ is None else environ
    try:
        settings = Settings()
    except ValueError as exc:  # pydantic's ValidationError
        raise ConfigError(f"collector handler: invalid PLAYPULSE_* setting: {exc}") from exc
    if "PLAYPULSE_DATA_DIR" not in env:
        settings = settings.model_copy(
            update={"data_dir": Path(tempfile.gettempdir()) / "playpulse"}
        )
    return settings


def quarantine_url(settings: Settings, environ: Mapping[str, str] | None = None) -> str | None:
    """Where rejections are kept durably, as ``s3://BUCKET/PREFIX`` (no trailing slash),
    or None (log and local file only): ``PLAYPULSE_QUARANTINE_URL``, else beside an
    ``s3://`` lake (see the module docstring). Raises
    :class:`~playpulse.errors.ConfigError` when ``PLAYPULSE_QUARANTINE_URL`` is not an
    ``s3://BUCKET[/PREFIX]`` URL."""
    env = os.environ if environ is None else environ
    explicit = env.get(QUARANTINE_URL_ENV, "").strip()
    if explicit:
        parts = urlsplit(explicit)
        if parts.scheme != "s3" or not parts.netloc:
            raise ConfigError(
                f"{QUARANTINE_URL_ENV}={explicit!r} is not an s3://BUCKET[/PREFIX] URL"
            )
        return explicit.rstrip("/")
    lake = settings.lake_url
    if not lake or urlsplit(lake).scheme != "s3":
        return None
    parts = urlsplit(lake)
    prefix = parts.path.strip("/")
    if not prefix:
        return f"s3://{parts.netloc}/_quarantine"
    parent = prefix.rpartition("/")[0]
    return f"s3://{parts.netloc}/{parent + '/' if parent else ''}quarantine"


def _rejection_record(rejection: Rejection, *, with_raw: bool) -> dict[str, Any]:
    record: dict[str, Any] = {
        "received_at": rejection.received_at.astimezone(UTC).isoformat(),
        "source": rejection.source,
        "reason": rejection.reason,
        "errors": rejection.errors,
        "event_id": rejection.event_id,
        "origin": rejection.origin,
        "raw_bytes": len(rejection.raw),
    }
    if with_raw:
        record["raw_base64"] = base64.b64encode(rejection.raw).decode("ascii")
    return record


#: Characters left out of the ``source=`` folder of a quarantine object's key.
_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


class S3QuarantineSink:
    """Writes rejections to ``s3://BUCKET/PREFIX``: one NDJSON object per :meth:`put`
    (see the module docstring for keys and fields). The S3 client is made on first use
    through :func:`playpulse.aws.clients.client` (``AWS_ENDPOINT_URL``, the credential
    chain)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ConfigError(f"quarantine location {url!r} is not an s3://BUCKET[/PREFIX] URL")
        self.url = url.rstrip("/")
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        self._client: Any = None
        self._lock = threading.Lock()

    def key_for(self, received_at: datetime, source: str = "collector") -> str:
        """A new object key for rejections from ``source`` received at ``received_at``
        (UTC-aware)."""
        at = received_at.astimezone(UTC)
        folder = f"source={_KEY_UNSAFE.sub('_', source) or 'unknown'}/date={at:%Y-%m-%d}"
        name = f"{folder}/{at:%H%M%S}-{uuid.uuid4().hex}.ndjson"
        return f"{self.prefix}/{name}" if self.prefix else name

    def put(self, rejections: list[Rejection]) -> str:
        """Store ``rejections`` (at least one) as one new object; returns its key. Raises
        :class:`~playpulse.errors.QuarantineError` when S3 does not store it."""
        from botocore.exceptions import BotoCoreError, ClientError

        from playpulse.aws.clients import client

        lines = [
            json.dumps(_rejection_record(r, with_raw=True), separators=(",", ":"))
            for r in rejections
        ]
        key = self.key_for(rejections[0].received_at, rejections[0].source)
        try:
            with self._lock:
                if self._client is None:
                    # Few tries: a request waits for them (the function has a timeout).
                    self._client = client("s3", max_attempts=3)
                s3 = self._client
            s3.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=("\n".join(lines) + "\n").encode(),
                ContentType="application/x-ndjson",
            )
        except (BotoCoreError, ClientError) as exc:
            raise QuarantineError(
                f"storing {len(rejections)} rejected events in s3://{self.bucket}/{key} "
                f"failed: {exc}"
            ) from exc
        return key


class LambdaQuarantine(QuarantineStore):
    """The collector's quarantine in a Lambda: the SQLite quarantine in the (ephemeral)
    data dir, plus every rejection logged and, with a ``sink``, stored in S3 first.

    :meth:`add` raises :class:`~playpulse.errors.QuarantineError` when the sink does not
    store the rejections (the collector then answers 503 and appends nothing); with a
    sink, a failure of the local file is logged, not raised (the rejections are stored).
    Without a sink the local file is the only store besides the log, and its failure
    raises as in :class:`QuarantineStore`.
    """

    def __init__(
        self,
        path: str | Path,
        sink: S3QuarantineSink | None = None,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        retention: timedelta = DEFAULT_RETENTION,
    ) -> None:
        super().__init__(path, max_bytes=max_bytes, retention=retention)
        self.sink = sink

    @classmethod
    def for_lambda(cls, settings: Settings, sink: S3QuarantineSink | None) -> LambdaQuarantine:
        """The quarantine of ``settings.data_dir`` with its bounds, and ``sink``."""
        return cls(
            settings.quarantine_path,
            sink,
            max_bytes=settings.quarantine_max_bytes,
            retention=settings.quarantine_retention,
        )

    def add(self, rejections: Iterable[Rejection]) -> list[int]:
        """Log, ship to the sink, then store locally (see the class docstring). Returns
        the local entry ids (empty when the local file failed after the sink stored)."""
        batch = list(rejections)
        if not batch:
            return []
        sink = self.sink
        stored_in = f"s3://{sink.bucket}/{sink.put(batch)}" if sink is not None else None
        where = stored_in or "the log only"
        for rejection in batch:
            record = _rejection_record(rejection, with_raw=sink is None)
            log.warning("rejected event quarantined (%s): %s", where, json.dumps(record))
        if sink is None:
            return super().add(batch)
        try:
            return super().add(batch)
        except (QuarantineError, OSError) as exc:
            log.error("local quarantine copy failed (the rejections are in S3): %s", exc)
            return []
