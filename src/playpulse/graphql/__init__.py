"""GraphQL at ``/graphql`` for marketplace front ends (#16 item 4).

:func:`mount_graphql` adds a strawberry-graphql router to a collector app:

- ``mutation trackUserInteraction(eventType, vendorId, customerId, productId, orderId,
  metadata)``: the marketplace shape (:mod:`playpulse.sources.shapes.marketplace`),
  ingested through the collector's own path (mapping, validation, quarantine, privacy
  hook, durable append). Needs a write key (``Authorization: Bearer``) when the server
  has write keys. Answers ``{success, eventId, errors}``; a payload that cannot be
  mapped is ``success: false`` with per-field errors, and quarantined.
- ``query getVendorAnalytics(vendorId, startDate, endDate, period, timezone)``: a
  vendor's ``summary`` (the catalog's ``funnel``), ``dailyMetrics`` (``vendor_daily``,
  summed per ``period``: DAY, WEEK from Monday, MONTH) and ``topProducts``
  (``top_products``). Dates are inclusive, in ``timezone`` (IANA, default UTC). Needs a
  read key like the read API (:class:`~playpulse.api.auth.ReadAuth`); a vendor-scoped
  key reads only its vendor.

Errors are GraphQL errors (HTTP 200 with ``errors``) whose ``extensions.code`` is
``UNAUTHENTICATED``, ``FORBIDDEN``, ``BAD_USER_INPUT`` or ``UNAVAILABLE`` (retry later).
No GraphiQL page is served (it would load from a CDN).
"""

from playpulse.graphql.schema import build_schema, mount_graphql

__all__ = ["build_schema", "mount_graphql"]
