"""playpulse on AWS: the clients every AWS backend shares, the Lambda handlers, the
CloudFormation stack and ``playpulse aws`` (needs the ``aws`` extra: boto3)."""
