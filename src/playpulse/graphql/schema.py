"""The strawberry schema of ``/graphql`` and :func:`mount_graphql` (see the package)."""

from __future__ import annotations

import hmac
import json
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from enum import Enum
from typing import Any
from zoneinfo import ZoneInfo

import strawberry
from fastapi import FastAPI, Request
from graphql import GraphQLError
from starlette.concurrency import run_in_threadpool
from strawberry.fastapi import GraphQLRouter
from strawberry.scalars import JSON
from strawberry.types import Info

from playpulse.api.auth import ApiError, ReadAuth
from playpulse.api.vendor import vendor_of
from playpulse.collector.app import Collector
from playpulse.config import Settings
from playpulse.errors import BackpressureError, PlaypulseError, QuarantineError, StreamError
from playpulse.events.model import iana_zones
from playpulse.sources.shapes import ShapeError, ingest_shaped, map_payload

#: Longest date range ``getVendorAnalytics`` answers, in days.
MAX_RANGE_DAYS = 3660


def _error(message: str, code: str) -> GraphQLError:
    return GraphQLError(message, extensions={"code": code})


@strawberry.enum(description="A marketplace interaction (the event model's commerce event).")
class InteractionType(Enum):
    ProductView = "ProductView"
    ProductFavorite = "ProductFavorite"
    CartAdd = "CartAdd"
    VendorView = "VendorView"
    OrderCreated = "OrderCreated"
    OrderCompleted = "OrderCompleted"


@strawberry.enum(description="How dailyMetrics are summed: per day, week (from Monday), month.")
class Period(Enum):
    DAY = "DAY"
    WEEK = "WEEK"
    MONTH = "MONTH"


@strawberry.type(description="Why an interaction was refused: the field and what is wrong.")
class FieldError:
    loc: str
    msg: str


@strawberry.type(description="The outcome of trackUserInteraction.")
class TrackResult:
    success: bool
    event_id: str | None
    errors: list[FieldError]


@strawberry.type(
    description="Revenue in one currency: minor units (cents; a Float, as GraphQL Int is 32-bit), "
    "and the orders that had a price."
)
class Revenue:
    currency: str
    revenue_minor: float
    priced_orders: int


@strawberry.type(description="A vendor's funnel over the range (null: no source tells it).")
class VendorSummary:
    views: int | None
    favorites: int | None
    cart_adds: int | None
    orders: int | None
    completed_orders: int | None
    view_to_cart: float | None
    cart_to_order: float | None
    view_to_order: float | None
    revenue: list[Revenue]


@strawberry.type(description="One period's counts; date is the period's first day.")
class DailyMetric:
    date: date
    views: int
    favorites: int
    cart_adds: int
    orders: int
    completed_orders: int
    revenue: list[Revenue]


@strawberry.type(description="A product of the vendor, by completed orders then views.")
class ProductMetric:
    product_id: str
    views: int | None
    favorites: int | None
    cart_adds: int | None
    completed_orders: int | None
    revenue: list[Revenue]


@strawberry.type(description="getVendorAnalytics: summary, metrics per period, top products.")
class VendorAnalytics:
    vendor_id: str
    start_date: date
    end_date: date
    period: Period
    timezone: str
    summary: VendorSummary
    daily_metrics: list[DailyMetric]
    top_products: list[ProductMetric]


def _revenue(rows: Sequence[dict[str, Any]]) -> list[Revenue]:
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for row in rows:
        if row.get("currency") and row.get("revenue_minor") is not None:
            totals[row["currency"]][0] += int(row["revenue_minor"])
            totals[row["currency"]][1] += int(row.get("priced_orders") or 0)
    return [
        Revenue(currency=c, revenue_minor=float(r), priced_orders=n) for c, (r, n) in totals.items()
    ]


def _period_start(day: date, period: Period) -> date:
    if period is Period.WEEK:
        return day - timedelta(days=day.weekday())
    if period is Period.MONTH:
        return day.replace(day=1)
    return day


def _daily(rows: Sequence[dict[str, Any]], period: Period) -> list[DailyMetric]:
    """``vendor_daily`` rows (one per day and currency) summed per ``period``."""
    groups: dict[date, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[_period_start(row["date"], period)].append(row)
    out = []
    for start in sorted(groups):
        group = groups[start]
        # Counts repeat on each currency row of a day: count each day once.
        days = {row["date"]: row for row in group}.values()

        def total(column: str, days: Any = days) -> int:
            return sum(int(row.get(column) or 0) for row in days)

        out.append(
            DailyMetric(
                date=start,
                views=total("views"),
                favorites=total("favorites"),
                cart_adds=total("cart_adds"),
                orders=total("orders"),
                completed_orders=total("completed_orders"),
                revenue=_revenue(group),
            )
        )
    return out


def _products(rows: Sequence[dict[str, Any]], limit: int) -> list[ProductMetric]:
    by_product: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_product.setdefault(row["product_id"], []).append(row)
    return [
        ProductMetric(
            product_id=product,
            views=group[0].get("views"),
            favorites=group[0].get("favorites"),
            cart_adds=group[0].get("cart_adds"),
            completed_orders=group[0].get("completed_orders"),
            revenue=_revenue(group),
        )
        for product, group in list(by_product.items())[:limit]
    ]


def vendor_analytics(
    settings: Settings,
    vendor_id: str,
    start_date: date,
    end_date: date,
    period: Period,
    timezone: str,
    top: int,
) -> VendorAnalytics:
    """``getVendorAnalytics`` from the catalog queries ``funnel``, ``vendor_daily`` and
    ``top_products`` over ``[start_date, end_date]`` (inclusive, days in ``timezone``).
    Raises :class:`~playpulse.query.catalog.QueryError` for bad parameters."""
    from playpulse.query.catalog import QueryParams, run_query

    zone = ZoneInfo(timezone)
    start = datetime.combine(start_date, time(), zone).astimezone(UTC)
    end = datetime.combine(end_date + timedelta(days=1), time(), zone).astimezone(UTC)
    params = QueryParams(start=start, end=end, tz=timezone, vendor_id=vendor_id, limit=10_000)
    funnel = run_query("funnel", params, settings).to_pylist()
    daily = run_query("vendor_daily", params, settings).to_pylist()
    products = run_query("top_products", params, settings).to_pylist()
    first = funnel[0] if funnel else {}
    summary = VendorSummary(
        views=first.get("views", 0),
        favorites=first.get("favorites", 0),
        cart_adds=first.get("cart_adds", 0),
        orders=first.get("orders", 0),
        completed_orders=first.get("completed_orders", 0),
        view_to_cart=first.get("view_to_cart"),
        cart_to_order=first.get("cart_to_order"),
        view_to_order=first.get("view_to_order"),
        revenue=_revenue(funnel),
    )
    return VendorAnalytics(
        vendor_id=vendor_id,
        start_date=start_date,
        end_date=end_date,
        period=period,
        timezone=timezone,
        summary=summary,
        daily_metrics=_daily(daily, period),
        top_products=_products(products, top),
    )


class _Context(dict[str, Any]):
    """What the resolvers get: the request, the settings, the collector, the read auth."""


def _request(info: Info) -> Request:
    request = info.context["request"]
    assert isinstance(request, Request)
    return request


async def get_vendor_analytics(
    info: Info,
    vendor_id: strawberry.ID,
    start_date: date,
    end_date: date,
    period: Period = Period.DAY,
    timezone: str = "UTC",
    top: int = 10,
) -> VendorAnalytics:
    """Resolver of ``Query.getVendorAnalytics`` (see the package docstring): checks the
    read key and vendor scope, then :func:`vendor_analytics` in a worker thread."""
    request = _request(info)
    auth: ReadAuth = info.context["read_auth"]
    try:
        identity = auth.identify_request(request)
    except ApiError as exc:
        raise _error(exc.message, "UNAUTHENTICATED") from None
    if identity is None:
        raise _error("a valid read key is required: Authorization: Bearer <key>", "UNAUTHENTICATED")
    scoped = vendor_of(request) or identity.vendor_id
    if scoped is not None and scoped != vendor_id:
        raise _error(f"this key sees only vendor {scoped!r}'s shop metrics", "FORBIDDEN")
    if timezone not in iana_zones():
        raise _error(f"timezone {timezone!r} is not an IANA zone name", "BAD_USER_INPUT")
    if end_date < start_date:
        raise _error(f"endDate {end_date} is before startDate {start_date}", "BAD_USER_INPUT")
    if (end_date - start_date).days > MAX_RANGE_DAYS:
        raise _error(f"the range is longer than {MAX_RANGE_DAYS} days", "BAD_USER_INPUT")
    if not 1 <= top <= 1000:
        raise _error(f"top must be 1 to 1000, got {top}", "BAD_USER_INPUT")
    settings: Settings = info.context["settings"]
    try:
        return await run_in_threadpool(
            vendor_analytics,
            settings,
            str(vendor_id),
            start_date,
            end_date,
            period,
            timezone,
            top,
        )
    except PlaypulseError as exc:
        raise _error(str(exc), "UNAVAILABLE") from None


async def track_user_interaction(
    info: Info,
    event_type: InteractionType,
    vendor_id: strawberry.ID | None = None,
    customer_id: strawberry.ID | None = None,
    product_id: strawberry.ID | None = None,
    order_id: strawberry.ID | None = None,
    metadata: JSON | None = None,
) -> TrackResult:
    """Resolver of ``Mutation.trackUserInteraction`` (see the package docstring): checks
    the write key, then ingests the arguments as one marketplace payload."""
    request = _request(info)
    keys: list[bytes] = info.context["write_keys"]
    if keys and not _write_key_ok(request, keys):
        raise _error(
            "a valid write key is required: Authorization: Bearer <key>", "UNAUTHENTICATED"
        )
    payload: dict[str, Any] = {"eventType": event_type.value}
    for key, value in (
        ("vendorId", vendor_id),
        ("customerId", customer_id),
        ("productId", product_id),
        ("orderId", order_id),
        ("metadata", metadata),
    ):
        if value is not None:
            payload[key] = str(value) if key != "metadata" else value
    received_at = datetime.now(UTC)
    event_id = None
    try:  # pin the event id, so the answer can name it
        event_id = map_payload("marketplace", payload, received_at)[0]["event_id"]
        if isinstance(metadata, dict):
            payload["metadata"] = {**metadata, "eventId": event_id}
        elif metadata is None:
            payload["metadata"] = {"eventId": event_id}
    except ShapeError:
        pass  # ingested below all the same: rejected and quarantined there
    collector: Collector = info.context["collector"]
    raw = json.dumps(payload, separators=(",", ":")).encode()
    try:
        result = await ingest_shaped(collector, "marketplace", [raw], received_at)
    except (BackpressureError, StreamError, QuarantineError, OSError) as exc:
        message = f"the interaction was not stored ({exc}); send it again"
        raise _error(message, "UNAVAILABLE") from None
    errors = [FieldError(loc=e["loc"], msg=e["msg"]) for r in result.rejected for e in r["errors"]]
    success = result.accepted == 1
    return TrackResult(success=success, event_id=event_id if success else None, errors=errors)


@strawberry.type
class Query:
    get_vendor_analytics: VendorAnalytics = strawberry.field(
        resolver=get_vendor_analytics,
        description="A vendor's shop analytics between two dates (inclusive).",
    )


@strawberry.type
class Mutation:
    track_user_interaction: TrackResult = strawberry.mutation(
        resolver=track_user_interaction,
        description="Record a marketplace interaction (one commerce event).",
    )


def _write_key_ok(request: Request, keys: Sequence[bytes]) -> bool:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return False
    given = token.strip().encode()
    return sum(hmac.compare_digest(given, key) for key in keys) > 0


def build_schema() -> strawberry.Schema:
    """The ``/graphql`` schema: ``Query.getVendorAnalytics``, ``Mutation.trackUserInteraction``."""
    return strawberry.Schema(query=Query, mutation=Mutation)


def mount_graphql(
    app: FastAPI, settings: Settings, collector: Collector | None = None, path: str = "/graphql"
) -> None:
    """Serve the GraphQL API at ``path`` of ``app`` (see the package docstring).

    ``collector``: where mutations ingest (default: ``app.state.collector``, which
    :func:`~playpulse.collector.app.create_app` sets). Reads are checked by
    ``app.state.read_auth`` when the read API is mounted (projects, vendor scopes), else
    by the read keys of ``settings``. Raises
    :class:`~playpulse.errors.ConfigError` when ``app`` has no collector and none is
    given."""
    from playpulse.errors import ConfigError

    found = collector or getattr(app.state, "collector", None)
    if not isinstance(found, Collector):
        raise ConfigError("mount_graphql needs a collector app (create_app) or a collector")
    write_keys = [k.get_secret_value().encode() for k in settings.write_keys]
    fallback = ReadAuth.from_settings(settings)

    def context(request: Request) -> _Context:
        auth = getattr(request.app.state, "read_auth", None) or fallback
        return _Context(
            request=request,
            settings=settings,
            collector=found,
            read_auth=auth,
            write_keys=write_keys,
        )

    router: GraphQLRouter[Any, Any] = GraphQLRouter(
        build_schema(), graphql_ide=None, context_getter=context
    )
    # Not in the OpenAPI document: a GraphQL API describes itself (introspection), and
    # OpenAPI could only say "POST a body, get 200 or 400".
    app.include_router(router, prefix=path, include_in_schema=False)
