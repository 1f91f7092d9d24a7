"""Analytics: the metric catalog and ad hoc SQL over the lake and the real-time store."""

from playpulse.query.catalog import CATALOG, QueryError, QueryParams, QuerySpec, run_query
from playpulse.query.engine import connect

# The enrichment's queries (content catalog, similar content, genre and mood metrics)
# register themselves in CATALOG when imported.
import playpulse.query.catalog_enrich  # noqa: F401  isort: skip

__all__ = ["CATALOG", "QueryError", "QueryParams", "QuerySpec", "connect", "run_query"]
