"""``playpulse aws ...``: package, template, deploy and the local Lambda runner."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from playpulse.errors import ConfigError

aws_app = typer.Typer(
    help="Run playpulse on AWS: Kinesis, Lambda, DynamoDB, S3 (needs the aws extra).",
    no_args_is_help=True,
)


# --- the stack: template, package, deploy -----------------------------------------------


@aws_app.command("template")
def template(
    fmt: Annotated[
        str, typer.Option("--format", help="json or yaml.", case_sensitive=False)
    ] = "json",
    shards: Annotated[int, typer.Option(min=1, help="Kinesis shards.")] = 2,
    batch_size: Annotated[
        int, typer.Option(min=1, max=10_000, help="Records per processor invocation.")
    ] = 1000,
    cold_storage_days: Annotated[
        int, typer.Option(min=0, help="Days before lake objects move to STANDARD_IA.")
    ] = 30,
) -> None:
    """Print the CloudFormation template of the stack: Kinesis stream, DynamoDB table,
    S3 lake bucket, both Lambda functions, Glue tables, Athena named queries, CloudWatch
    alarms and dashboard."""
    from playpulse.aws.template import StackOptions, build_template, to_text

    options = StackOptions(
        shard_count=shards, batch_size=batch_size, cold_storage_days=cold_storage_days
    )
    typer.echo(to_text(build_template(options), fmt.lower()), nl=False)


@aws_app.command("package")
def package(
    out: Annotated[Path, typer.Option("--out", help="The zip to write.")] = Path(
        "playpulse-lambda.zip"
    ),
    no_deps: Annotated[
        bool, typer.Option("--no-deps", help="Only playpulse, without its dependencies.")
    ] = False,
    full: Annotated[
        bool,
        typer.Option("--full", help="Keep the dependencies the handlers do not import."),
    ] = False,
    python_version: Annotated[
        str, typer.Option(help="The Lambda runtime's Python (3.12 or 3.11).")
    ] = "3.12",
) -> None:
    """Build the Lambda deployment zip: playpulse and its runtime dependencies as
    manylinux wheels for the Lambda runtime (without boto3, which the runtime has).
    Prints the zip's path, size and SHA-256."""
    from playpulse.aws.package import build_package

    info = build_package(out, no_deps=no_deps, full=full, python_version=python_version)
    typer.echo(
        f"{info.path}: {info.size_bytes / 1e6:.1f} MB zipped, "
        f"{info.unzipped_bytes / 1e6:.1f} MB unzipped (Lambda limit 250 MB), "
        f"sha256 {info.sha256}"
    )


@aws_app.command("deploy")
def deploy(
    stack: Annotated[str, typer.Option("--stack", help="The CloudFormation stack's name.")],
    package_file: Annotated[
        Path | None,
        typer.Option("--package", help="The Lambda zip (default: build one now)."),
    ] = None,
    artifacts_bucket: Annotated[
        str | None,
        typer.Option(help="Bucket for the zip and template (default: one per account)."),
    ] = None,
    write_keys: Annotated[
        str | None,
        typer.Option(
            envvar="PLAYPULSE_WRITE_KEYS",
            show_envvar=True,
            help="The collector's write keys, comma-separated (default: keep the stack's).",
        ),
    ] = None,
    shards: Annotated[int, typer.Option(min=1, help="Kinesis shards.")] = 2,
    batch_size: Annotated[
        int, typer.Option(min=1, max=10_000, help="Records per processor invocation.")
    ] = 1000,
) -> None:
    """Create or update the stack and wait for it; then create what CloudFormation did
    not (on emulators), and print the stack's PLAYPULSE_STREAM_URL, PLAYPULSE_STORE_URL
    and PLAYPULSE_LAKE_URL as shell export lines: eval "$(playpulse aws deploy ...)".
    Progress goes to stderr."""
    import tempfile

    from playpulse.aws.deploy import deploy as deploy_stack
    from playpulse.aws.deploy import export_lines
    from playpulse.aws.package import build_package
    from playpulse.aws.template import StackOptions

    def log(line: str) -> None:
        typer.echo(line, err=True)

    options = StackOptions(shard_count=shards, batch_size=batch_size)
    with tempfile.TemporaryDirectory(prefix="playpulse-deploy-") as tmp:
        if package_file is None:
            log("building the Lambda package (playpulse aws package)")
            package_file = build_package(Path(tmp) / "playpulse-lambda.zip").path
        result = deploy_stack(
            stack,
            package_file,
            options=options,
            artifacts_bucket=artifacts_bucket,
            write_keys=write_keys,
            log=log,
        )
    log(f"stack {stack} {'created' if result.created else 'updated'}")
    typer.echo(export_lines(result.outputs), nl=False)


# --- the local Lambda runner ------------------------------------------------------------


@aws_app.command("run-processor")
def run_processor(
    batch_size: Annotated[
        int, typer.Option(min=1, max=10_000, help="Records per invocation (BatchSize).")
    ] = 100,
    max_retries: Annotated[
        int,
        typer.Option(min=0, help="Retries of a failing record before the dead-letter path."),
    ] = 2,
    dlq_url: Annotated[
        str | None,
        typer.Option(help="SQS queue URL of the dead-letter queue (default: the quarantine)."),
    ] = None,
    once: Annotated[
        bool, typer.Option("--once", help="Stop when every shard is caught up.")
    ] = False,
) -> None:
    """Poll the stream and call the Lambda processor handler with the exact Kinesis
    event Lambda sends, with its event source mapping's retries, bisecting and
    dead-letter path: for machines where Lambda cannot run. Settings come from the
    environment (PLAYPULSE_STREAM_URL, PLAYPULSE_STORE_URL, PLAYPULSE_LAKE_URL ...).
    Stops on SIGINT or SIGTERM, after the batch in hand."""
    import signal
    import threading

    from pydantic import ValidationError

    from playpulse.aws.processor_handler import from_settings
    from playpulse.aws.runner import EventSourceRunner, MappingOptions
    from playpulse.config import Settings

    try:
        settings = Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from None
    handler = from_settings(settings)
    options = MappingOptions(batch_size=batch_size, max_retries=max_retries, dlq_url=dlq_url)
    runner = EventSourceRunner(handler.stream, handler, options, handler.processor.quarantine)
    if once:
        stats = runner.run_once()
        typer.echo(
            f"{stats.records} records in {stats.invocations} invocations, "
            f"{stats.failed_invocations} failed, {stats.dead_lettered} dead-lettered"
        )
        return
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    runner.run(stop)
