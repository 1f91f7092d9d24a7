"""``playpulse aws deploy`` (playpulse.aws.deploy) into moto in server mode: the stack's
resources exist afterwards (what moto's CloudFormation creates, and what deploy creates
through their own APIs because moto skips them: Glue, Athena, alarms, the Function URL);
a second deploy, through the CLI in its own process, updates the stack; its printed
export lines are sourceable by a shell."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from playpulse.aws.clients import client
from playpulse.aws.deploy import DeployResult, deploy, export_lines, stack_resources
from playpulse.aws.package import build_package
from playpulse.aws.template import (
    ALARMS,
    COLLECTOR_HANDLER,
    GSI_BY_SK,
    GSI_BY_VENDOR,
    LAKE_TABLES,
    PROCESSOR_HANDLER,
    TTL_ATTRIBUTE,
    StackOptions,
    athena_sql,
)
from playpulse.errors import ConfigError
from playpulse.query.catalog import CATALOG


@pytest.fixture(scope="module")
def lambda_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Only playpulse (the dependencies do not change what the stack is made of).
    return build_package(tmp_path_factory.mktemp("zip") / "lambda.zip", no_deps=True).path


@pytest.fixture(scope="module")
def env(moto_server: Any) -> Iterator[dict[str, str]]:
    with pytest.MonkeyPatch.context() as mp:
        for name, value in moto_server.env.items():
            mp.setenv(name, value)
        yield dict(moto_server.env)


@pytest.fixture(scope="module")
def stack(moto_server: Any, env: dict[str, str], lambda_zip: Path) -> DeployResult:
    name = moto_server.unique("pp-Deploy")
    return deploy(
        name,
        lambda_zip,
        options=StackOptions(batch_size=200, shard_count=2),
        artifacts_bucket=moto_server.unique("pp-artifacts"),
        poll_s=0.1,
    )


def test_the_stack_is_created(stack: DeployResult) -> None:
    assert stack.created
    assert {"StreamName", "TableName", "BucketName", "CollectorUrl"} <= set(stack.outputs)
    assert stack.outputs["StreamUrl"] == f"kinesis://{stack.outputs['StreamName']}"
    assert stack.outputs["StoreUrl"] == f"dynamodb://{stack.outputs['TableName']}"
    assert stack.outputs["LakeUrl"] == f"s3://{stack.outputs['BucketName']}/lake"
    assert client("s3").head_object(Bucket=stack.artifacts_bucket, Key=stack.package_key)


def test_stream_table_bucket_and_queue_exist(stack: DeployResult) -> None:
    summary = client("kinesis").describe_stream_summary(StreamName=stack.outputs["StreamName"])
    assert summary["StreamDescriptionSummary"]["OpenShardCount"] == 2

    dynamodb = client("dynamodb")
    table = dynamodb.describe_table(TableName=stack.outputs["TableName"])["Table"]
    assert [k["AttributeName"] for k in table["KeySchema"]] == ["pk", "sk"]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    gsis = {
        g["IndexName"]: [k["AttributeName"] for k in g["KeySchema"]]
        for g in table["GlobalSecondaryIndexes"]
    }
    assert gsis == {GSI_BY_SK: ["_isk", "_ipk"], GSI_BY_VENDOR: ["vendor_pk", "sk"]}
    ttl = dynamodb.describe_time_to_live(TableName=stack.outputs["TableName"])
    assert ttl["TimeToLiveDescription"]["AttributeName"] == TTL_ATTRIBUTE
    assert ttl["TimeToLiveDescription"]["TimeToLiveStatus"] == "ENABLED"
    checkpoints = f"{stack.outputs['StreamName']}-playpulse-checkpoints"
    assert dynamodb.describe_table(TableName=checkpoints)["Table"]["TableStatus"] == "ACTIVE"

    rules = client("s3").get_bucket_lifecycle_configuration(Bucket=stack.outputs["BucketName"])[
        "Rules"
    ]
    transitions = [t for r in rules for t in r.get("Transitions", [])]
    assert {"Days": 30, "StorageClass": "STANDARD_IA"} in transitions

    queue_url = stack.outputs["DeadLetterQueueUrl"]
    attrs = client("sqs").get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
    assert attrs["Attributes"]["QueueArn"].endswith(queue_url.rsplit("/", 1)[-1])


def test_functions_roles_and_event_source_mapping_exist(stack: DeployResult) -> None:
    aws_lambda = client("lambda")
    iam = client("iam")
    resources = stack_resources(stack.stack)
    processor = aws_lambda.get_function(FunctionName=stack.outputs["ProcessorFunctionName"])
    collector = aws_lambda.get_function(FunctionName=stack.outputs["CollectorFunctionName"])
    assert processor["Configuration"]["Handler"] == PROCESSOR_HANDLER
    assert collector["Configuration"]["Handler"] == COLLECTOR_HANDLER
    variables = processor["Configuration"]["Environment"]["Variables"]
    for var, output in (
        ("PLAYPULSE_STREAM_URL", "StreamUrl"),
        ("PLAYPULSE_STORE_URL", "StoreUrl"),
        ("PLAYPULSE_LAKE_URL", "LakeUrl"),
    ):
        assert variables[var] == stack.outputs[output]
    for role in ("ProcessorRole", "CollectorRole"):
        found = iam.get_role(RoleName=resources[role])["Role"]
        assert found["Arn"].endswith(resources[role])
    assert processor["Configuration"]["Role"].endswith(resources["ProcessorRole"])
    assert collector["Configuration"]["Role"].endswith(resources["CollectorRole"])

    (mapping,) = aws_lambda.list_event_source_mappings(
        FunctionName=stack.outputs["ProcessorFunctionName"]
    )["EventSourceMappings"]
    stream_arn = client("kinesis").describe_stream_summary(StreamName=stack.outputs["StreamName"])[
        "StreamDescriptionSummary"
    ]["StreamARN"]
    assert mapping["EventSourceArn"] == stream_arn
    assert mapping["BatchSize"] == 200
    url = aws_lambda.get_function_url_config(FunctionName=stack.outputs["CollectorFunctionName"])
    assert url["FunctionUrl"] == stack.outputs["CollectorUrl"]
    assert url["AuthType"] == "NONE"
    dashboard = client("cloudwatch").get_dashboard(DashboardName=stack.stack)
    assert stack.outputs["StreamName"] in dashboard["DashboardBody"]

    # The daily keep-alive: an EventBridge rule calling the processor.
    events = client("events")
    rule = events.describe_rule(Name=resources["KeepAliveSchedule"])
    assert rule["ScheduleExpression"] == "rate(1 day)"
    (target,) = events.list_targets_by_rule(Rule=resources["KeepAliveSchedule"])["Targets"]
    assert target["Arn"] == processor["Configuration"]["FunctionArn"]


def test_glue_athena_and_alarms_are_created_through_their_apis(stack: DeployResult) -> None:
    glue = client("glue")
    database = stack.outputs["GlueDatabase"]
    for table in LAKE_TABLES:
        found = glue.get_table(DatabaseName=database, Name=table)["Table"]
        assert found["PartitionKeys"] == [{"Name": "event_date", "Type": "string"}]
        assert found["Parameters"]["projection.enabled"] == "true"
        location = f"s3://{stack.outputs['BucketName']}/lake/{table}/"
        assert found["StorageDescriptor"]["Location"] == location
        assert found["Parameters"]["storage.location.template"] == (
            location + "event_date=${event_date}/"
        )

    athena = client("athena")
    ids = athena.list_named_queries(WorkGroup=database)["NamedQueryIds"]
    queries = {
        q["Name"]: q for q in (athena.get_named_query(NamedQueryId=i)["NamedQuery"] for i in ids)
    }
    expected = {n for n, s in CATALOG.items() if s.sql and not s.needs_store}
    assert set(queries) == {f"playpulse-{n}" for n in expected}
    for name in expected:
        assert queries[f"playpulse-{name}"]["QueryString"] == athena_sql(name)
        assert queries[f"playpulse-{name}"]["Database"] == database

    alarms = {
        a["AlarmName"]: a
        for a in client("cloudwatch").describe_alarms(AlarmNamePrefix=stack.stack)["MetricAlarms"]
    }
    assert len(alarms) == len(ALARMS)
    age = alarms[f"{stack.stack}-iterator-age"]
    assert (age["MetricName"], age["Threshold"]) == ("IteratorAge", 1000)
    assert age["Dimensions"] == [
        {"Name": "FunctionName", "Value": stack.outputs["ProcessorFunctionName"]}
    ]
    assert alarms[f"{stack.stack}-error-rate"]["Threshold"] == 1
    dlq = alarms[f"{stack.stack}-dead-letters"]
    assert dlq["Dimensions"] == [
        {"Name": "QueueName", "Value": stack.outputs["DeadLetterQueueUrl"].rsplit("/", 1)[-1]}
    ]
    assert sorted(stack.api_created) == sorted(
        [
            "CollectorUrl",
            "GlueDatabase",
            "AthenaWorkGroup",
            *(f"GlueTable{t.capitalize()}" for t in LAKE_TABLES),
            *(f"AthenaQuery{''.join(p.capitalize() for p in n.split('_'))}" for n in expected),
            *ALARMS.values(),
            # properties moto's CloudFormation leaves out
            "Table.TimeToLiveSpecification",
            "Bucket.LifecycleConfiguration",
        ]
    )


def test_second_deploy_through_the_cli_updates_and_prints_sourceable_exports(
    stack: DeployResult, env: dict[str, str], lambda_zip: Path
) -> None:
    command = [
        sys.executable,
        "-m",
        "playpulse",
        "aws",
        "deploy",
        "--stack",
        stack.stack,
        "--package",
        str(lambda_zip),
        "--artifacts-bucket",
        stack.artifacts_bucket,
        "--batch-size",
        "50",
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, **env}, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert f"stack {stack.stack} updated" in done.stderr
    assert "created" not in done.stderr.replace(f"stack {stack.stack}", "")  # nothing new
    (mapping,) = client("lambda").list_event_source_mappings(
        FunctionName=stack.outputs["ProcessorFunctionName"]
    )["EventSourceMappings"]
    assert mapping["BatchSize"] == 50

    shell = subprocess.run(
        [
            "bash",
            "-c",
            'eval "$(cat)"; echo "$PLAYPULSE_STREAM_URL|$PLAYPULSE_STORE_URL|$PLAYPULSE_LAKE_URL"',
        ],
        input=done.stdout,
        capture_output=True,
        text=True,
        check=True,
    )
    assert shell.stdout.strip() == "|".join(
        stack.outputs[k] for k in ("StreamUrl", "StoreUrl", "LakeUrl")
    )


def test_export_lines_quote_for_the_shell() -> None:
    outputs = {
        "StreamUrl": "kinesis://a b",
        "StoreUrl": "dynamodb://it's",
        "LakeUrl": "s3://b/$HOME`x`",
        "CollectorUrl": "https://x.lambda-url.us-east-1.on.aws/",
        "DeadLetterQueueUrl": "https://sqs.us-east-1.amazonaws.com/1/q",
    }
    text = export_lines(outputs)
    shell = subprocess.run(
        [
            "bash",
            "-c",
            'eval "$(cat)"; printf "%s\\n" "$PLAYPULSE_STREAM_URL" '
            '"$PLAYPULSE_STORE_URL" "$PLAYPULSE_LAKE_URL"',
        ],
        input=text,
        capture_output=True,
        text=True,
        check=True,
    )
    assert shell.stdout.splitlines() == [
        outputs["StreamUrl"],
        outputs["StoreUrl"],
        outputs["LakeUrl"],
    ]
    assert "# collector: POST https://x.lambda-url.us-east-1.on.aws/v1/events" in text
    assert "# dead-letter queue (run-processor --dlq-url): https://sqs." in text


def test_deploy_refuses_a_bad_stack_name_or_a_missing_package(
    env: dict[str, str], lambda_zip: Path, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="stack name"):
        deploy("1-bad_name", lambda_zip)
    with pytest.raises(ConfigError, match="at most 44"):
        deploy("a" * 45, lambda_zip)  # playpulse-<45 letters>-processor: 65 > 64
    with pytest.raises(ConfigError, match="does not exist"):
        deploy("good-name", tmp_path / "missing.zip")
