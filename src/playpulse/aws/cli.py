"""``playpulse aws ...``: package, template, deploy and the local Lambda runner."""

from __future__ import annotations

import typer

aws_app = typer.Typer(
    help="Run playpulse on AWS: Kinesis, Lambda, DynamoDB, S3 (needs the aws extra).",
    no_args_is_help=True,
)
