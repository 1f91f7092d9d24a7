"""``playpulse aws ...``: package, template, deploy and the local Lambda runner."""

from __future__ import annotations

from typing import Annotated

import typer

from playpulse.errors import ConfigError

aws_app = typer.Typer(
    help="Run playpulse on AWS: Kinesis, Lambda, DynamoDB, S3 (needs the aws extra).",
    no_args_is_help=True,
)


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
