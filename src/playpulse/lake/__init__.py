"""The Parquet lake: every accepted event and every finished play, queryable history."""

from playpulse.lake.factory import lake_exists, open_lake
from playpulse.lake.writer import CorruptFile, LakeFile, LakeWriter, corrupt_files

__all__ = ["CorruptFile", "LakeFile", "LakeWriter", "corrupt_files", "lake_exists", "open_lake"]
