"""``playpulse aws deploy``: create or update the stack, then say where its parts are.

:func:`deploy` uploads the Lambda package (and the template, which is larger than
CloudFormation's inline limit) to an artifacts bucket it creates if needed, creates or
updates the stack of :func:`playpulse.aws.template.build_template` and waits for it; then
creates through their own APIs the stack's resources CloudFormation did not create
(:data:`API_CREATED_TYPES`: on AWS it creates them all and nothing happens here; moto's
CloudFormation accepts Glue, Athena, CloudWatch alarm and Function URL resources
without creating them). :func:`export_lines` gives the stack's URLs as shell
``export`` lines (``PLAYPULSE_STREAM_URL``, ``PLAYPULSE_STORE_URL``,
``PLAYPULSE_LAKE_URL``). Every client honours ``AWS_ENDPOINT_URL``
(:func:`playpulse.aws.clients.client`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playpulse.aws.clients import client, error_code, region
from playpulse.aws.template import StackOptions, build_template
from playpulse.errors import ConfigError, PlaypulseError


class DeployError(PlaypulseError):
    """The stack could not be created or updated (the message says which step and why)."""


#: Resource types :func:`ensure_resources` creates through their own API when the stack
#: does not list them as created. (It also enables a created table's TTL when the
#: template asks for it and it is off: moto's CloudFormation leaves it off.)
API_CREATED_TYPES = (
    "AWS::Glue::Database",
    "AWS::Glue::Table",
    "AWS::Athena::WorkGroup",
    "AWS::Athena::NamedQuery",
    "AWS::CloudWatch::Alarm",
    "AWS::Lambda::Url",
)
#: The stack outputs printed as ``export`` lines, by variable.
EXPORTS = {
    "PLAYPULSE_STREAM_URL": "StreamUrl",
    "PLAYPULSE_STORE_URL": "StoreUrl",
    "PLAYPULSE_LAKE_URL": "LakeUrl",
}
_DONE = re.compile(r"^(CREATE|UPDATE|UPDATE_ROLLBACK|ROLLBACK|DELETE)_(COMPLETE|FAILED)$")
_GOOD = ("CREATE_COMPLETE", "UPDATE_COMPLETE")


@dataclass
class DeployResult:
    """What :func:`deploy` did: the ``stack`` name, whether it was ``created`` (else
    updated or unchanged), its ``outputs`` (name -> value), the ``package_key`` in the
    ``artifacts_bucket``, and the logical ids of the resources created through their own
    APIs (``api_created``)."""

    stack: str
    created: bool
    outputs: dict[str, str]
    artifacts_bucket: str
    package_key: str
    api_created: list[str] = field(default_factory=list)


def default_artifacts_bucket() -> str:
    """``playpulse-artifacts-<account>-<region>``: one per account and region."""
    account = client("sts").get_caller_identity()["Account"]
    return f"playpulse-artifacts-{account}-{region()}"


def ensure_bucket(name: str) -> None:
    """Create the S3 bucket ``name`` unless it exists (in the client's region)."""
    s3 = client("s3")
    try:
        s3.head_bucket(Bucket=name)
        return
    except Exception as exc:
        if error_code(exc) not in ("404", "NoSuchBucket", "NotFound"):
            raise DeployError(f"deploy: artifacts bucket {name}: {exc}") from exc
    kwargs: dict[str, Any] = {"Bucket": name}
    if region() != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region()}
    s3.create_bucket(**kwargs)


def upload(bucket: str, key: str, body: bytes) -> None:
    """Put ``body`` at ``s3://bucket/key`` unless an object of that size is there
    (keys are content-addressed, so that object holds the same bytes)."""
    s3 = client("s3")
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
        if int(head["ContentLength"]) == len(body):
            return
    except Exception as exc:
        if error_code(exc) not in ("404", "NoSuchKey", "NotFound"):
            raise DeployError(f"deploy: s3://{bucket}/{key}: {exc}") from exc
    s3.put_object(Bucket=bucket, Key=key, Body=body)


def _stack_status(cfn: Any, stack: str) -> str | None:
    try:
        stacks = cfn.describe_stacks(StackName=stack)["Stacks"]
    except Exception as exc:
        if "does not exist" in str(exc):
            return None
        raise DeployError(f"deploy: describe stack {stack}: {exc}") from exc
    return str(stacks[0]["StackStatus"]) if stacks else None


def _wait(cfn: Any, stack: str, timeout_s: float, poll_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        status = _stack_status(cfn, stack)
        if status is None:
            raise DeployError(f"deploy: stack {stack} disappeared while it was being deployed")
        if _DONE.match(status):
            return status
        if time.monotonic() > deadline:
            raise DeployError(f"deploy: stack {stack} still {status} after {timeout_s:.0f} s")
        time.sleep(poll_s)


def _failure_reasons(cfn: Any, stack: str) -> str:
    try:
        events = cfn.describe_stack_events(StackName=stack)["StackEvents"]
    except Exception:  # pragma: no cover - the reason is a courtesy
        return ""
    reasons = [
        f"{e['LogicalResourceId']}: {e.get('ResourceStatusReason', '')}"
        for e in events
        if str(e.get("ResourceStatus", "")).endswith("FAILED")
    ]
    return "; ".join(reasons[:3])


def create_or_update(
    stack: str,
    template_url: str,
    parameters: dict[str, str | None],
    *,
    timeout_s: float = 1800.0,
    poll_s: float = 2.0,
) -> bool:
    """Create stack ``stack`` from the template at ``template_url`` with ``parameters``
    (a None value: the parameter's default on creation, its previous value on update),
    or update it when it exists (no change is no error); wait until it is done. Returns
    whether it was created. Raises :class:`DeployError` when it ends in another state
    than ``CREATE_COMPLETE`` / ``UPDATE_COMPLETE`` (with the failed resources' reasons)
    or is still busy after ``timeout_s``."""
    cfn = client("cloudformation")
    status = _stack_status(cfn, stack)
    if status == "ROLLBACK_COMPLETE":  # a failed creation: it can only be deleted
        cfn.delete_stack(StackName=stack)
        _wait_deleted(cfn, stack, timeout_s, poll_s)
        status = None
    created = status is None
    params: list[dict[str, Any]] = []
    for key, value in sorted(parameters.items()):
        if value is not None:
            params.append({"ParameterKey": key, "ParameterValue": value})
        elif not created:
            params.append({"ParameterKey": key, "UsePreviousValue": True})
    common: dict[str, Any] = {
        "StackName": stack,
        "TemplateURL": template_url,
        "Parameters": params,
        "Capabilities": ["CAPABILITY_IAM"],
    }
    try:
        if created:
            cfn.create_stack(**common, Tags=[{"Key": "app", "Value": "playpulse"}])
        else:
            _wait(cfn, stack, timeout_s, poll_s)  # a deploy in progress finishes first
            cfn.update_stack(**common)
    except Exception as exc:
        if "No updates are to be performed" in str(exc):
            return False
        raise DeployError(f"deploy: {'create' if created else 'update'} {stack}: {exc}") from exc
    status = _wait(cfn, stack, timeout_s, poll_s)
    if status not in _GOOD:
        raise DeployError(f"deploy: stack {stack} ended {status}: {_failure_reasons(cfn, stack)}")
    return created


def _wait_deleted(cfn: Any, stack: str, timeout_s: float, poll_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while _stack_status(cfn, stack) not in (None, "DELETE_COMPLETE"):
        if time.monotonic() > deadline:
            raise DeployError(f"deploy: stack {stack} not deleted after {timeout_s:.0f} s")
        time.sleep(poll_s)


def stack_outputs(stack: str) -> dict[str, str]:
    """The outputs of stack ``stack``, name -> value."""
    cfn = client("cloudformation")
    found = cfn.describe_stacks(StackName=stack)["Stacks"][0]
    return {o["OutputKey"]: str(o["OutputValue"]) for o in found.get("Outputs", [])}


def stack_resources(stack: str) -> dict[str, str]:
    """The resources stack ``stack`` created, logical id -> physical id."""
    cfn = client("cloudformation")
    listed = cfn.describe_stack_resources(StackName=stack)["StackResources"]
    return {
        r["LogicalResourceId"]: str(r["PhysicalResourceId"])
        for r in listed
        if r.get("PhysicalResourceId")
    }


class _Resolver:
    """Resolves the template's intrinsic functions (``Ref``, ``Fn::GetAtt``,
    ``Fn::Sub``, ``Fn::Join``) for the resources :func:`ensure_resources` creates."""

    def __init__(self, template: dict[str, Any], refs: dict[str, str]) -> None:
        self.template = template
        self.refs = refs

    def ref(self, name: str) -> str:
        if name in self.refs:
            return self.refs[name]
        raise DeployError(f"deploy: cannot resolve Ref {name}: the stack did not create it")

    def get_att(self, name: str, attr: str) -> str:
        kind = self.template["Resources"].get(name, {}).get("Type", "")
        physical = self.ref(name)
        if kind == "AWS::SQS::Queue" and attr == "QueueName":
            return physical.rstrip("/").rsplit("/", 1)[-1]
        if kind == "AWS::SQS::Queue" and attr == "Arn":
            attrs = client("sqs").get_queue_attributes(
                QueueUrl=physical, AttributeNames=["QueueArn"]
            )
            return str(attrs["Attributes"]["QueueArn"])
        if kind == "AWS::Lambda::Function" and attr == "Arn":
            return str(
                client("lambda").get_function(FunctionName=physical)["Configuration"]["FunctionArn"]
            )
        if kind == "AWS::S3::Bucket" and attr == "Arn":
            return f"arn:aws:s3:::{physical}"
        raise DeployError(f"deploy: cannot resolve Fn::GetAtt {name}.{attr}")

    def __call__(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self(v) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Fn::GetAtt":
                return self.get_att(arg[0], arg[1])
            if key == "Fn::Join":
                return str(arg[0]).join(str(self(v)) for v in arg[1])
            if key == "Fn::Sub":
                return self.sub(arg)
        return {k: self(v) for k, v in value.items()}

    def sub(self, text: str) -> str:
        def one(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if "." in name:
                logical, attr = name.split(".", 1)
                return self.get_att(logical, attr)
            return self.ref(name)

        return re.sub(r"\$\{([^}]+)\}", one, text)


def _exists(kind: str, props: dict[str, Any], queries: dict[str, set[str]]) -> bool:
    """Whether the resource of ``kind`` with (resolved) ``props`` exists already
    (``queries``: the named queries' names by work group, filled as needed)."""
    try:
        if kind == "AWS::Glue::Database":
            client("glue").get_database(Name=props["DatabaseInput"]["Name"])
        elif kind == "AWS::Glue::Table":
            client("glue").get_table(
                DatabaseName=props["DatabaseName"], Name=props["TableInput"]["Name"]
            )
        elif kind == "AWS::Athena::WorkGroup":
            found = client("athena").get_work_group(WorkGroup=props["Name"])
            return bool(found.get("WorkGroup"))  # (moto answers a null work group)
        elif kind == "AWS::Athena::NamedQuery":
            workgroup = props.get("WorkGroup", "primary")
            if workgroup not in queries:
                queries[workgroup] = _named_queries(workgroup)
            return props["Name"] in queries[workgroup]
        elif kind == "AWS::CloudWatch::Alarm":
            found = client("cloudwatch").describe_alarms(AlarmNames=[props["AlarmName"]])
            return bool(found["MetricAlarms"] or found.get("CompositeAlarms"))
        elif kind == "AWS::Lambda::Url":
            client("lambda").get_function_url_config(FunctionName=props["TargetFunctionArn"])
        return True
    except Exception as exc:
        code = error_code(exc)
        if code in ("EntityNotFoundException", "ResourceNotFoundException") or (
            code == "InvalidRequestException" and "not found" in str(exc).lower()
        ):
            return False
        raise DeployError(f"deploy: cannot tell whether {kind} exists: {exc}") from exc


def _named_queries(workgroup: str) -> set[str]:
    athena = client("athena")
    ids: list[str] = []
    token: str | None = None
    while True:
        kwargs: dict[str, Any] = {"WorkGroup": workgroup, "MaxResults": 50}
        if token:
            kwargs["NextToken"] = token
        page = athena.list_named_queries(**kwargs)
        ids.extend(page.get("NamedQueryIds", []))
        token = page.get("NextToken")
        if not token:
            break
    # One GetNamedQuery each (moto has no BatchGetNamedQuery); a stack has a few dozen.
    return {str(athena.get_named_query(NamedQueryId=i)["NamedQuery"]["Name"]) for i in ids}


def _create(kind: str, props: dict[str, Any]) -> str:
    """Create the resource of ``kind`` from its (resolved) CloudFormation ``props``;
    returns what ``Ref`` gives for it."""
    if kind == "AWS::Glue::Database":
        client("glue").create_database(
            CatalogId=props["CatalogId"], DatabaseInput=props["DatabaseInput"]
        )
        return str(props["DatabaseInput"]["Name"])
    if kind == "AWS::Glue::Table":
        client("glue").create_table(
            CatalogId=props["CatalogId"],
            DatabaseName=props["DatabaseName"],
            TableInput=props["TableInput"],
        )
        return str(props["TableInput"]["Name"])
    if kind == "AWS::Athena::WorkGroup":
        config = props.get("WorkGroupConfiguration", {})
        client("athena").create_work_group(
            Name=props["Name"],
            Description=props.get("Description", ""),
            Configuration={
                "ResultConfiguration": config.get("ResultConfiguration", {}),
                "EnforceWorkGroupConfiguration": config.get("EnforceWorkGroupConfiguration", True),
            },
        )
        return str(props["Name"])
    if kind == "AWS::Athena::NamedQuery":
        made = client("athena").create_named_query(
            Name=props["Name"],
            Description=props.get("Description", ""),
            Database=props["Database"],
            QueryString=props["QueryString"],
            WorkGroup=props.get("WorkGroup", "primary"),
        )
        return str(made["NamedQueryId"])
    if kind == "AWS::CloudWatch::Alarm":
        client("cloudwatch").put_metric_alarm(**props)
        return str(props["AlarmName"])
    if kind == "AWS::Lambda::Url":
        made = client("lambda").create_function_url_config(
            FunctionName=props["TargetFunctionArn"],
            AuthType=props["AuthType"],
            **({"Cors": props["Cors"]} if "Cors" in props else {}),
        )
        return str(made["FunctionUrl"])
    raise ConfigError(f"deploy: no API creation for {kind}")  # pragma: no cover


def ensure_resources(
    stack: str,
    template: dict[str, Any],
    parameters: dict[str, str | None],
    log: Callable[[str], None] = lambda _msg: None,
) -> list[str]:
    """Create through their own APIs the resources of ``template`` of the
    :data:`API_CREATED_TYPES` that stack ``stack`` did not create and that do not exist
    yet (found by name), and sets the properties moto's CloudFormation leaves out where
    they are missing (a table's TTL, a bucket's lifecycle rules); returns their logical
    ids (``<Table>.TimeToLiveSpecification``, ``<Bucket>.LifecycleConfiguration`` for
    properties). ``log`` gets one line per resource or property created. Raises
    :class:`DeployError` when one cannot be created."""
    account = client("sts").get_caller_identity()["Account"]
    refs: dict[str, str] = {
        "AWS::StackName": stack,
        "AWS::Region": region(),
        "AWS::AccountId": str(account),
        "AWS::Partition": "aws",
        "AWS::URLSuffix": "amazonaws.com",
    }
    for name, spec in template.get("Parameters", {}).items():
        given = parameters.get(name)
        refs[name] = given if given is not None else str(spec.get("Default", ""))
    created_by_stack = stack_resources(stack)
    refs.update(created_by_stack)
    resolve = _Resolver(template, refs)
    made: list[str] = []
    queries: dict[str, set[str]] = {}
    for logical, resource in template["Resources"].items():
        kind = resource["Type"]
        if kind == "AWS::DynamoDB::Table" and logical in created_by_stack:
            if _ensure_ttl(created_by_stack[logical], resource.get("Properties", {})):
                made.append(f"{logical}.TimeToLiveSpecification")
                log(f"enabled {logical}'s TTL through its API")
            continue
        if kind == "AWS::S3::Bucket" and logical in created_by_stack:
            if _ensure_lifecycle(created_by_stack[logical], resource.get("Properties", {})):
                made.append(f"{logical}.LifecycleConfiguration")
                log(f"set {logical}'s lifecycle rules through its API")
            continue
        if kind not in API_CREATED_TYPES or logical in created_by_stack:
            continue
        props = resolve(resource.get("Properties", {}))
        if kind == "AWS::Lambda::Url":
            # The function's name is enough for the API (and needs no account id).
            props["TargetFunctionArn"] = refs[
                resource["Properties"]["TargetFunctionArn"]["Fn::GetAtt"][0]
            ]
        if _exists(kind, props, queries):
            refs[logical] = _physical_name(kind, props)
            continue
        try:
            refs[logical] = _create(kind, props)
        except PlaypulseError:
            raise
        except Exception as exc:
            raise DeployError(f"deploy: create {logical} ({kind}): {exc}") from exc
        made.append(logical)
        log(f"created {logical} ({kind}) through its API")
    return made


def _ensure_ttl(table: str, props: dict[str, Any]) -> bool:
    """Enable the TTL of DynamoDB ``table`` its template ``props`` ask for, unless it is
    (moto's CloudFormation leaves it off). Returns whether it had to be enabled."""
    spec = props.get("TimeToLiveSpecification")
    if not spec or not spec.get("Enabled"):
        return False
    dynamodb = client("dynamodb")
    try:
        now = dynamodb.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
        if now.get("TimeToLiveStatus") in ("ENABLED", "ENABLING"):
            return False
        dynamodb.update_time_to_live(
            TableName=table,
            TimeToLiveSpecification={"AttributeName": spec["AttributeName"], "Enabled": True},
        )
    except Exception as exc:
        raise DeployError(f"deploy: enable the TTL of table {table}: {exc}") from exc
    return True


def _lifecycle_rule(rule: dict[str, Any]) -> dict[str, Any]:
    """A CloudFormation lifecycle rule in the S3 API's shape."""
    out: dict[str, Any] = {
        "ID": rule["Id"],
        "Status": rule["Status"],
        "Filter": {"Prefix": rule.get("Prefix", "")},
    }
    if "Transitions" in rule:
        out["Transitions"] = [
            {"Days": t["TransitionInDays"], "StorageClass": t["StorageClass"]}
            for t in rule["Transitions"]
        ]
    if "ExpirationInDays" in rule:
        out["Expiration"] = {"Days": rule["ExpirationInDays"]}
    return out


def _ensure_lifecycle(bucket: str, props: dict[str, Any]) -> bool:
    """Put the lifecycle rules of bucket ``bucket``'s template ``props`` when it has
    none (moto's CloudFormation leaves them out). Returns whether it had to."""
    rules = props.get("LifecycleConfiguration", {}).get("Rules")
    if not rules:
        return False
    s3 = client("s3")
    try:
        s3.get_bucket_lifecycle_configuration(Bucket=bucket)
        return False
    except Exception as exc:
        if error_code(exc) != "NoSuchLifecycleConfiguration":
            raise DeployError(f"deploy: lifecycle of bucket {bucket}: {exc}") from exc
    try:
        s3.put_bucket_lifecycle_configuration(
            Bucket=bucket,
            LifecycleConfiguration={"Rules": [_lifecycle_rule(r) for r in rules]},
        )
    except Exception as exc:
        raise DeployError(f"deploy: set the lifecycle of bucket {bucket}: {exc}") from exc
    return True


def _physical_name(kind: str, props: dict[str, Any]) -> str:
    if kind == "AWS::Glue::Database":
        return str(props["DatabaseInput"]["Name"])
    if kind == "AWS::Glue::Table":
        return str(props["TableInput"]["Name"])
    if kind == "AWS::CloudWatch::Alarm":
        return str(props["AlarmName"])
    if kind == "AWS::Lambda::Url":
        config = client("lambda").get_function_url_config(FunctionName=props["TargetFunctionArn"])
        return str(config["FunctionUrl"])
    return str(props.get("Name", ""))


def max_stack_name(options: StackOptions) -> int:
    """The longest stack name ``options`` allow: a function's name,
    ``<name_prefix>-<stack>-processor``, has at most 64 characters (44 with the default
    prefix)."""
    return 64 - len(f"{options.name_prefix}--processor")


def glue_database_name(stack: str) -> str:
    """The Glue database of stack ``stack``: its name in lower case, ``_`` for anything
    but letters and digits (``my-Stack`` -> ``my_stack``)."""
    return re.sub(r"[^a-z0-9_]", "_", stack.lower())[:255]


def deploy(
    stack: str,
    package: Path,
    *,
    options: StackOptions | None = None,
    artifacts_bucket: str | None = None,
    write_keys: str | None = None,
    timeout_s: float = 1800.0,
    poll_s: float = 2.0,
    log: Callable[[str], None] = lambda _msg: None,
) -> DeployResult:
    """Deploy stack ``stack`` with the Lambda package zip ``package``: upload the zip and
    the template to ``artifacts_bucket`` (default :func:`default_artifacts_bucket`,
    created if missing) under content-addressed keys, create or update the stack
    (:func:`create_or_update`), create what CloudFormation did not
    (:func:`ensure_resources`) and read the outputs (``CollectorUrl`` from the Function
    URL when the stack has no value for it). ``write_keys``: the collector's
    (comma-separated; ``""``: open); None keeps the stack's (none on creation).

    Raises :class:`~playpulse.errors.ConfigError` for a bad stack name, options or a
    missing package, and :class:`DeployError` when a step fails.
    """
    options = options or StackOptions()
    longest = max_stack_name(options)
    if not re.fullmatch(rf"[A-Za-z][A-Za-z0-9-]{{0,{longest - 1}}}", stack):
        raise ConfigError(
            f"deploy: stack name '{stack}' must start with a letter and hold only letters, "
            f"digits and '-' (at most {longest}: the functions' names hold it)"
        )
    package = Path(package)
    if not package.is_file():
        raise ConfigError(f"deploy: package {package} does not exist (playpulse aws package)")
    bucket = artifacts_bucket or default_artifacts_bucket()
    ensure_bucket(bucket)
    body = package.read_bytes()
    package_key = f"playpulse/{stack}/lambda-{hashlib.sha256(body).hexdigest()[:16]}.zip"
    log(f"uploading {package} ({len(body) / 1e6:.1f} MB) to s3://{bucket}/{package_key}")
    upload(bucket, package_key, body)
    template = build_template(options)
    text = json.dumps(template, separators=(",", ":")).encode()
    template_key = f"playpulse/{stack}/template-{hashlib.sha256(text).hexdigest()[:16]}.json"
    upload(bucket, template_key, text)
    url = f"https://{bucket}.s3.{region()}.amazonaws.com/{template_key}"
    exists = _stack_exists(stack)
    if write_keys is None and not exists:
        write_keys = ""  # given, not defaulted: moto keeps only given values for an update
    parameters: dict[str, str | None] = {
        "CollectorWriteKeys": write_keys,
        "CodeBucket": bucket,
        "CodeKey": package_key,
        "GlueDatabaseName": glue_database_name(stack),
        # An emulator (AWS_ENDPOINT_URL: moto) cannot resolve the Function URL's
        # attribute in an output; the URL is then read from Lambda below.
        "CollectorUrlOutput": "false" if _emulated() else "true",
    }
    log(f"{'updating' if exists else 'creating'} stack {stack}")
    created = create_or_update(stack, url, parameters, timeout_s=timeout_s, poll_s=poll_s)
    api_created = ensure_resources(stack, template, parameters, log)
    outputs = stack_outputs(stack)
    if not outputs.get("CollectorUrl"):
        functions = stack_resources(stack)
        if "CollectorFunction" in functions:
            config = client("lambda").get_function_url_config(
                FunctionName=functions["CollectorFunction"]
            )
            outputs["CollectorUrl"] = str(config["FunctionUrl"])
    missing = [o for o in EXPORTS.values() if not outputs.get(o)]
    if missing:
        raise DeployError(f"deploy: stack {stack} has no outputs {', '.join(missing)}")
    return DeployResult(stack, created, outputs, bucket, package_key, api_created)


def _emulated() -> bool:
    return bool(os.environ.get("AWS_ENDPOINT_URL"))


def _stack_exists(stack: str) -> bool:
    return _stack_status(client("cloudformation"), stack) is not None


def export_lines(outputs: dict[str, str]) -> str:
    """The stack's URLs as shell lines: ``export PLAYPULSE_STREAM_URL=...`` (and the
    store's and the lake's), values quoted for the shell, then the collector's URL and
    the dead-letter queue's as comments. ``eval "$(playpulse aws deploy ...)"`` sets them."""
    lines = [f"export {var}={shlex.quote(outputs[key])}" for var, key in EXPORTS.items()]
    if outputs.get("CollectorUrl"):
        lines.append(f"# collector: POST {outputs['CollectorUrl'].rstrip('/')}/v1/events")
    if outputs.get("DeadLetterQueueUrl"):
        lines.append(
            f"# dead-letter queue (run-processor --dlq-url): {outputs['DeadLetterQueueUrl']}"
        )
    return "\n".join(lines) + "\n"
