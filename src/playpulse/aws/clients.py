"""boto3 clients for every AWS backend, made one way.

Every client honours the standard configuration: the credential chain (environment,
shared files, the Lambda or instance role), ``AWS_REGION`` / ``AWS_DEFAULT_REGION`` and
``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_<SERVICE>``), which boto3 reads itself
(botocore >= 1.31); and retries throttling and transient errors with the SDK's adaptive
mode. Nothing here logs or formats a credential.
"""

from __future__ import annotations

import os
from typing import Any

from playpulse.errors import ConfigError

DEFAULT_REGION = "us-east-1"


def region() -> str:
    """The region from ``AWS_REGION`` / ``AWS_DEFAULT_REGION``, else ``us-east-1``."""
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION


def client(service: str, *, max_attempts: int = 8, **kwargs: Any) -> Any:
    """A boto3 client for ``service`` (``"kinesis"``, ``"dynamodb"``, ``"s3"`` ...) with
    adaptive retries (up to ``max_attempts`` tries of a throttled or failed call) and the
    environment's region, endpoint and credentials. Extra ``kwargs`` go to
    ``boto3.client``.

    Raises :class:`~playpulse.errors.ConfigError` when boto3 is not installed.
    """
    try:
        import boto3
        from botocore.config import Config
    except ImportError as exc:  # pragma: no cover - the aws extra is missing
        raise ConfigError(
            f"{service}: the AWS backends need boto3: pip install 'playpulse[aws]'"
        ) from exc
    config = Config(
        retries={"max_attempts": max_attempts, "mode": "adaptive"},
        connect_timeout=5,
        read_timeout=30,
    )
    return boto3.client(service, region_name=region(), config=config, **kwargs)


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ``ClientError`` (``"ThrottlingException"``,
    ``"ResourceNotFoundException"`` ...); ``""`` for any other exception."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""
