"""The real-time store the settings name (``store_url``)."""

from __future__ import annotations

from urllib.parse import urlsplit

from playpulse.config import Settings
from playpulse.store.base import RealtimeStore
from playpulse.store.sqlite import SQLiteStore


def _dynamodb_table(settings: Settings) -> str | None:
    """The table of a ``dynamodb://TABLE`` store URL, else ``None``."""
    if not settings.store_url:
        return None
    parts = urlsplit(settings.store_url)
    if parts.scheme != "dynamodb":
        return None
    return (parts.netloc + parts.path).strip("/")


def open_store(settings: Settings) -> RealtimeStore:
    """The real-time store of ``settings``: ``store_url`` (``sqlite:///path`` or
    ``dynamodb://TABLE``, an existing table in the environment's region and endpoint),
    else the embedded SQLite file in ``settings.data_dir``, created if missing. The caller
    closes it. Raises :class:`~playpulse.errors.StoreError` when it cannot be opened (for
    DynamoDB: the table is missing, naming it)."""
    table = _dynamodb_table(settings)
    if table is not None:
        # Imported here: boto3 loads only for a DynamoDB store.
        from playpulse.store.dynamodb import DynamoDBStore

        return DynamoDBStore(table)
    return SQLiteStore(settings.store_path)


def store_exists(settings: Settings) -> bool:
    """Whether the store of ``settings`` holds anything yet (its file exists): readers
    check this to answer "nothing yet" without creating a store. For ``dynamodb://``:
    whether the table exists (a store that cannot be reached counts as existing, so that
    readers then report why it cannot be opened)."""
    table = _dynamodb_table(settings)
    if table is not None:
        from playpulse.aws.clients import client

        try:
            client("dynamodb").describe_table(TableName=table)
        except Exception as exc:
            code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
            return code != "ResourceNotFoundException"
        return True
    return settings.store_path.exists()
