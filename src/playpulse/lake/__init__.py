"""The Parquet lake: every accepted event and every finished play, queryable history."""

from playpulse.lake.writer import LakeFile, LakeWriter

__all__ = ["LakeFile", "LakeWriter"]
