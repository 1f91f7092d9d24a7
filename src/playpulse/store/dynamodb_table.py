"""The DynamoDB store's table: its definition (:func:`table_properties`) and creation
(:func:`create_table`), for :class:`~playpulse.store.dynamodb.DynamoDBStore`, tests and
``playpulse aws deploy``.

The table (:func:`create_table`): string keys ``pk`` (HASH) / ``sk`` (RANGE), on-demand
billing, TTL on ``expires_at`` (epoch seconds), and two global secondary indexes:

- ``by_sk`` (``_isk`` HASH, ``_ipk`` RANGE, all attributes): sparse, and no item this
  version writes carries ``_isk`` / ``_ipk`` any more, so it stays empty and costs
  nothing (every counter update written to it doubled the counters' write units;
  :meth:`~playpulse.store.dynamodb.DynamoDBStore.scan` reads the key registry instead).
  It is still declared so that the table matches the stack's template; it can go with
  the template's.
- ``by_vendor`` (``vendor_pk`` HASH, ``sk`` RANGE): the shop's ``VENDOR#<id>`` /
  ``METRICS#<date>`` items under their vendor. ``PRODUCT#<id>`` items are not in it: a
  store batch names no product's vendor (the processor would have to pass it).
"""

from __future__ import annotations

from typing import Any

from playpulse.aws.clients import error_code
from playpulse.errors import StoreError
from playpulse.store.dynamodb_calls import default_client, error_reason
from playpulse.store.dynamodb_items import LAYOUT_SK, META_PK, VENDOR_KEY

#: The store table's global secondary indexes.
INDEXES = ("by_sk", "by_vendor")


def table_properties() -> dict[str, Any]:
    """The store table's key schema, attribute definitions, billing mode and GSIs, in the
    shape both ``CreateTable`` and a CloudFormation ``AWS::DynamoDB::Table`` take (add
    ``TimeToLiveSpecification``: attribute ``expires_at``). The ``by_sk`` index is
    sparse on ``_isk`` / ``_ipk``, which no item carries any more (the module
    docstring): it stays empty."""
    strings = ["pk", "sk", "_isk", "_ipk", VENDOR_KEY]
    return {
        "AttributeDefinitions": [{"AttributeName": n, "AttributeType": "S"} for n in strings],
        "KeySchema": [
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        "BillingMode": "PAY_PER_REQUEST",
        "GlobalSecondaryIndexes": [
            {
                "IndexName": "by_sk",
                "KeySchema": [
                    {"AttributeName": "_isk", "KeyType": "HASH"},
                    {"AttributeName": "_ipk", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            },
            {
                "IndexName": "by_vendor",
                "KeySchema": [
                    {"AttributeName": VENDOR_KEY, "KeyType": "HASH"},
                    {"AttributeName": "sk", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            },
        ],
    }


#: The TTL attribute of the store table (epoch seconds).
TTL_ATTRIBUTE = "expires_at"


def create_table(
    table: str,
    *,
    client: Any | None = None,
    wait: bool = True,
    state_shards: int | None = None,
) -> None:
    """Create the store's table ``table`` (:func:`table_properties`) with TTL on
    ``expires_at``; nothing if it exists. For tests and ``playpulse aws deploy``.
    ``state_shards`` (if given) is written to the table's META LAYOUT item: how many
    partition keys a batch's state pack items spread over (each takes about 1,000 write
    units a second). Without it, or on a table made elsewhere (CloudFormation), stores
    use 8. The count of a table cannot change (readers find pack items through commit
    items, so any count reads, but one table keeps one layout).

    Raises :class:`StoreError` when DynamoDB refuses.
    """
    ddb = client if client is not None else default_client()
    if state_shards is not None and not 1 <= state_shards <= 1000:
        raise StoreError(f"state_shards must be within 1..1000, got {state_shards}")
    try:
        ddb.create_table(TableName=table, **table_properties())
    except Exception as exc:
        if error_code(exc) != "ResourceInUseException":
            raise StoreError(
                f"creating DynamoDB table {table!r} failed: {error_reason(exc)}"
            ) from exc
    try:
        if wait:
            ddb.get_waiter("table_exists").wait(
                TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 120}
            )
        ddb.update_time_to_live(
            TableName=table,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
        )
    except Exception as exc:
        if "already enabled" not in str(exc).lower():
            raise StoreError(
                f"enabling TTL on DynamoDB table {table!r} failed: {error_reason(exc)}"
            ) from exc
    if state_shards is not None:
        _write_layout(ddb, table, state_shards)


def _write_layout(ddb: Any, table: str, state_shards: int) -> None:
    """Write the META LAYOUT item once; StoreError if the table has another layout."""
    key = {"pk": {"S": META_PK}, "sk": {"S": LAYOUT_SK}}
    try:
        ddb.put_item(
            TableName=table,
            Item={**key, "state_shards": {"N": str(state_shards)}},
            ConditionExpression="attribute_not_exists(pk)",
        )
        return
    except Exception as exc:
        if error_code(exc) != "ConditionalCheckFailedException":
            raise StoreError(
                f"writing the layout of DynamoDB table {table!r} failed: {error_reason(exc)}"
            ) from exc
    held = ddb.get_item(TableName=table, Key=key, ConsistentRead=True).get("Item", {})
    if int(held.get("state_shards", {}).get("N", -1)) != state_shards:
        raise StoreError(
            f"DynamoDB table {table!r} keeps its states in "
            f"{held.get('state_shards', {}).get('N')} shards, not {state_shards}: "
            "the layout of a table cannot change"
        )
