"""The Python SDK apps embed to send events to a playpulse collector.

>>> from playpulse.client import Client, ClientOptions
>>> with Client("http://127.0.0.1:8080", write_key="k1") as client:  # doctest: +SKIP
...     client.play_start(user_id="u1", playback_id="p1", content={"content_id": "b1"})

:class:`Client` queues events and sends them in gzip-compressed batches from a
background thread, retrying 408/429/5xx answers and network errors with backoff;
:class:`ClientOptions` tunes it, :class:`ClientStats` counts what happened, and
:class:`DeliveryError` reports each event that was not stored.
"""

from playpulse.client.client import Client
from playpulse.client.helpers import ContentLike, ContextLike, Envelope, LineItemLike
from playpulse.client.options import ClientOptions, ClientStats, DeliveryError, DeliveryReason

__all__ = [
    "Client",
    "ClientOptions",
    "ClientStats",
    "ContentLike",
    "ContextLike",
    "DeliveryError",
    "DeliveryReason",
    "Envelope",
    "LineItemLike",
]
