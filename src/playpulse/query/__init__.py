"""Analytics: the metric catalog and ad hoc SQL over the lake and the real-time store."""

from playpulse.query.catalog import CATALOG, QueryError, QueryParams, QuerySpec, run_query
from playpulse.query.engine import connect

__all__ = ["CATALOG", "QueryError", "QueryParams", "QuerySpec", "connect", "run_query"]
