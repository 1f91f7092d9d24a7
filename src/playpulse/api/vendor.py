"""Vendor-scoped reads: the row-level security a marketplace gives its vendors.

A read key limited to one vendor (``playpulse projects issue-key P --vendor V``) reaches
only the shop queries, and only with ``vendor_id = V``: the gateway
(:mod:`playpulse.projects.gateway`) puts the vendor in the request's ASGI
``scope["state"][VENDOR_STATE]``, which no client can set; the read API's routes check it
with :func:`vendor_of` and :func:`restrict`.
"""

from __future__ import annotations

from fastapi import Request

from playpulse.api.auth import ApiError
from playpulse.query.catalog import CATALOG, QueryParams

__all__ = ["VENDOR_QUERIES", "VENDOR_STATE", "forbid_vendor", "restrict", "vendor_of"]

#: The ASGI ``scope["state"]`` entry naming the vendor a request is limited to.
VENDOR_STATE = "playpulse_vendor"

#: The catalog queries a vendor-scoped key may run: those that answer per vendor (they
#: have a ``vendor_id`` column and honour the ``vendor_id`` filter).
VENDOR_QUERIES = frozenset(name for name, spec in CATALOG.items() if "vendor_id" in spec.columns)


def vendor_of(request: Request) -> str | None:
    """The vendor ``request`` is limited to, or ``None`` (no limit)."""
    state = request.scope.get("state") or {}
    vendor = state.get(VENDOR_STATE)
    return vendor if isinstance(vendor, str) and vendor else None


def forbid_vendor(request: Request, what: str) -> None:
    """Raise a 403 :class:`ApiError` when ``request`` is limited to a vendor: ``what``
    (a route's data) is not shop data of one vendor."""
    vendor = vendor_of(request)
    if vendor is not None:
        raise ApiError(
            403,
            "forbidden",
            f"this key sees only vendor {vendor!r}'s shop metrics, not {what}",
        )


def restrict(request: Request, name: str, params: QueryParams) -> QueryParams:
    """``params`` of catalog query ``name`` as ``request``'s vendor limit allows: with a
    limit, ``vendor_id`` set to the vendor. Raises a 403 :class:`ApiError` for a query
    that is not per vendor or a ``vendor_id`` of another vendor."""
    vendor = vendor_of(request)
    if vendor is None:
        return params
    if name not in VENDOR_QUERIES:
        forbid_vendor(request, f"query {name!r}")
    if params.vendor_id is not None and params.vendor_id != vendor:
        raise ApiError(403, "forbidden", f"this key sees only vendor {vendor!r}'s shop metrics")
    return params.model_copy(update={"vendor_id": vendor})
