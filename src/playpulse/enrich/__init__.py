"""Enrichment (#18): a content catalog, "listeners also played", genre and mood tags.

- :mod:`.catalog`: the catalog file (``DATA_DIR/enrich/catalog.db``): titles seen in
  events, imported metadata, similar titles, tags and the tag cache;
- :mod:`.similarity`: item-to-item cosine over listener-session co-occurrence;
- :mod:`.tags` and :mod:`.providers`: the local zero-shot tagger and the optional
  Anthropic one, and the rate-limited, cached tagging job;
- :mod:`.runner`: the scheduled jobs in the background (never on the ingest path);
- :mod:`.cli`: ``playpulse catalog ...`` and ``playpulse enrich ...``.

The catalog queries over it are in :mod:`playpulse.query.catalog_enrich`; the API routes
in :mod:`playpulse.api.enrich`; the guide is docs/enrichment.md.
"""

from playpulse.enrich.catalog import (
    EnrichError,
    catalog_path,
    content_entry,
    import_metadata,
    refresh_seen,
)
from playpulse.enrich.runner import EnrichmentRunner, Round
from playpulse.enrich.similarity import Neighbor, Session, compute_similar, refresh_similar

__all__ = [
    "EnrichError",
    "EnrichmentRunner",
    "Neighbor",
    "Round",
    "Session",
    "catalog_path",
    "compute_similar",
    "content_entry",
    "import_metadata",
    "refresh_seen",
    "refresh_similar",
]
