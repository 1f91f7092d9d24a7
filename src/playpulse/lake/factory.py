"""The lake the settings name (``lake_url``): a local folder or an S3 prefix.

``lake_url = s3://BUCKET/PREFIX`` puts the lake on S3, reached through pyarrow's
``S3FileSystem``: the endpoint from ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` when
set (moto, MinIO, LocalStack), the region from ``AWS_REGION`` / ``AWS_DEFAULT_REGION``,
credentials from the standard chain (environment, shared files, the Lambda or instance
role), which the AWS SDK reads itself: nothing here reads, formats or logs a key.
Otherwise (``file://`` or unset) the lake is the local folder ``Settings.lake_path``.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow.fs as pafs

from playpulse.config import Settings
from playpulse.errors import ConfigError
from playpulse.lake.schema import SCHEMAS
from playpulse.lake.writer import LakeWriter


def s3_root(url: str) -> Path:
    """The ``BUCKET/PREFIX`` root (pyarrow's S3 path form) of ``s3://BUCKET/PREFIX``.
    Raises :class:`ConfigError` when the URL names no bucket."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ConfigError(f"lake_url {url!r} names no bucket (e.g. s3://my-bucket/lake)")
    prefix = parts.path.strip("/")
    return Path(parts.netloc, prefix) if prefix else Path(parts.netloc)


def s3_filesystem() -> pafs.FileSystem:
    """A pyarrow ``S3FileSystem`` configured from the environment (see the module
    docstring); one per endpoint and region in a process."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    return _s3(endpoint or None, region or None)


@functools.lru_cache(maxsize=8)
def _s3(endpoint: str | None, region: str | None) -> pafs.FileSystem:
    options: dict[str, object] = {
        # Small files go up in one PutObject at close (no multipart upload): atomic, and
        # one request per lake file.
        "allow_delayed_open": True,
    }
    if endpoint:
        options["endpoint_override"] = endpoint
    if region:
        options["region"] = region
    try:
        return pafs.S3FileSystem(**options)
    except TypeError:  # a pyarrow without allow_delayed_open: every write is multipart
        del options["allow_delayed_open"]
        return pafs.S3FileSystem(**options)


def is_s3(settings: Settings) -> bool:
    """Whether the lake of ``settings`` is on S3 (``lake_url = s3://...``)."""
    return bool(settings.lake_url) and urlsplit(settings.lake_url or "").scheme == "s3"


def open_lake(settings: Settings) -> LakeWriter:
    """The lake of ``settings`` as a :class:`LakeWriter` of every lake table: on S3 for
    ``lake_url = s3://BUCKET/PREFIX`` (the bucket must exist; nothing is written until
    a write), else the local folder :attr:`Settings.lake_path` (created if missing).
    Raises :class:`~playpulse.errors.LakeError` when a local folder cannot be created,
    :class:`ConfigError` for an S3 URL without a bucket."""
    if is_s3(settings):
        return LakeWriter(s3_root(settings.lake_url or ""), SCHEMAS, filesystem=s3_filesystem())
    return LakeWriter(settings.lake_path, SCHEMAS)


def lake_exists(settings: Settings) -> bool:
    """Whether the lake of ``settings`` may hold anything: its local folder exists, or
    its S3 bucket does. Readers check this to answer "nothing yet" without creating a
    folder. Raises :class:`~playpulse.errors.LakeError` when S3 cannot be reached."""
    if is_s3(settings):
        return open_lake(settings).exists()
    return settings.lake_path.exists()


def open_existing_lake(settings: Settings) -> LakeWriter | None:
    """:func:`open_lake` when :func:`lake_exists`, else ``None`` (creates nothing)."""
    if not lake_exists(settings):
        return None
    return open_lake(settings)
