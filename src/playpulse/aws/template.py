"""The CloudFormation template of playpulse on AWS: one stack.

:func:`build_template` returns the template as a dict (``playpulse aws template`` prints
it as JSON or YAML; ``playpulse aws deploy`` creates or updates a stack from it). The
stack holds:

- ``Stream``: the Kinesis stream the collector writes and the processor reads (shards are
  the stream's partitions);
- ``CheckpointTable``: the Kinesis backend's checkpoints (``<stream>-playpulse-checkpoints``);
- ``Table``: the DynamoDB table of the real-time store (``pk``/``sk`` string keys, TTL on
  :data:`TTL_ATTRIBUTE`, the GSIs :data:`GSI_BY_SK` and :data:`GSI_BY_VENDOR`, on-demand);
- ``Bucket``: the S3 bucket of the lake (under :data:`LAKE_PREFIX`), its objects moved to a
  colder storage class after ``StackOptions.cold_storage_days``;
- ``ProcessorFunction`` on a Kinesis event source mapping (``ProcessorEventSource``:
  batch size, bisect on error, ``ReportBatchItemFailures``, bounded retries, failed
  batches to the ``DeadLetterQueue`` SQS queue), also called once a day by the
  ``KeepAliveSchedule`` EventBridge rule to keep the store's states alive, and
  ``CollectorFunction`` behind a Lambda Function URL (``CollectorUrl``); each with its
  own least-privilege role;
- a Glue database with the tables ``events``, ``plays`` and ``sessions`` (Parquet, Hive
  partitions by ``event_date`` found by partition projection), an Athena work group and
  one Athena named query per catalog query (:func:`athena_sql`);
- CloudWatch alarms (:data:`ALARMS`, notifying the ``AlarmTopic`` SNS topic: subscribe
  to it) and a CloudWatch dashboard.

Lambda code comes from the package zip (``playpulse aws package``) in S3: the template's
``CodeBucket`` / ``CodeKey`` parameters. The collector keeps rejected events under
``s3://<Bucket>/quarantine`` and accepts the write keys of the ``CollectorWriteKeys``
parameter (none: open to whoever has the URL).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from playpulse.errors import ConfigError

#: The handlers the two functions run.
PROCESSOR_HANDLER = "playpulse.aws.processor_handler.handler"
COLLECTOR_HANDLER = "playpulse.aws.collector_handler.handler"
#: The store table's TTL attribute and GSIs (names the dynamodb:// store uses).
TTL_ATTRIBUTE = "expires_at"
GSI_BY_SK = "by_sk"
GSI_BY_VENDOR = "by_vendor"
VENDOR_KEY_ATTRIBUTE = "vendor_pk"
#: The ``by_sk`` index's keys: sparse attributes only counter items carry, so other
#: writes cost no index write units (playpulse.store.dynamodb.table_properties).
BY_SK_HASH, BY_SK_RANGE = "_isk", "_ipk"
#: How often EventBridge calls the processor to keep the store's states alive
#: (``KeepAliveSchedule``; playpulse.aws.processor_handler.is_scheduled).
KEEP_ALIVE_SCHEDULE = "rate(1 day)"
#: The lake's prefix in the bucket: the stack's lake URL is ``s3://<bucket>/lake``.
LAKE_PREFIX = "lake"
#: Where the collector keeps rejected events in the bucket (PLAYPULSE_QUARANTINE_URL).
QUARANTINE_PREFIX = "quarantine"
#: The Kinesis stream backend's checkpoint table: ``<stream>`` + this suffix
#: (playpulse.stream.kinesis; ``playpulse aws run-processor`` commits there).
CHECKPOINT_TABLE_SUFFIX = "-playpulse-checkpoints"
#: Where the Athena work group writes query results in the bucket.
ATHENA_RESULTS_PREFIX = "athena-results"
#: The lake tables that get a Glue table, and the partition column.
LAKE_TABLES = ("events", "plays", "sessions")
PARTITION_COLUMN = "event_date"

Json = dict[str, Any]


@dataclass(frozen=True)
class AlarmThresholds:
    """The alarms' thresholds: the processor's iterator age (ms: how far behind the
    stream it is), its error rate (percent of invocations), and the counts of Kinesis
    write throttles, DynamoDB throttled requests and dead-letter messages above which
    an alarm fires (0: any)."""

    iterator_age_ms: float = 1000.0
    error_rate_pct: float = 1.0
    stream_write_throttles: float = 0.0
    table_throttled_requests: float = 0.0
    dead_letters: float = 0.0


@dataclass(frozen=True)
class StackOptions:
    """What :func:`build_template` can vary.

    - ``name_prefix``: prefix of the functions' names (``<prefix>-<stack>-processor``);
    - ``shard_count``: Kinesis shards (the stream's partitions);
    - ``retention_hours``: Kinesis retention (24 to 8760);
    - ``batch_size`` (1 to 10,000 records), ``batching_window_s`` (0 to 300 s),
      ``max_retry_attempts`` (0 to 10,000) and ``max_record_age_s`` (-1 or 60 to 604,800)
      of the event source mapping. The defaults, 1,000 records within 1 s, are the most
      a shard delivers in the 1 s the latency alarm allows (a shard takes at most 1,000
      records a second): a batch's DynamoDB write units are about one per counter item
      and state KB it touches, so bigger batches cost fewer units per event (about 0.40
      at 1,000 on the simulated workload, about 0.3 at 5,000: docs/benchmarks.md) but
      wait longer to fill (a 5 s window: events reach the store up to 5 s later, past
      the 1 s alarm); a Lambda event is at most 6 MB, about 5,000 records of 600 bytes;
    - ``cold_storage_days`` / ``cold_storage_class``: when and where the lake's objects
      move (``STANDARD_IA`` needs at least 30 days, ``GLACIER_IR`` 1);
    - ``runtime``, ``*_memory_mb``, ``*_timeout_s``: the functions;
    - ``code_bucket`` / ``code_key``: the package zip's defaults (template parameters);
    - ``glue_database``: the Glue database's default name (a template parameter);
    - ``log_retention_days``: the functions' log groups;
    - ``alarms``: :class:`AlarmThresholds`.

    Raises :class:`~playpulse.errors.ConfigError` from :meth:`validate` for a value out of
    its range.
    """

    name_prefix: str = "playpulse"
    shard_count: int = 2
    retention_hours: int = 24
    batch_size: int = 1000
    batching_window_s: int = 1
    max_retry_attempts: int = 5
    max_record_age_s: int = 86_400
    cold_storage_days: int = 30
    cold_storage_class: str = "STANDARD_IA"
    runtime: str = "python3.12"
    processor_memory_mb: int = 1024
    processor_timeout_s: int = 120
    collector_memory_mb: int = 512
    collector_timeout_s: int = 10
    code_bucket: str = "playpulse-artifacts"
    code_key: str = "playpulse-lambda.zip"
    glue_database: str = "playpulse"
    log_retention_days: int = 30
    alarms: AlarmThresholds = field(default_factory=AlarmThresholds)

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first option out of its range."""
        checks: list[tuple[str, bool, str]] = [
            ("shard_count", 1 <= self.shard_count <= 500, "1 to 500"),
            ("retention_hours", 24 <= self.retention_hours <= 8760, "24 to 8760"),
            ("batch_size", 1 <= self.batch_size <= 10_000, "1 to 10000"),
            ("batching_window_s", 0 <= self.batching_window_s <= 300, "0 to 300"),
            ("max_retry_attempts", 0 <= self.max_retry_attempts <= 10_000, "0 to 10000"),
            (
                "max_record_age_s",
                self.max_record_age_s == -1 or 60 <= self.max_record_age_s <= 604_800,
                "-1 or 60 to 604800",
            ),
            (
                "cold_storage_class",
                self.cold_storage_class in _MIN_TRANSITION_DAYS,
                " or ".join(_MIN_TRANSITION_DAYS),
            ),
            (
                "cold_storage_days",
                self.cold_storage_days >= _MIN_TRANSITION_DAYS.get(self.cold_storage_class, 0),
                f"at least {_MIN_TRANSITION_DAYS.get(self.cold_storage_class, 0)} days "
                f"for {self.cold_storage_class}",
            ),
            ("runtime", self.runtime in ("python3.11", "python3.12"), "python3.11 or 3.12"),
        ]
        for name, ok, accepted in checks:
            if not ok:
                raise ConfigError(
                    f"stack option {name}={getattr(self, name)!r} is out of range: {accepted}"
                )


_MIN_TRANSITION_DAYS = {"STANDARD_IA": 30, "GLACIER_IR": 1, "INTELLIGENT_TIERING": 0}


def _sub(text: str) -> Json:
    return {"Fn::Sub": text}


def _ref(name: str) -> Json:
    return {"Ref": name}


def _arn(name: str) -> Json:
    return {"Fn::GetAtt": [name, "Arn"]}


def _policy(name: str, statements: list[Json]) -> Json:
    return {
        "PolicyName": name,
        "PolicyDocument": {"Version": "2012-10-17", "Statement": statements},
    }


def _role(statements: list[Json]) -> Json:
    return {
        "Type": "AWS::IAM::Role",
        "Properties": {
            "AssumeRolePolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "lambda.amazonaws.com"},
                        "Action": "sts:AssumeRole",
                    }
                ],
            },
            "Policies": [_policy("playpulse", statements)],
        },
    }


def _logs_statement(log_group: str) -> Json:
    return {
        "Effect": "Allow",
        "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
        "Resource": _sub(
            "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:"
            f"${{{log_group}}}:*"
        ),
    }


# -- Glue tables ------------------------------------------------------------------------


def hive_type(dtype: pa.DataType) -> str:
    """The Hive/Athena column type of an Arrow type of the lake's schemas
    (``timestamp[us, tz=UTC]`` -> ``timestamp``, ``list<int64>`` -> ``array<bigint>``,
    structs -> ``struct<name:type,...>``). Raises :class:`ConfigError` for a type the
    lake does not use."""
    simple: list[tuple[Callable[[pa.DataType], bool], str]] = [
        (pa.types.is_string, "string"),
        (pa.types.is_boolean, "boolean"),
        (pa.types.is_int64, "bigint"),
        (pa.types.is_int32, "int"),
        (pa.types.is_float64, "double"),
        (pa.types.is_timestamp, "timestamp"),
        (pa.types.is_date32, "date"),
    ]
    for test, name in simple:
        if test(dtype):
            return name
    if pa.types.is_list(dtype):
        return f"array<{hive_type(dtype.value_type)}>"
    if pa.types.is_struct(dtype):
        fields = ",".join(
            f"{dtype.field(i).name}:{hive_type(dtype.field(i).type)}"
            for i in range(dtype.num_fields)
        )
        return f"struct<{fields}>"
    raise ConfigError(f"Glue table: no Hive type for the lake's Arrow type {dtype}")


def glue_table_input(table: str) -> Json:
    """The Glue ``TableInput`` of lake table ``table`` (``events``, ``plays`` or
    ``sessions``): Parquet files under ``s3://<Bucket>/lake/<table>/``, partitioned by
    ``event_date`` (``YYYY-MM-DD``) through partition projection, so no crawler or
    ``MSCK REPAIR`` is needed. (History compacted into month folders,
    ``event_month=YYYY-MM``, is outside the projection.)"""
    from playpulse.lake.schema import SCHEMAS

    schema = SCHEMAS[table]
    columns = [
        {"Name": f.name, "Type": hive_type(f.type)} for f in schema if f.name != PARTITION_COLUMN
    ]
    location = f"s3://${{Bucket}}/{LAKE_PREFIX}/{table}/"
    return {
        "Name": table,
        "TableType": "EXTERNAL_TABLE",
        "Parameters": {
            "classification": "parquet",
            "parquet.compression": "ZSTD",
            "projection.enabled": "true",
            f"projection.{PARTITION_COLUMN}.type": "date",
            f"projection.{PARTITION_COLUMN}.format": "yyyy-MM-dd",
            f"projection.{PARTITION_COLUMN}.range": "2000-01-01,NOW+1DAYS",
            f"projection.{PARTITION_COLUMN}.interval": "1",
            f"projection.{PARTITION_COLUMN}.interval.unit": "DAYS",
            "storage.location.template": _sub(
                f"{location}{PARTITION_COLUMN}=${{!{PARTITION_COLUMN}}}/"
            ),
        },
        "PartitionKeys": [{"Name": PARTITION_COLUMN, "Type": "string"}],
        "StorageDescriptor": {
            "Columns": columns,
            "Location": _sub(location),
            "InputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat",
            "OutputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat",
            "SerdeInfo": {
                "SerializationLibrary": (
                    "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
                ),
                "Parameters": {"serialization.format": "1"},
            },
        },
    }


# -- alarms ---------------------------------------------------------------------------

#: The alarms' logical ids, by what they watch.
ALARMS = {
    "iterator_age": "ProcessorIteratorAgeAlarm",
    "error_rate": "ProcessorErrorRateAlarm",
    "stream_write_throttles": "StreamWriteThrottleAlarm",
    "table_throttles": "TableThrottleAlarm",
    "dead_letters": "DeadLetterQueueAlarm",
}
# The table operations the store uses; ThrottledRequests is per table and operation.
_TABLE_OPERATIONS = (
    "GetItem",
    "BatchGetItem",
    "Query",
    "PutItem",
    "UpdateItem",
    "BatchWriteItem",
    "TransactWriteItems",
    "TransactGetItems",
)


def _alarm(name: str, description: str, threshold: float, **props: Any) -> Json:
    return {
        "Type": "AWS::CloudWatch::Alarm",
        "Properties": {
            "AlarmName": _sub(f"${{AWS::StackName}}-{name}"),
            "AlarmDescription": description,
            "ComparisonOperator": "GreaterThanThreshold",
            "Threshold": threshold,
            "EvaluationPeriods": 1,
            "DatapointsToAlarm": 1,
            "TreatMissingData": "notBreaching",
            "AlarmActions": [_ref("AlarmTopic")],
            "OKActions": [_ref("AlarmTopic")],
            **props,
        },
    }


def _metric(
    id_: str, namespace: str, name: str, dims: list[Json], stat: str = "Sum", period: int = 60
) -> Json:
    return {
        "Id": id_,
        "ReturnData": False,
        "MetricStat": {
            "Metric": {"Namespace": namespace, "MetricName": name, "Dimensions": dims},
            "Period": period,
            "Stat": stat,
        },
    }


def _alarms(t: AlarmThresholds) -> dict[str, Json]:
    fn = [{"Name": "FunctionName", "Value": _ref("ProcessorFunction")}]
    table_metrics = [
        _metric(
            f"t{i}",
            "AWS/DynamoDB",
            "ThrottledRequests",
            [
                {"Name": "TableName", "Value": _ref("Table")},
                {"Name": "Operation", "Value": op},
            ],
        )
        for i, op in enumerate(_TABLE_OPERATIONS)
    ]
    ids = ", ".join(m["Id"] for m in table_metrics)
    return {
        ALARMS["iterator_age"]: _alarm(
            "iterator-age",
            f"Processing latency: the processor's iterator age (how far behind the stream's "
            f"newest record it reads) is above {t.iterator_age_ms:g} ms",
            t.iterator_age_ms,
            Namespace="AWS/Lambda",
            MetricName="IteratorAge",
            Dimensions=fn,
            Statistic="Maximum",
            Period=60,
            Unit="Milliseconds",
        ),
        ALARMS["error_rate"]: _alarm(
            "error-rate",
            f"The processor function's error rate (Errors / Invocations) is above "
            f"{t.error_rate_pct:g} %",
            t.error_rate_pct,
            Metrics=[
                _metric("errors", "AWS/Lambda", "Errors", fn),
                _metric("invocations", "AWS/Lambda", "Invocations", fn),
                {
                    "Id": "error_rate",
                    "Label": "Error rate (%)",
                    "Expression": "IF(invocations > 0, 100 * errors / invocations, 0)",
                    "ReturnData": True,
                },
            ],
        ),
        ALARMS["stream_write_throttles"]: _alarm(
            "stream-write-throttles",
            "Kinesis throttles writes to the stream (WriteProvisionedThroughputExceeded): "
            "add shards",
            t.stream_write_throttles,
            Namespace="AWS/Kinesis",
            MetricName="WriteProvisionedThroughputExceeded",
            Dimensions=[{"Name": "StreamName", "Value": _ref("Stream")}],
            Statistic="Sum",
            Period=60,
        ),
        ALARMS["table_throttles"]: _alarm(
            "table-throttles",
            "DynamoDB throttles requests to the store table (ThrottledRequests)",
            t.table_throttled_requests,
            Metrics=[
                *table_metrics,
                {
                    "Id": "throttled",
                    "Label": "Throttled requests",
                    "Expression": f"SUM([{ids}])",
                    "ReturnData": True,
                },
            ],
        ),
        ALARMS["dead_letters"]: _alarm(
            "dead-letters",
            "Records the processor gave up on are in the dead-letter queue",
            t.dead_letters,
            Namespace="AWS/SQS",
            MetricName="ApproximateNumberOfMessagesVisible",
            Dimensions=[
                {"Name": "QueueName", "Value": {"Fn::GetAtt": ["DeadLetterQueue", "QueueName"]}}
            ],
            Statistic="Maximum",
            Period=60,
        ),
    }


def _dashboard_body() -> Json:
    """The dashboard's body: ``Fn::Sub`` of its JSON (the resources' names substituted)."""

    def widget(x: int, y: int, title: str, metrics: list[list[Any]], stat: str) -> Json:
        return {
            "type": "metric",
            "x": x,
            "y": y,
            "width": 12,
            "height": 6,
            "properties": {
                "title": title,
                "region": "${AWS::Region}",
                "stat": stat,
                "period": 60,
                "view": "timeSeries",
                "metrics": metrics,
            },
        }

    widgets = [
        widget(
            0,
            0,
            "Events written to the stream",
            [["AWS/Kinesis", "IncomingRecords", "StreamName", "${Stream}"]],
            "Sum",
        ),
        widget(
            12,
            0,
            "Processing latency (iterator age, ms)",
            [["AWS/Lambda", "IteratorAge", "FunctionName", "${ProcessorFunction}"]],
            "Maximum",
        ),
        widget(
            0,
            6,
            "Processor invocations and errors",
            [
                ["AWS/Lambda", "Invocations", "FunctionName", "${ProcessorFunction}"],
                ["AWS/Lambda", "Errors", "FunctionName", "${ProcessorFunction}"],
                ["AWS/Lambda", "Invocations", "FunctionName", "${CollectorFunction}"],
                ["AWS/Lambda", "Errors", "FunctionName", "${CollectorFunction}"],
            ],
            "Sum",
        ),
        widget(
            12,
            6,
            "Throttling",
            [
                ["AWS/Kinesis", "WriteProvisionedThroughputExceeded", "StreamName", "${Stream}"],
                ["AWS/DynamoDB", "WriteThrottleEvents", "TableName", "${Table}"],
                ["AWS/DynamoDB", "ReadThrottleEvents", "TableName", "${Table}"],
            ],
            "Sum",
        ),
        widget(
            0,
            12,
            "Store write capacity consumed",
            [["AWS/DynamoDB", "ConsumedWriteCapacityUnits", "TableName", "${Table}"]],
            "Sum",
        ),
        widget(
            12,
            12,
            "Dead-letter queue",
            [
                [
                    "AWS/SQS",
                    "ApproximateNumberOfMessagesVisible",
                    "QueueName",
                    "${DeadLetterQueue.QueueName}",
                ]
            ],
            "Maximum",
        ),
    ]
    return _sub(json.dumps({"widgets": widgets}, separators=(",", ":")))


# -- the template -----------------------------------------------------------------------


def build_template(options: StackOptions | None = None) -> Json:
    """The CloudFormation template (a JSON-able dict) of the stack described in the
    module docstring, for ``options`` (defaults: :class:`StackOptions`).

    Parameters: ``CodeBucket`` / ``CodeKey`` (the package zip), ``GlueDatabaseName``,
    ``CollectorUrlOutput`` (``false``: no ``CollectorUrl`` output).
    Outputs: ``StreamName``, ``TableName``, ``BucketName``, ``LakeUrl``, ``StreamUrl``,
    ``StoreUrl``, ``CollectorUrl``, ``DeadLetterQueueUrl``, ``GlueDatabase``.
    Raises :class:`~playpulse.errors.ConfigError` for options out of range.
    """
    o = options or StackOptions()
    o.validate()
    env = {
        "PLAYPULSE_STREAM_URL": _sub("kinesis://${Stream}"),
        "PLAYPULSE_STORE_URL": _sub("dynamodb://${Table}"),
        "PLAYPULSE_LAKE_URL": _sub(f"s3://${{Bucket}}/{LAKE_PREFIX}"),
    }
    # /tmp is a Lambda's only writable folder (local quarantine files, caches).
    data_dir = {"PLAYPULSE_DATA_DIR": "/tmp/playpulse"}
    processor_name = f"{o.name_prefix}-${{AWS::StackName}}-processor"
    collector_name = f"{o.name_prefix}-${{AWS::StackName}}-collector"
    stream_arn = _arn("Stream")
    table_arn = _arn("Table")
    resources: dict[str, Json] = {
        "Stream": {
            "Type": "AWS::Kinesis::Stream",
            "Properties": {
                "ShardCount": o.shard_count,
                "RetentionPeriodHours": o.retention_hours,
                "StreamEncryption": {"EncryptionType": "KMS", "KeyId": "alias/aws/kinesis"},
            },
        },
        "Table": {
            "Type": "AWS::DynamoDB::Table",
            "Properties": {
                "BillingMode": "PAY_PER_REQUEST",
                "AttributeDefinitions": [
                    {"AttributeName": name, "AttributeType": "S"}
                    for name in ("pk", "sk", BY_SK_HASH, BY_SK_RANGE, VENDOR_KEY_ATTRIBUTE)
                ],
                "KeySchema": [
                    {"AttributeName": "pk", "KeyType": "HASH"},
                    {"AttributeName": "sk", "KeyType": "RANGE"},
                ],
                "GlobalSecondaryIndexes": [
                    {
                        "IndexName": GSI_BY_SK,
                        "KeySchema": [
                            {"AttributeName": BY_SK_HASH, "KeyType": "HASH"},
                            {"AttributeName": BY_SK_RANGE, "KeyType": "RANGE"},
                        ],
                        "Projection": {"ProjectionType": "ALL"},
                    },
                    {
                        "IndexName": GSI_BY_VENDOR,
                        "KeySchema": [
                            {"AttributeName": VENDOR_KEY_ATTRIBUTE, "KeyType": "HASH"},
                            {"AttributeName": "sk", "KeyType": "RANGE"},
                        ],
                        "Projection": {"ProjectionType": "ALL"},
                    },
                ],
                "TimeToLiveSpecification": {"AttributeName": TTL_ATTRIBUTE, "Enabled": True},
                "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
                "SSESpecification": {"SSEEnabled": True},
            },
        },
        "CheckpointTable": {
            "Type": "AWS::DynamoDB::Table",
            "Properties": {
                "TableName": _sub("${Stream}" + CHECKPOINT_TABLE_SUFFIX),
                "BillingMode": "PAY_PER_REQUEST",
                "AttributeDefinitions": [
                    {"AttributeName": "pk", "AttributeType": "S"},
                    {"AttributeName": "sk", "AttributeType": "S"},
                ],
                "KeySchema": [
                    {"AttributeName": "pk", "KeyType": "HASH"},
                    {"AttributeName": "sk", "KeyType": "RANGE"},
                ],
                "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
                "SSESpecification": {"SSEEnabled": True},
            },
        },
        "Bucket": {
            "Type": "AWS::S3::Bucket",
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
            "Properties": {
                "BucketEncryption": {
                    "ServerSideEncryptionConfiguration": [
                        {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
                    ]
                },
                "PublicAccessBlockConfiguration": {
                    "BlockPublicAcls": True,
                    "BlockPublicPolicy": True,
                    "IgnorePublicAcls": True,
                    "RestrictPublicBuckets": True,
                },
                "LifecycleConfiguration": {
                    "Rules": [
                        {
                            "Id": "lake-to-cold-storage",
                            "Status": "Enabled",
                            "Prefix": f"{LAKE_PREFIX}/",
                            "Transitions": [
                                {
                                    "StorageClass": o.cold_storage_class,
                                    "TransitionInDays": o.cold_storage_days,
                                }
                            ],
                        },
                        {
                            "Id": "expire-athena-results",
                            "Status": "Enabled",
                            "Prefix": f"{ATHENA_RESULTS_PREFIX}/",
                            "ExpirationInDays": 7,
                        },
                    ]
                },
            },
        },
        "DeadLetterQueue": {
            "Type": "AWS::SQS::Queue",
            "Properties": {"MessageRetentionPeriod": 1_209_600, "SqsManagedSseEnabled": True},
        },
        "AlarmTopic": {"Type": "AWS::SNS::Topic", "Properties": {}},
        "ProcessorLogGroup": {
            "Type": "AWS::Logs::LogGroup",
            "Properties": {
                "LogGroupName": _sub(f"/aws/lambda/{processor_name}"),
                "RetentionInDays": o.log_retention_days,
            },
        },
        "CollectorLogGroup": {
            "Type": "AWS::Logs::LogGroup",
            "Properties": {
                "LogGroupName": _sub(f"/aws/lambda/{collector_name}"),
                "RetentionInDays": o.log_retention_days,
            },
        },
        "ProcessorRole": _role(
            [
                {
                    "Sid": "ReadTheStream",
                    "Effect": "Allow",
                    "Action": [
                        "kinesis:DescribeStream",
                        "kinesis:DescribeStreamSummary",
                        "kinesis:GetRecords",
                        "kinesis:GetShardIterator",
                        "kinesis:ListShards",
                    ],
                    "Resource": stream_arn,
                },
                {
                    "Sid": "ListStreams",
                    "Effect": "Allow",
                    "Action": ["kinesis:ListStreams"],
                    "Resource": _sub(
                        "arn:${AWS::Partition}:kinesis:${AWS::Region}:${AWS::AccountId}:stream/*"
                    ),
                },
                {
                    "Sid": "ReadWriteTheStore",
                    "Effect": "Allow",
                    "Action": [
                        # What playpulse.store.dynamodb and the Kinesis checkpoints call.
                        "dynamodb:BatchGetItem",
                        "dynamodb:BatchWriteItem",
                        "dynamodb:DeleteItem",
                        "dynamodb:DescribeTable",
                        "dynamodb:GetItem",
                        "dynamodb:PutItem",
                        "dynamodb:Query",
                        "dynamodb:Scan",
                        "dynamodb:UpdateItem",
                    ],
                    "Resource": [
                        table_arn,
                        _sub("${Table.Arn}/index/*"),
                        _arn("CheckpointTable"),
                    ],
                },
                {
                    "Sid": "ReadWriteTheLake",
                    "Effect": "Allow",
                    "Action": [
                        "s3:GetObject",
                        "s3:PutObject",
                        "s3:DeleteObject",
                        "s3:AbortMultipartUpload",
                    ],
                    "Resource": _sub(f"${{Bucket.Arn}}/{LAKE_PREFIX}/*"),
                },
                {
                    "Sid": "ListTheLake",
                    "Effect": "Allow",
                    "Action": ["s3:ListBucket"],
                    "Resource": _arn("Bucket"),
                    # (IfExists: HeadBucket, which pyarrow's S3 filesystem calls, has no
                    # prefix.)
                    "Condition": {
                        "StringLikeIfExists": {"s3:prefix": [LAKE_PREFIX, f"{LAKE_PREFIX}/*"]}
                    },
                },
                {
                    "Sid": "DeadLetters",
                    "Effect": "Allow",
                    "Action": ["sqs:SendMessage"],
                    "Resource": _arn("DeadLetterQueue"),
                },
                _logs_statement("ProcessorLogGroup"),
            ]
        ),
        "CollectorRole": _role(
            [
                {
                    "Sid": "WriteTheStream",
                    "Effect": "Allow",
                    "Action": [
                        "kinesis:DescribeStreamSummary",
                        "kinesis:ListShards",
                        "kinesis:PutRecord",
                        "kinesis:PutRecords",
                    ],
                    "Resource": stream_arn,
                },
                {
                    "Sid": "KeepRejectedEvents",
                    "Effect": "Allow",
                    "Action": ["s3:PutObject"],
                    "Resource": _sub(f"${{Bucket.Arn}}/{QUARANTINE_PREFIX}/*"),
                },
                _logs_statement("CollectorLogGroup"),
            ]
        ),
        "ProcessorFunction": {
            "Type": "AWS::Lambda::Function",
            "DependsOn": ["ProcessorLogGroup"],
            "Properties": {
                "FunctionName": _sub(processor_name),
                "Description": "playpulse processor: one shard's batch of the stream",
                "Runtime": o.runtime,
                "Architectures": ["x86_64"],
                "Handler": PROCESSOR_HANDLER,
                "Code": {"S3Bucket": _ref("CodeBucket"), "S3Key": _ref("CodeKey")},
                "Role": _arn("ProcessorRole"),
                "MemorySize": o.processor_memory_mb,
                "Timeout": o.processor_timeout_s,
                "Environment": {"Variables": {**env, **data_dir}},
            },
        },
        "CollectorFunction": {
            "Type": "AWS::Lambda::Function",
            "DependsOn": ["CollectorLogGroup"],
            "Properties": {
                "FunctionName": _sub(collector_name),
                "Description": "playpulse collector: POST /v1/events to the stream",
                "Runtime": o.runtime,
                "Architectures": ["x86_64"],
                "Handler": COLLECTOR_HANDLER,
                "Code": {"S3Bucket": _ref("CodeBucket"), "S3Key": _ref("CodeKey")},
                "Role": _arn("CollectorRole"),
                "MemorySize": o.collector_memory_mb,
                "Timeout": o.collector_timeout_s,
                "Environment": {
                    "Variables": {
                        "PLAYPULSE_STREAM_URL": env["PLAYPULSE_STREAM_URL"],
                        "PLAYPULSE_QUARANTINE_URL": _sub(f"s3://${{Bucket}}/{QUARANTINE_PREFIX}"),
                        "PLAYPULSE_WRITE_KEYS": _ref("CollectorWriteKeys"),
                        **data_dir,
                    }
                },
            },
        },
        "ProcessorEventSource": {
            "Type": "AWS::Lambda::EventSourceMapping",
            "Properties": {
                "EventSourceArn": stream_arn,
                "FunctionName": _ref("ProcessorFunction"),
                "StartingPosition": "TRIM_HORIZON",
                "BatchSize": o.batch_size,
                "MaximumBatchingWindowInSeconds": o.batching_window_s,
                "BisectBatchOnFunctionError": True,
                "FunctionResponseTypes": ["ReportBatchItemFailures"],
                "MaximumRetryAttempts": o.max_retry_attempts,
                "MaximumRecordAgeInSeconds": o.max_record_age_s,
                "ParallelizationFactor": 1,
                "DestinationConfig": {"OnFailure": {"Destination": _arn("DeadLetterQueue")}},
            },
        },
        # Without batches the store's state packs would expire after 8 days: once a
        # day the processor carries them forward (RealtimeStore.keep_states_alive).
        "KeepAliveSchedule": {
            "Type": "AWS::Events::Rule",
            "Properties": {
                "Description": "playpulse: keep the store's states alive when no batch comes",
                "ScheduleExpression": KEEP_ALIVE_SCHEDULE,
                "State": "ENABLED",
                "Targets": [{"Arn": _arn("ProcessorFunction"), "Id": "processor-keep-alive"}],
            },
        },
        "KeepAlivePermission": {
            "Type": "AWS::Lambda::Permission",
            "Properties": {
                "Action": "lambda:InvokeFunction",
                "FunctionName": _ref("ProcessorFunction"),
                "Principal": "events.amazonaws.com",
                "SourceArn": _arn("KeepAliveSchedule"),
            },
        },
        "CollectorUrl": {
            "Type": "AWS::Lambda::Url",
            "Properties": {
                # playpulse checks its own write keys (Authorization: Bearer <key>).
                "AuthType": "NONE",
                "TargetFunctionArn": _arn("CollectorFunction"),
                "Cors": {
                    "AllowOrigins": ["*"],
                    "AllowMethods": ["POST"],
                    "AllowHeaders": ["authorization", "content-type", "content-encoding"],
                },
            },
        },
        "CollectorUrlPermission": {
            "Type": "AWS::Lambda::Permission",
            "Properties": {
                "Action": "lambda:InvokeFunctionUrl",
                "FunctionName": _ref("CollectorFunction"),
                "Principal": "*",
                "FunctionUrlAuthType": "NONE",
            },
        },
        "GlueDatabase": {
            "Type": "AWS::Glue::Database",
            "Properties": {
                "CatalogId": _ref("AWS::AccountId"),
                "DatabaseInput": {
                    "Name": _ref("GlueDatabaseName"),
                    "Description": "playpulse's lake: events, plays, sessions",
                },
            },
        },
        "AthenaWorkGroup": {
            "Type": "AWS::Athena::WorkGroup",
            "Properties": {
                "Name": _sub("${GlueDatabaseName}"),
                "Description": "playpulse's catalog queries over the lake",
                "State": "ENABLED",
                "WorkGroupConfiguration": {
                    "EnforceWorkGroupConfiguration": True,
                    "ResultConfiguration": {
                        "OutputLocation": _sub(f"s3://${{Bucket}}/{ATHENA_RESULTS_PREFIX}/")
                    },
                },
            },
        },
        "Dashboard": {
            "Type": "AWS::CloudWatch::Dashboard",
            "Properties": {
                "DashboardName": _sub("${AWS::StackName}"),
                "DashboardBody": _dashboard_body(),
            },
        },
    }
    for table in LAKE_TABLES:
        resources[f"GlueTable{table.capitalize()}"] = {
            "Type": "AWS::Glue::Table",
            "DependsOn": ["GlueDatabase"],
            "Properties": {
                "CatalogId": _ref("AWS::AccountId"),
                "DatabaseName": _ref("GlueDatabaseName"),
                "TableInput": glue_table_input(table),
            },
        }
    for name, (description, sql) in athena_queries().items():
        resources[named_query_id(name)] = {
            "Type": "AWS::Athena::NamedQuery",
            "DependsOn": ["GlueDatabase"],
            "Properties": {
                "Name": f"playpulse-{name}",
                "Description": description[:1024],
                "Database": _ref("GlueDatabaseName"),
                "WorkGroup": _ref("AthenaWorkGroup"),
                "QueryString": sql,
            },
        }
    resources.update(_alarms(o.alarms))
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": "playpulse: real-time engagement analytics on Kinesis, Lambda, "
        "DynamoDB, S3, Glue/Athena and CloudWatch",
        "Parameters": {
            "CodeBucket": {
                "Type": "String",
                "Default": o.code_bucket,
                "Description": "S3 bucket of the Lambda package (playpulse aws package)",
            },
            "CodeKey": {
                "Type": "String",
                "Default": o.code_key,
                "Description": "S3 key of the Lambda package zip",
            },
            "CollectorWriteKeys": {
                "Type": "String",
                "Default": "",
                "NoEcho": True,
                "Description": "Write keys the collector accepts (PLAYPULSE_WRITE_KEYS, "
                "comma-separated); empty: open to anyone who has the URL",
            },
            "CollectorUrlOutput": {
                "Type": "String",
                "Default": "true",
                "AllowedValues": ["true", "false"],
                "Description": "Whether the stack outputs the collector's Function URL "
                "(false for emulators that cannot resolve it: playpulse aws deploy reads "
                "it from Lambda then)",
            },
            "GlueDatabaseName": {
                "Type": "String",
                "Default": o.glue_database,
                "AllowedPattern": "^[a-z0-9_]{1,255}$",
                "Description": "Glue database of the lake's tables (lower case, digits, _)",
            },
        },
        "Conditions": {
            "WithCollectorUrlOutput": {"Fn::Equals": [_ref("CollectorUrlOutput"), "true"]}
        },
        "Resources": resources,
        "Outputs": {
            "StreamName": {"Value": _ref("Stream")},
            "TableName": {"Value": _ref("Table")},
            "BucketName": {"Value": _ref("Bucket")},
            "StreamUrl": {"Value": env["PLAYPULSE_STREAM_URL"]},
            "StoreUrl": {"Value": env["PLAYPULSE_STORE_URL"]},
            "LakeUrl": {"Value": env["PLAYPULSE_LAKE_URL"]},
            "CollectorUrl": {
                "Condition": "WithCollectorUrlOutput",
                "Value": {"Fn::GetAtt": ["CollectorUrl", "FunctionUrl"]},
            },
            "ProcessorFunctionName": {"Value": _ref("ProcessorFunction")},
            "CollectorFunctionName": {"Value": _ref("CollectorFunction")},
            "DeadLetterQueueUrl": {"Value": _ref("DeadLetterQueue")},
            "GlueDatabase": {"Value": _ref("GlueDatabaseName")},
        },
    }


def named_query_id(name: str) -> str:
    """The logical id of catalog query ``name``'s Athena named query
    (``top_content`` -> ``AthenaQueryTopContent``)."""
    return "AthenaQuery" + "".join(part.capitalize() for part in name.split("_"))


def athena_queries() -> dict[str, tuple[str, str]]:
    """Every catalog query that reads the lake, as ``{name: (description, Athena SQL)}``
    (:func:`athena_sql`)."""
    from playpulse.query.catalog import CATALOG

    return {
        name: (spec.description, athena_sql(name))
        for name, spec in CATALOG.items()
        if spec.sql and not spec.needs_store
    }


# -- Athena named queries ---------------------------------------------------------------

# What the DuckDB engine's views are (playpulse.query.engine), over the Glue tables: the
# newest version of each play and session (a session whose newest version is deleted is
# gone), the plays' segments one row each, the commerce events. ``user_num`` (a small
# integer per user in DuckDB, only ever counted distinct) is the user id itself. In
# DuckDB's dialect: sqlglot transpiles them with the catalog's SQL.
_ATHENA_VIEWS = """
WITH pp_params AS (
    SELECT CAST(current_date - INTERVAL 30 DAY AS TIMESTAMPTZ) AS p_start,
           CAST(current_date + INTERVAL 1 DAY AS TIMESTAMPTZ) AS p_end,
           epoch_us(CAST(current_date - INTERVAL 30 DAY AS TIMESTAMPTZ)) AS p_start_us,
           epoch_us(CAST(current_date + INTERVAL 1 DAY AS TIMESTAMPTZ)) AS p_end_us,
           CAST(NULL AS VARCHAR) AS p_content_id, CAST(NULL AS VARCHAR) AS p_creator,
           CAST(NULL AS VARCHAR) AS p_content_type, CAST(NULL AS VARCHAR) AS p_vendor_id,
           CAST(NULL AS VARCHAR) AS p_user_id, CAST(NULL AS VARCHAR) AS p_device_type,
           CAST(NULL AS VARCHAR) AS p_platform, CAST(NULL AS VARCHAR) AS p_country
),
pp_plays_newest AS (
    SELECT * EXCLUDE (pp_rn) FROM (
        SELECT *, row_number() OVER (PARTITION BY play_key ORDER BY version DESC) AS pp_rn
        FROM plays)
    WHERE pp_rn = 1
),
pp_plays_all AS (
    SELECT * EXCLUDE (segments), user_id AS user_num, epoch_us(started_at) AS started_us
    FROM pp_plays_newest
),
pp_play_rows AS (SELECT * FROM pp_plays_all),
pp_segment_rows AS (
    SELECT play_key, version, user_id, content_id, title, creator, content_type, platform,
           device_type, user_id AS user_num, s.foreground, s.chapter, s.start, s."end",
           s.playing_s, s.rate, epoch_us(s.start) AS start_us, epoch_us(s."end") AS end_us
    FROM (SELECT *, unnest(segments) AS s FROM pp_plays_newest)
),
pp_sessions AS (
    SELECT user_id, started_at, ended_at, events, duration_s FROM (
        SELECT *, row_number() OVER (PARTITION BY user_id, started_at ORDER BY version DESC)
                  AS pp_rn
        FROM sessions)
    WHERE pp_rn = 1 AND NOT deleted
),
pp_shop_events AS (SELECT * FROM events WHERE event_type IN ({shop_types}))
SELECT 1
"""
# The engine's views the catalog reads, and the CTEs above that stand for them.
_ATHENA_RENAMES = {
    "play_rows": "pp_play_rows",
    "plays_all": "pp_plays_all",
    "segment_rows": "pp_segment_rows",
    "sessions": "pp_sessions",
    "shop_events": "pp_shop_events",
}
_HOUR_US = 3_600_000_000
#: What the named queries' parameters are: the range is the last 30 days (UTC) and
#: today, edited in the query's ``pp_params`` (first lines); no filters; top 10 rows.
ATHENA_LIMIT = 10


@functools.lru_cache(maxsize=64)
def athena_sql(name: str) -> str:
    """Catalog query ``name`` as Athena (Trino) SQL over the Glue tables ``events``,
    ``plays`` and ``sessions``, transpiled from the catalog's DuckDB SQL with sqlglot.

    The engine's views become CTEs over the Glue tables (:data:`_ATHENA_VIEWS`); the
    query's parameters read the ``pp_params`` CTE (range: the last 30 days and today,
    UTC; no filters), ``$limit`` is :data:`ATHENA_LIMIT` and ``$tz`` is UTC. Stars
    (``* EXCLUDE``) are expanded from the lake's schemas, ``GROUP BY ALL`` becomes the
    ordinals of the non-aggregate select items and DuckDB's ``epoch_us`` / ``timezone``
    their Trino equivalents. Constructs sqlglot cannot express in Trino (the shop
    queries' JSON path wildcard and struct literals) are left as sqlglot writes them.
    Raises :class:`ConfigError` for an unknown name or a query that only the real-time
    store answers (``live``). Cached: the catalog does not change in a process.
    """
    import sqlglot
    from sqlglot import exp
    from sqlglot.optimizer.qualify import qualify

    from playpulse.events.model import COMMERCE_EVENT_TYPES
    from playpulse.lake.schema import SCHEMAS
    from playpulse.query.catalog import _SEGS_MARKER, _SEGS_WHOLE_HOURS, CATALOG

    spec = CATALOG.get(name)
    if spec is None or not spec.sql:
        raise ConfigError(f"Athena query '{name}': not a catalog query over the lake")
    views = sqlglot.parse_one(
        _ATHENA_VIEWS.format(shop_types=", ".join(f"'{t}'" for t in COMMERCE_EVENT_TYPES)),
        read="duckdb",
    )
    tree = sqlglot.parse_one(spec.sql.replace(_SEGS_MARKER, _SEGS_WHOLE_HOURS), read="duckdb")
    for table in tree.find_all(exp.Table):
        if table.name in _ATHENA_RENAMES and not table.db:
            table.set("this", exp.to_identifier(_ATHENA_RENAMES[table.name]))
    with_ = tree.args.get("with_")
    if with_ is None:  # pragma: no cover - every catalog query starts with WITH
        raise ConfigError(f"Athena query '{name}': the catalog's SQL has no WITH clause")
    with_.set("expressions", [*views.args["with_"].expressions, *with_.expressions])
    for holder in list(tree.find_all(exp.Placeholder)):
        param = holder.name
        if param == "limit":
            holder.replace(exp.Literal.number(ATHENA_LIMIT))
        elif param == "step":
            holder.replace(exp.Literal.number(_HOUR_US))
        elif param == "tz":
            holder.replace(exp.Literal.string("UTC"))
        else:
            holder.replace(exp.Subquery(this=sqlglot.parse_one(f"SELECT p_{param} FROM pp_params")))
    schema: dict[str, object] = {
        t: {f.name: hive_type(f.type) for f in s} for t, s in SCHEMAS.items()
    }
    tree = qualify(
        tree,
        schema=schema,
        dialect="duckdb",
        validate_qualify_columns=False,
        quote_identifiers=False,
    )
    tree = tree.transform(_to_trino).transform(_to_trino)
    return str(tree.sql(dialect="athena", pretty=True))


def _to_trino(node: Any) -> Any:
    """sqlglot transform: DuckDB constructs sqlglot leaves as they are, in Trino terms."""
    import sqlglot
    from sqlglot import exp

    if isinstance(node, exp.Table) and isinstance(node.this, exp.GenerateSeries):
        # DuckDB's range(start, stop[, step]) AS t(c) (stop excluded) as Trino's
        # UNNEST(sequence(start, stop - 1[, step])) AS t(c): sqlglot's own rewrite loses
        # the column alias.
        series = node.this
        stop = series.args["end"]
        if series.args.get("is_end_exclusive"):
            stop = exp.Sub(this=stop.copy(), expression=exp.Literal.number(1))
        args = [series.args["start"].copy(), stop]
        if series.args.get("step") is not None:
            args.append(series.args["step"].copy())
        return exp.Unnest(
            expressions=[exp.Anonymous(this="sequence", expressions=args)],
            alias=node.args["alias"].copy() if node.args.get("alias") else None,
        )
    if isinstance(node, exp.Group) and node.args.get("all"):
        select = node.parent
        if isinstance(select, exp.Select):
            ordinals = [
                exp.Literal.number(i + 1)
                for i, item in enumerate(select.expressions)
                if not item.find(exp.AggFunc, exp.Window)
            ]
            return exp.Group(expressions=ordinals)
    if isinstance(node, exp.Anonymous) and node.name.lower() == "epoch_us":
        # Microseconds since the epoch (to_unixtime: seconds as a double, exact to the
        # microsecond for times of this era).
        return exp.cast(
            exp.func("round", exp.func("to_unixtime", node.expressions[0]) * 1_000_000),
            "BIGINT",
        )
    if isinstance(node, exp.Anonymous) and node.name.lower() == "timezone":
        # DuckDB's timezone(zone, timestamptz): the local wall time, without a zone.
        zone, value = node.expressions
        return exp.cast(exp.Anonymous(this="at_timezone", expressions=[value, zone]), "TIMESTAMP")
    if isinstance(node, exp.Struct) and all(
        isinstance(e, exp.PropertyEQ) and isinstance(e.expression, exp.Column)
        for e in node.expressions
    ):
        # {'a': col, ...} of the events' columns: a ROW with those names and types.
        from playpulse.lake.schema import EVENTS_SCHEMA

        fields = [(e.this.name, e.expression) for e in node.expressions]
        if all(column.name in EVENTS_SCHEMA.names for _, column in fields):
            row_type = ", ".join(
                f"{key} {hive_type(EVENTS_SCHEMA.field(column.name).type)}"
                for key, column in fields
            )
            return exp.cast(
                exp.Anonymous(this="ROW", expressions=[column for _, column in fields]),
                exp.DataType.build(f"ROW({row_type})", dialect="trino"),
            )
    if isinstance(node, exp.Contains):
        # DuckDB's contains(text, part) on strings (Trino's contains is for arrays).
        return exp.GT(
            this=exp.Anonymous(this="strpos", expressions=[node.this, node.expression]),
            expression=exp.Literal.number(0),
        )
    if isinstance(node, exp.ArrayOverlaps):
        return exp.Anonymous(this="arrays_overlap", expressions=[node.this, node.expression])
    if isinstance(node, exp.JSONExtractScalar):
        path = node.expression
        parts = path.expressions if isinstance(path, exp.JSONPath) else []
        last = parts[-1] if parts else None
        if isinstance(last, exp.JSONPathSubscript) and isinstance(last.this, exp.JSONPathWildcard):
            # json_extract_string(j, '$.a[*]'): the strings of the array at $.a.
            whole = exp.JSONPath(expressions=parts[:-1])
            extracted = exp.JSONExtract(this=node.this, expression=whole)
            return exp.cast(extracted, sqlglot.exp.DataType.build("ARRAY<VARCHAR>"))
    return node


def to_text(template: Json, fmt: str = "json") -> str:
    """``template`` as JSON (indented) or YAML text. Raises :class:`ConfigError` for
    another ``fmt``."""
    if fmt == "json":
        return json.dumps(template, indent=2) + "\n"
    if fmt == "yaml":
        try:
            import yaml
        except ImportError as exc:  # pragma: no cover - PyYAML comes with uvicorn[standard]
            raise ConfigError("template --format yaml needs PyYAML: pip install pyyaml") from exc
        return str(yaml.safe_dump(template, sort_keys=False, width=100))
    raise ConfigError(f"template format '{fmt}' is not json or yaml")
