"""The CloudFormation template (playpulse.aws.template): cfn-lint clean, the alarms'
thresholds, the event source mapping, table, bucket, roles and Glue tables as issue #13
asks, and an Athena named query for every catalog query that sqlglot reads back as
Athena SQL over the Glue tables only."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest
import sqlglot
import yaml
from cfnlint.api import ManualArgs, lint
from sqlglot import exp
from typer.testing import CliRunner

from playpulse.aws.template import (
    ALARMS,
    ATHENA_LIMIT,
    COLLECTOR_HANDLER,
    GSI_BY_SK,
    GSI_BY_VENDOR,
    LAKE_TABLES,
    PROCESSOR_HANDLER,
    TTL_ATTRIBUTE,
    AlarmThresholds,
    StackOptions,
    athena_sql,
    build_template,
    named_query_id,
    to_text,
)
from playpulse.cli import app
from playpulse.errors import ConfigError
from playpulse.lake.schema import SCHEMAS
from playpulse.query.catalog import CATALOG, QueryParams, run_query
from playpulse.testing import load_module


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return build_template()


def resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def props(template: dict[str, Any], logical_id: str) -> dict[str, Any]:
    result: dict[str, Any] = template["Resources"][logical_id]["Properties"]
    return result


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_cfn_lint_passes(template: dict[str, Any], fmt: str) -> None:
    matches = lint(to_text(template, fmt), config=ManualArgs(regions=["us-east-1"]))
    assert [str(m) for m in matches] == []


def test_cfn_lint_would_catch_a_broken_template(template: dict[str, Any]) -> None:
    broken = json.loads(json.dumps(template))
    props(broken, "ProcessorEventSource")["StartingPosition"] = "NEWEST"
    assert lint(to_text(broken), config=ManualArgs(regions=["us-east-1"]))


def test_alarm_thresholds(template: dict[str, Any]) -> None:
    alarms = resources(template, "AWS::CloudWatch::Alarm")
    assert set(alarms) == set(ALARMS.values())
    for alarm in alarms.values():
        assert alarm["Properties"]["ComparisonOperator"] == "GreaterThanThreshold"

    age = props(template, ALARMS["iterator_age"])
    assert (age["Namespace"], age["MetricName"]) == ("AWS/Lambda", "IteratorAge")
    assert age["Statistic"] == "Maximum"
    assert age["Threshold"] == 1000  # milliseconds: processing latency > 1 s
    assert age["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": "ProcessorFunction"}}]

    rate = props(template, ALARMS["error_rate"])
    assert rate["Threshold"] == 1  # percent
    stats = {
        m["Id"]: m["MetricStat"]["Metric"]["MetricName"]
        for m in rate["Metrics"]
        if "MetricStat" in m
    }
    assert stats == {"errors": "Errors", "invocations": "Invocations"}
    (expression,) = [m for m in rate["Metrics"] if "Expression" in m]
    assert expression["ReturnData"] is True
    assert "100 * errors / invocations" in expression["Expression"]

    kinesis = props(template, ALARMS["stream_write_throttles"])
    assert kinesis["MetricName"] == "WriteProvisionedThroughputExceeded"
    assert kinesis["Threshold"] == 0
    assert kinesis["Dimensions"] == [{"Name": "StreamName", "Value": {"Ref": "Stream"}}]

    table = props(template, ALARMS["table_throttles"])
    assert table["Threshold"] == 0
    names = {m["MetricStat"]["Metric"]["MetricName"] for m in table["Metrics"] if "MetricStat" in m}
    assert names == {"ThrottledRequests"}
    operations = {
        d["Value"]
        for m in table["Metrics"]
        if "MetricStat" in m
        for d in m["MetricStat"]["Metric"]["Dimensions"]
        if d["Name"] == "Operation"
    }
    assert {"UpdateItem", "BatchWriteItem", "GetItem", "Query"} <= operations

    dlq = props(template, ALARMS["dead_letters"])
    assert (dlq["Namespace"], dlq["MetricName"]) == (
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
    )
    assert dlq["Threshold"] == 0


def test_alarm_thresholds_follow_the_options() -> None:
    template = build_template(
        StackOptions(alarms=AlarmThresholds(iterator_age_ms=5000, error_rate_pct=2.5))
    )
    assert props(template, ALARMS["iterator_age"])["Threshold"] == 5000
    assert props(template, ALARMS["error_rate"])["Threshold"] == 2.5


def test_event_source_mapping(template: dict[str, Any]) -> None:
    esm = props(template, "ProcessorEventSource")
    assert esm["EventSourceArn"] == {"Fn::GetAtt": ["Stream", "Arn"]}
    assert esm["FunctionName"] == {"Ref": "ProcessorFunction"}
    assert esm["StartingPosition"] == "TRIM_HORIZON"
    assert esm["BatchSize"] == StackOptions().batch_size
    assert esm["BisectBatchOnFunctionError"] is True
    assert esm["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert 0 < esm["MaximumRetryAttempts"] <= 10
    assert esm["DestinationConfig"] == {
        "OnFailure": {"Destination": {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}}
    }
    assert template["Resources"]["DeadLetterQueue"]["Type"] == "AWS::SQS::Queue"


def test_a_daily_schedule_keeps_the_stores_states_alive(template: dict[str, Any]) -> None:
    rule = props(template, "KeepAliveSchedule")
    assert template["Resources"]["KeepAliveSchedule"]["Type"] == "AWS::Events::Rule"
    assert rule["ScheduleExpression"] == "rate(1 day)"
    assert rule["State"] == "ENABLED"
    assert [t["Arn"] for t in rule["Targets"]] == [{"Fn::GetAtt": ["ProcessorFunction", "Arn"]}]
    permission = props(template, "KeepAlivePermission")
    assert permission == {
        "Action": "lambda:InvokeFunction",
        "FunctionName": {"Ref": "ProcessorFunction"},
        "Principal": "events.amazonaws.com",
        "SourceArn": {"Fn::GetAtt": ["KeepAliveSchedule", "Arn"]},
    }


def test_functions_and_environment(template: dict[str, Any]) -> None:
    processor = props(template, "ProcessorFunction")
    collector = props(template, "CollectorFunction")
    assert processor["Handler"] == PROCESSOR_HANDLER
    assert collector["Handler"] == COLLECTOR_HANDLER
    for fn in (processor, collector):
        assert fn["Runtime"] in ("python3.11", "python3.12")
        assert fn["Code"] == {"S3Bucket": {"Ref": "CodeBucket"}, "S3Key": {"Ref": "CodeKey"}}
    env = processor["Environment"]["Variables"]
    assert env["PLAYPULSE_STREAM_URL"] == {"Fn::Sub": "kinesis://${Stream}"}
    assert env["PLAYPULSE_STORE_URL"] == {"Fn::Sub": "dynamodb://${Table}"}
    assert env["PLAYPULSE_LAKE_URL"] == {"Fn::Sub": "s3://${Bucket}/lake"}
    assert (
        collector["Environment"]["Variables"]["PLAYPULSE_STREAM_URL"] == env["PLAYPULSE_STREAM_URL"]
    )
    url = props(template, "CollectorUrl")
    assert url["TargetFunctionArn"] == {"Fn::GetAtt": ["CollectorFunction", "Arn"]}
    outputs = template["Outputs"]
    assert {"StreamName", "TableName", "BucketName", "CollectorUrl"} <= set(outputs)


def test_table_bucket_and_stream(template: dict[str, Any]) -> None:
    table = props(template, "Table")
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    assert table["TimeToLiveSpecification"] == {"AttributeName": TTL_ATTRIBUTE, "Enabled": True}
    gsis = {g["IndexName"]: g["KeySchema"] for g in table["GlobalSecondaryIndexes"]}
    assert [k["AttributeName"] for k in gsis[GSI_BY_SK]] == ["_isk", "_ipk"]
    assert [k["AttributeName"] for k in gsis[GSI_BY_VENDOR]] == ["vendor_pk", "sk"]

    (lake_rule,) = [
        r
        for r in props(template, "Bucket")["LifecycleConfiguration"]["Rules"]
        if r.get("Transitions")
    ]
    assert lake_rule["Prefix"] == "lake/"
    assert lake_rule["Transitions"] == [{"StorageClass": "STANDARD_IA", "TransitionInDays": 30}]
    assert props(template, "Stream")["ShardCount"] == StackOptions().shard_count
    custom = build_template(StackOptions(cold_storage_class="GLACIER_IR", cold_storage_days=7))
    rules = props(custom, "Bucket")["LifecycleConfiguration"]["Rules"]
    assert {"StorageClass": "GLACIER_IR", "TransitionInDays": 7} in rules[0]["Transitions"]


def test_table_is_the_one_the_dynamodb_store_creates(template: dict[str, Any]) -> None:
    store = pytest.importorskip("playpulse.store.dynamodb")
    table = props(template, "Table")
    expected = store.table_properties()
    for key in ("KeySchema", "BillingMode", "GlobalSecondaryIndexes"):
        assert table[key] == expected[key], key
    assert sorted(table["AttributeDefinitions"], key=str) == sorted(
        expected["AttributeDefinitions"], key=str
    )
    assert table["TimeToLiveSpecification"]["AttributeName"] == store.TTL_ATTRIBUTE


def _statements(template: dict[str, Any], role: str) -> list[dict[str, Any]]:
    (policy,) = props(template, role)["Policies"]
    result: list[dict[str, Any]] = policy["PolicyDocument"]["Statement"]
    return result


def _actions(statements: list[dict[str, Any]]) -> set[str]:
    return {a for s in statements for a in s["Action"]}


def test_roles_are_least_privilege(template: dict[str, Any]) -> None:
    for role in ("ProcessorRole", "CollectorRole"):
        for statement in _statements(template, role):
            assert statement["Effect"] == "Allow"
            assert statement["Resource"] != "*"
            assert not any(a.endswith(":*") or a == "*" for a in statement["Action"])
    collector = _actions(_statements(template, "CollectorRole"))
    assert "kinesis:PutRecords" in collector
    assert not any(a.startswith("dynamodb:") for a in collector)
    assert not any(a.startswith("kinesis:Get") for a in collector)
    assert not {"s3:GetObject", "s3:DeleteObject", "s3:ListBucket"} & collector
    processor = _actions(_statements(template, "ProcessorRole"))
    assert {"kinesis:GetRecords", "kinesis:GetShardIterator"} <= processor
    assert {"dynamodb:UpdateItem", "dynamodb:GetItem", "dynamodb:Query"} <= processor
    assert {"s3:PutObject", "s3:GetObject", "sqs:SendMessage"} <= processor
    assert "kinesis:PutRecords" not in processor
    (lake,) = [s for s in _statements(template, "ProcessorRole") if "s3:PutObject" in s["Action"]]
    assert lake["Resource"] == {"Fn::Sub": "${Bucket.Arn}/lake/*"}


def test_glue_tables_follow_the_lake_schema(template: dict[str, Any]) -> None:
    tables = {
        r["Properties"]["TableInput"]["Name"]: r["Properties"]["TableInput"]
        for r in resources(template, "AWS::Glue::Table").values()
    }
    assert set(tables) == set(LAKE_TABLES)
    for name, table in tables.items():
        columns = [c["Name"] for c in table["StorageDescriptor"]["Columns"]]
        assert columns == [n for n in SCHEMAS[name].names if n != "event_date"]
        assert table["PartitionKeys"] == [{"Name": "event_date", "Type": "string"}]
        params = table["Parameters"]
        assert params["projection.enabled"] == "true"
        assert params["projection.event_date.type"] == "date"
        assert params["storage.location.template"] == {
            "Fn::Sub": f"s3://${{Bucket}}/lake/{name}/event_date=${{!event_date}}/"
        }
        assert "Parquet" in table["StorageDescriptor"]["InputFormat"]
    plays = {c["Name"]: c["Type"] for c in tables["plays"]["StorageDescriptor"]["Columns"]}
    assert plays["started_at"] == "timestamp"
    assert plays["chapters_reached"] == "array<bigint>"
    assert plays["segments"].startswith("struct<") is False
    assert plays["segments"].startswith("array<struct<start:timestamp,end:timestamp,")


LAKE_QUERIES = sorted(n for n, s in CATALOG.items() if s.sql and not s.needs_store)


def test_every_catalog_query_has_a_named_query(template: dict[str, Any]) -> None:
    named = resources(template, "AWS::Athena::NamedQuery")
    assert LAKE_QUERIES  # the catalog is not empty
    assert set(named) == {named_query_id(n) for n in LAKE_QUERIES}
    for name in LAKE_QUERIES:
        query = props(template, named_query_id(name))
        assert query["Name"] == f"playpulse-{name}"
        assert query["Database"] == {"Ref": "GlueDatabaseName"}
        assert query["QueryString"] == athena_sql(name)


@pytest.mark.parametrize("name", LAKE_QUERIES)
def test_named_query_is_athena_sql_over_the_glue_tables(name: str) -> None:
    sql = athena_sql(name)
    tree = sqlglot.parse_one(sql, read="athena")
    assert isinstance(tree, exp.Query)
    ctes = {cte.alias for cte in tree.find_all(exp.CTE)}
    read = {t.name for t in tree.find_all(exp.Table) if t.name not in ctes and t.name}
    assert read <= set(LAKE_TABLES), read
    assert read  # it reads the lake
    # The DuckDB-only constructs are gone: parameters, EXCLUDE, GROUP BY ALL, epoch_us.
    assert not list(tree.find_all(exp.Placeholder, exp.Parameter))
    upper = sql.upper()
    for duckdb_only in ("EXCLUDE", "EXCEPT (", "GROUP BY ALL", "EPOCH_US(", " TIMEZONE("):
        assert duckdb_only not in upper, duckdb_only
    # Athena (Trino) reads it back the same.
    assert sqlglot.parse_one(tree.sql(dialect="athena"), read="athena") == tree


def test_athena_sql_refuses_the_live_query() -> None:
    with pytest.raises(ConfigError, match="live"):
        athena_sql("live")


@pytest.mark.parametrize(
    ("options", "match"),
    [
        (StackOptions(shard_count=0), "shard_count"),
        (StackOptions(batch_size=20_000), "batch_size"),
        (StackOptions(cold_storage_days=10), "cold_storage_days"),
        (StackOptions(runtime="python3.8"), "runtime"),
    ],
)
def test_options_out_of_range(options: StackOptions, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_template(options)


def test_cli_prints_the_template() -> None:
    runner = CliRunner()
    as_json = runner.invoke(app, ["aws", "template"])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.output) == build_template()
    as_yaml = runner.invoke(app, ["aws", "template", "--format", "yaml", "--shards", "4"])
    assert as_yaml.exit_code == 0, as_yaml.output
    assert yaml.safe_load(as_yaml.output) == build_template(StackOptions(shard_count=4))


# -- the named queries' answers -----------------------------------------------------------

# Trino functions the named queries use that sqlglot does not map back to DuckDB.
_TRINO_MACROS = (
    "CREATE MACRO arrays_overlap(a, b) AS list_has_any(a, b)",
    "CREATE MACRO at_timezone(v, z) AS timezone(z, v)",
)
# Columns that count sessions: the catalog also counts the sessions still open in the
# real-time store (u4's, in the data set), which Athena, reading the lake, cannot.
_STORE_ONLY = {
    "overview": {"sessions", "avg_session_s"},
    "user_sessions": {"sessions", "avg_session_s"},
}


@pytest.fixture(scope="module")
def lake_and_dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    dataset = load_module(
        Path(__file__).parents[1] / "query" / "dataset.py", "playpulse_tests_aws_dataset"
    )
    settings, _ = dataset.build(tmp_path_factory.mktemp("athena-lake"))
    return settings, dataset


def _rounded(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, int | str):
        return value
    if isinstance(value, float | Decimal):
        return round(float(value), 6)
    return value


@pytest.mark.parametrize("name", LAKE_QUERIES)
def test_named_query_answers_what_the_catalog_answers(
    name: str, lake_and_dataset: tuple[Any, Any]
) -> None:
    # No Athena here: the named query, read as Athena SQL and written back as DuckDB SQL
    # by sqlglot, runs over the lake's Parquet files as the Glue tables, with its range
    # set to the data set's week; the catalog answers the same range.
    settings, dataset = lake_and_dataset
    start, end = datetime(2026, 11, 16, tzinfo=UTC), datetime(2026, 11, 23, tzinfo=UTC)
    tree = sqlglot.parse_one(athena_sql(name), read="athena")
    (params,) = [c for c in tree.find_all(exp.CTE) if c.alias == "pp_params"]
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    params.set(
        "this",
        sqlglot.parse_one(
            "SELECT TIMESTAMP '2026-11-16 00:00:00 UTC' AS p_start, "
            "TIMESTAMP '2026-11-23 00:00:00 UTC' AS p_end, "
            f"{(start - epoch) // timedelta(microseconds=1)} AS p_start_us, "
            f"{(end - epoch) // timedelta(microseconds=1)} AS p_end_us, "
            "CAST(NULL AS VARCHAR) AS p_content_id, CAST(NULL AS VARCHAR) AS p_creator, "
            "CAST(NULL AS VARCHAR) AS p_content_type, CAST(NULL AS VARCHAR) AS p_vendor_id, "
            "CAST(NULL AS VARCHAR) AS p_user_id, CAST(NULL AS VARCHAR) AS p_device_type, "
            "CAST(NULL AS VARCHAR) AS p_platform, CAST(NULL AS VARCHAR) AS p_country",
            read="trino",
        ),
    )
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    for macro in _TRINO_MACROS:
        con.execute(macro)
    for table in LAKE_TABLES:
        files = f"{settings.lake_path}/{table}/*/*.parquet"
        con.execute(
            f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{files}', "
            "union_by_name = true, hive_partitioning = false)"
        )
    athena = con.sql(tree.sql(dialect="duckdb")).fetchall()
    con.close()
    spec = CATALOG[name]
    catalog = run_query(
        name, QueryParams(start=start, end=end, limit=ATHENA_LIMIT), settings, now=dataset.NOW
    ).to_pylist()
    assert catalog  # the data set answers every query
    keep = [i for i, c in enumerate(spec.columns) if c not in _STORE_ONLY.get(name, set())]
    got = [tuple(_rounded(row[i]) for i in keep) for row in athena]
    want = [tuple(_rounded(row[spec.columns[i]]) for i in keep) for row in catalog]
    assert got == want
