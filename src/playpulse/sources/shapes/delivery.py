"""Unwrap the records of a Kinesis or Firehose delivery into the payloads they carry.

A bridge may forward what AWS delivered as is; each of these is recognized (one level
deep) and replaced by the payloads in its records' base64 ``data``:

- a Firehose HTTP endpoint delivery, or a Firehose transformation event:
  ``{"requestId" | "invocationId": ..., "records": [{"data": "<base64>", ...}, ...]}``;
- a Lambda Kinesis event: ``{"Records": [{"kinesis": {"data": "<base64>", ...}}, ...]}``;
- Kinesis records (``GetRecords``/``PutRecords`` JSON): ``{"Records": [{"Data": ...}]}``;
- one record on its own: ``{"data": ...}``, ``{"Data": ..., "PartitionKey": ...}`` or
  ``{"kinesis": {"data": ...}}``, as an element of a JSON array or NDJSON line.

A record's data (gzip-compressed or not) holds one payload, a JSON array of payloads or
NDJSON (Firehose concatenates records), split as the collector splits a body.
Anything else is a payload itself.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from playpulse.collector.body import RawEvent, gunzip, split_events
from playpulse.errors import BodyError
from playpulse.sources.shapes.common import ShapeError

#: Keys of a bare Kinesis or Firehose record (besides its data).
RECORD_KEYS = frozenset(
    {
        "data",
        "Data",
        "recordId",
        "approximateArrivalTimestamp",
        "ApproximateArrivalTimestamp",
        "SequenceNumber",
        "sequenceNumber",
        "PartitionKey",
        "partitionKey",
        "EncryptionType",
        "kinesisRecordMetadata",
        "kinesisSchemaVersion",
        "ExplicitHashKey",
    }
)
_LAMBDA_KEYS = frozenset(
    {"kinesis", "eventSource", "eventVersion", "eventID", "eventName", "invokeIdentityArn"}
)
_LAMBDA_KEYS |= {"awsRegion", "eventSourceARN"}
_GZIP = b"\x1f\x8b"
#: Keys of a delivery's envelope around its records (Firehose HTTP endpoint and
#: transformation events, Lambda Kinesis events).
_ENVELOPE_KEYS = frozenset(
    {
        "requestId",
        "timestamp",
        "invocationId",
        "deliveryStreamArn",
        "sourceKinesisStreamArn",
        "region",
        "records",
        "Records",
    }
)


@dataclass(frozen=True, slots=True)
class Payload:
    """One payload to map: its JSON as received (decoded from base64 when it came in a
    record), the decoded value, and ``error`` when it could not be read (then ``value``
    is None). ``where`` names a record's place (``records[2]``), empty otherwise."""

    raw: bytes
    value: Any
    error: ShapeError | None = None
    where: str = ""


def _decode(raw: bytes) -> Any:
    return msgspec.json.decode(raw)


def unwrap(
    shape: str, raws: Sequence[RawEvent], *, max_payloads: int, max_bytes: int
) -> list[Payload]:
    """The payloads of ``raws`` (the events of one body, see
    :func:`~playpulse.collector.body.split_events`), delivery records unwrapped (see the
    module docstring), in order. A payload or record that cannot be read is a
    :class:`Payload` with its ``error`` (rejected on its own). Raises
    :class:`~playpulse.errors.BodyError` 413 when the records hold more than
    ``max_payloads`` payloads or inflate to more than ``max_bytes``."""
    out: list[Payload] = []
    for item in raws:
        raw = bytes(item)
        try:
            value = _decode(raw)
        except (msgspec.DecodeError, RecursionError) as exc:
            out.append(Payload(raw, None, ShapeError(shape, "", f"not valid JSON: {exc}")))
            continue
        records = records_of(value)
        if records is None:
            out.append(Payload(raw, value))
        else:
            for n, record in enumerate(records):
                out.extend(
                    _record_payloads(shape, record, f"records[{n}]", max_payloads, max_bytes)
                )
        if len(out) > max_payloads:
            raise BodyError(
                f"the delivery holds more than {max_payloads} payloads; the limit is "
                f"{max_payloads} a request",
                413,
                "too_many_events",
            )
    return out


def records_of(value: Any) -> list[Any] | None:
    """The records of a delivery ``value`` (one record alone is a list of one), or
    ``None`` when ``value`` is not a delivery."""
    if not isinstance(value, Mapping):
        return None
    for key in ("records", "Records"):
        records = value.get(key)
        if not isinstance(records, list):
            continue
        # An empty delivery (only its envelope) holds no payload.
        delivery = bool(records) or set(value) <= _ENVELOPE_KEYS
        if delivery and all(_is_record(r) for r in records):
            return records
    return [value] if _is_record(value) else None


def _is_record(value: Any) -> bool:
    if not isinstance(value, Mapping):
        return False
    kinesis = value.get("kinesis")
    if isinstance(kinesis, Mapping) and isinstance(kinesis.get("data"), str):
        return set(value) <= _LAMBDA_KEYS
    data = value.get("data", value.get("Data"))
    return isinstance(data, str) and set(value) <= RECORD_KEYS


def _record_payloads(
    shape: str, record: Mapping[str, Any], where: str, max_payloads: int, max_bytes: int
) -> list[Payload]:
    kinesis = record.get("kinesis")
    encoded = (
        kinesis["data"] if isinstance(kinesis, Mapping) else record.get("data", record.get("Data"))
    )
    assert isinstance(encoded, str)  # _is_record
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        error = ShapeError(shape, f"{where}.data", "is not base64")
        return [Payload(encoded.encode(), None, error, where)]
    try:
        if data.startswith(_GZIP):
            data = gunzip(data, max_bytes)
        pieces = split_events(data, max_payloads)
    except BodyError as exc:
        if exc.status == 413:
            raise
        return [Payload(data, None, ShapeError(shape, f"{where}.data", str(exc)), where)]
    out: list[Payload] = []
    for piece in pieces:
        raw = bytes(piece)
        try:
            out.append(Payload(raw, _decode(raw), None, where))
        except (msgspec.DecodeError, RecursionError) as exc:
            error = ShapeError(shape, f"{where}.data", f"not valid JSON: {exc}")
            out.append(Payload(raw, None, error, where))
    return out
