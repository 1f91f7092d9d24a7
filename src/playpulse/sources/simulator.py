"""A deterministic, realistic workload simulator: playback and commerce events as sent.

:func:`simulate` turns a :class:`SimulationConfig` into a stream of
:class:`SimulatedEvent` objects: the JSON-ready event (``payload``, exactly the wire
format of docs/events.md) and the instant a collector receives it (``received_at``),
yielded in receive order. Everything follows from ``config.seed``: the same config gives
the same events, byte for byte. No global random state and no clock is used.

What is simulated:

- **Catalog.** Audiobooks (3-15 h, 10-40 chapters, creator = author), music tracks
  (2-6 min, creator = artist), podcast episodes (20-90 min, creator = show) and videos
  (5-40 min, creator = channel), each with Zipf-like popularity; shop products of
  vendors, priced in minor units.
- **Users.** Each has one device (``device_type``, ``platform``, ``os``,
  ``app_version``), a country and IANA time zone, a taste (music, audiobook, podcast,
  video or mixed listener), an activity level and a daily rhythm: sessions start more
  often in local commute hours and evenings, with at least 35 minutes between sessions.
  Some users are anonymous (``anonymous_id`` only); a few devices have a skewed clock
  (``occurred_at`` and ``sent_at`` shifted by the same amount, which ``derived_at``
  corrects); some devices omit ``sent_at``, ``session_id``, or stamp times with their
  local UTC offset instead of ``Z``.
- **Plays.** ``play_start`` (with ``content``), a heartbeat every 10-30 s of playing
  time (per device), pauses and resumes, seeks forward and back, buffering at startup
  and mid-play, speed changes (audiobooks and podcasts, 1.25-2.0), bookmarks, chapter
  changes, background playback (``visibility_change``), rare errors, and ``play_end``
  with reason ``completed``, ``stopped``, ``next`` or ``error``; some plays just stop
  (app killed). ``position_s`` is always consistent: it advances by
  ``playback_rate`` x playing wall time, jumps on seeks and never exceeds
  ``duration_s``. Audiobooks and podcasts resume where the listener left off.
- **Commerce.** Shopping sessions as a funnel: ``vendor_view``, ``product_view``,
  ``product_favorite``, ``cart_add``, ``order_created``, ``order_completed``, with
  drop-off at every step.
- **Delivery.** Events are sent in batches (a flush timer of 10-30 s per device, and an
  immediate flush at ``play_end``). A share of batches is delivered out of order
  (shuffled inside the batch, or delayed by seconds to minutes), a share is delivered
  twice (same events, same ``event_id``, ``sent_at`` possibly later), and some sessions
  were played offline and are synced hours or days later (a few more than 7 days later).
  Optionally a share of events is deliberately invalid.

Times are integers of milliseconds since the Unix epoch internally; every datetime that
leaves this module is UTC-aware.
"""

from __future__ import annotations

import heapq
import math
import random
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from statistics import NormalDist
from typing import Any, Generic, TypeVar
from zoneinfo import ZoneInfo

__all__ = ["SimulatedEvent", "SimulationConfig", "simulate"]

_T = TypeVar("_T")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EARLIEST_START = datetime(2001, 1, 1, tzinfo=UTC)
_SECOND = 1_000
_MINUTE = 60 * _SECOND
_HOUR = 60 * _MINUTE
_DAY = 24 * _HOUR
_NEVER = 1 << 62
# Version 4 and RFC 4122 variant bits of a UUID, and the mask clearing them.
_UUID_V4 = (4 << 76) | (2 << 62)
_UUID_MASK = ~((0xF << 76) | (3 << 62)) & ((1 << 128) - 1)

#: Least time between the end of one listening session of a user and the next start.
_SESSION_GAP_MS = 35 * _MINUTE
#: Events per user and simulated day at the default settings, measured (see
#: :meth:`SimulationConfig.with_target_events`).
_EVENTS_PER_USER_DAY = 44.0
#: Largest shortfall (in events) of late and of very late events before an offline
#: session is added (the actual threshold is drawn uniformly below it each time).
_LATE_LUMP = 150.0
_VERY_LATE_LUMP = 40.0
#: Most events a device keeps while offline (the oldest are dropped beyond it).
_OFFLINE_QUEUE = 250
#: Largest number of events one request carries when an offline backlog is synced.
_SYNC_BATCH = 100

# --------------------------------------------------------------------------------------
# Configuration and output
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SimulationConfig:
    """What to simulate. Every field has a realistic default; all output follows ``seed``.

    Population and time:

    - ``seed``: any int; the same config always yields the same events.
    - ``start``: UTC-aware instant (any zone is converted to UTC; 2001 or later) of the
      window in which listening sessions start; ``duration`` is its length. Sessions
      that start inside the window run to their natural end, and offline sessions
      synced inside it may have happened before ``start``. The default window (2026-03-06 to 03-09,
      Friday to Sunday) contains the US switch to daylight saving time.
    - ``users``: number of simulated people (each with one device).
    - ``audiobooks``, ``tracks``, ``episodes``, ``videos``: catalog sizes (items);
      ``vendors`` and ``products``: shop size (every vendor has at least one product
      when ``products >= vendors``).

    Rates (each a probability in ``[0, 1]``; "share" means share of events, as an
    expectation):

    - ``duplicate_rate``: share of events delivered twice (a whole batch is resent
      1 s-10 min later with the same ``event_id`` values and content; ``sent_at`` is
      the resend time for 70 % of resends, unchanged for the rest). Default 2 %.
    - ``out_of_order_rate``: share of events in batches delivered out of order: the
      batch array is shuffled, or the batch is delayed by 2 s-5 min so later batches
      overtake it. Default 5 %.
    - ``late_rate``: share of events from offline sessions synced later (sessions of
      the same user and device, ``network_type`` ``offline``, delivered when the user
      next comes online; the device keeps at most 250 events offline), received hours
      to days after they occurred. Default 1 %. It includes ``very_late_rate``: the
      share of events (from single offline plays) received more than 7 days after they
      occurred (default 0.1 %). Offline sessions are added whenever the running share
      falls behind the rate, so both shares hold closely in long runs (a 200,000-event
      run: within about 0.2 and 0.05 points); short runs are lumpier.
    - ``commerce_share``: share of *sessions* that are shopping sessions (they are
      short, so commerce is a much smaller share of events). Default 20 %.
    - ``anonymous_share``: share of users sending only ``anonymous_id``. Default 5 %.
    - ``skewed_clock_share``: share of devices whose clock is off by 1 min to 3 h
      (both ways); they always send ``sent_at``. Default 3 %.
    - ``invalid_rate``: share of events made deliberately invalid (unknown
      ``event_type``, no user, or a naive ``occurred_at``), for quarantine demos.
      Default 0: every event is accepted by ``validate_event``.

    ``max_events``: stop after yielding this many events (``None``: run to the end).
    """

    seed: int = 0
    start: datetime = datetime(2026, 3, 6, tzinfo=UTC)
    duration: timedelta = timedelta(days=3)
    users: int = 2_000
    audiobooks: int = 300
    tracks: int = 5_000
    episodes: int = 1_000
    videos: int = 800
    vendors: int = 50
    products: int = 600
    duplicate_rate: float = 0.02
    out_of_order_rate: float = 0.05
    late_rate: float = 0.01
    very_late_rate: float = 0.001
    commerce_share: float = 0.2
    anonymous_share: float = 0.05
    skewed_clock_share: float = 0.03
    invalid_rate: float = 0.0
    max_events: int | None = None

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.start.utcoffset() is None:
            raise ValueError(f"start must be a timezone-aware datetime, got {self.start!r}")
        object.__setattr__(self, "start", self.start.astimezone(UTC))
        if self.start < _EARLIEST_START:
            # Offline sessions reach weeks back; the codec rejects times before 2000.
            raise ValueError(f"start must be on or after 2001-01-01, got {self.start}")
        if self.duration <= timedelta(0):
            raise ValueError(f"duration must be positive, got {self.duration}")
        for name in ("users", "audiobooks", "tracks", "episodes", "videos", "vendors"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.products < self.vendors:
            raise ValueError(
                f"products ({self.products}) must be at least vendors ({self.vendors})"
            )
        for name in (
            "duplicate_rate",
            "out_of_order_rate",
            "late_rate",
            "very_late_rate",
            "commerce_share",
            "anonymous_share",
            "skewed_clock_share",
            "invalid_rate",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value}")
        if self.very_late_rate > self.late_rate:
            raise ValueError(
                f"very_late_rate ({self.very_late_rate}) is part of late_rate "
                f"({self.late_rate}) and cannot exceed it"
            )
        if self.max_events is not None and self.max_events < 0:
            raise ValueError(f"max_events must be >= 0, got {self.max_events}")

    @property
    def end(self) -> datetime:
        """End of the session-start window: ``start + duration`` (UTC)."""
        return self.start + self.duration

    def with_target_events(self, n: int) -> SimulationConfig:
        """A copy that yields exactly ``n`` events, spread over about the same window.

        Sets ``max_events = n``, sizes ``users`` from a measured events-per-user-day
        figure so that ``n`` events take about ``duration`` (at least 20 users), and
        triples ``duration`` as a safety margin: the stream is cut after ``n`` events,
        normally near the end of the original window (give or take some 20 %, as
        activity varies between populations).
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        days = self.duration / timedelta(days=1)
        users = max(20, math.ceil(n / (_EVENTS_PER_USER_DAY * days)))
        return replace(self, users=users, duration=self.duration * 3, max_events=n)


@dataclass(frozen=True, slots=True)
class SimulatedEvent:
    """One event as a collector would receive it.

    - ``payload``: the JSON-ready event (wire format: str, int, float, bool, dict and
      list values only; times are ISO 8601 strings with ``Z`` or a UTC offset). Pass
      ``json.dumps(payload)`` and ``received_at`` to ``validate_event``. Every payload
      is an independent object (duplicates are deep copies): consumers may modify it.
    - ``received_at``: UTC-aware instant the collector receives the event (every event
      of one request shares it).
    - ``valid``: False for the deliberately invalid events (``invalid_rate``), which
      ``validate_event`` rejects; True for every other event, which it accepts.
    """

    payload: dict[str, Any]
    received_at: datetime
    valid: bool = True


def simulate(config: SimulationConfig) -> Iterator[SimulatedEvent]:
    """Yield the simulated events of ``config`` in receive order.

    ``received_at`` never decreases along the stream (events of one request keep the
    request's array order). The stream ends after ``config.max_events`` events, or when
    every session that starts in the window has been delivered. Deterministic: the same
    config gives the same sequence.
    """
    return _Simulator(config).run()


# --------------------------------------------------------------------------------------
# Static tables
# --------------------------------------------------------------------------------------

# (weight, country, IANA time zone, currency)
_PLACES: tuple[tuple[float, str, str, str], ...] = (
    (18, "DE", "Europe/Berlin", "EUR"),
    (3, "AT", "Europe/Vienna", "EUR"),
    (3, "CH", "Europe/Zurich", "EUR"),
    (6, "FR", "Europe/Paris", "EUR"),
    (3, "NL", "Europe/Amsterdam", "EUR"),
    (6, "GB", "Europe/London", "EUR"),
    (3, "ES", "Europe/Madrid", "EUR"),
    (13, "US", "America/New_York", "USD"),
    (5, "US", "America/Chicago", "USD"),
    (7, "US", "America/Los_Angeles", "USD"),
    (3, "CA", "America/Toronto", "USD"),
    (4, "BR", "America/Sao_Paulo", "USD"),
    (8, "IN", "Asia/Kolkata", "USD"),
    (1, "NP", "Asia/Kathmandu", "USD"),
    (5, "JP", "Asia/Tokyo", "USD"),
    (5, "AU", "Australia/Sydney", "USD"),
    (1, "AU", "Australia/Adelaide", "USD"),
    (3, "DE", "UTC", "EUR"),
    (2, "US", "UTC", "USD"),
)

# (weight, device_type, platform, operating systems, networks, may go to background)
_DEVICES: tuple[tuple[float, str, str, tuple[str, ...], tuple[str, ...], bool], ...] = (
    (
        24,
        "mobile",
        "ios",
        ("iOS 16.7", "iOS 17.5", "iOS 18.1", "iOS 18.3"),
        ("wifi", "cellular"),
        True,
    ),
    (
        26,
        "mobile",
        "android",
        ("Android 13", "Android 14", "Android 15"),
        ("wifi", "cellular"),
        True,
    ),
    (5, "tablet", "ios", ("iPadOS 17.5", "iPadOS 18.2"), ("wifi",), True),
    (3, "tablet", "android", ("Android 14",), ("wifi",), True),
    (6, "desktop", "macos", ("macOS 14.6", "macOS 15.2"), ("wifi", "ethernet"), True),
    (6, "desktop", "windows", ("Windows 10", "Windows 11"), ("wifi", "ethernet"), True),
    (
        10,
        "web",
        "web",
        ("Windows 11", "macOS 15.2", "Linux", "ChromeOS"),
        ("wifi", "ethernet", "unknown"),
        True,
    ),
    (5, "tv", "tvos", ("tvOS 18.1",), ("wifi", "ethernet"), False),
    (4, "tv", "androidtv", ("Android TV 12",), ("wifi", "ethernet"), False),
    (4, "speaker", "alexa", ("Fire OS 7",), ("wifi",), False),
    (4, "car", "carplay", ("iOS 18.1",), ("cellular",), False),
    (3, "car", "android_auto", ("Android 14",), ("cellular",), False),
    (1, "console", "playstation", ("PS5 24.06",), ("wifi", "ethernet"), False),
    (1, "wearable", "watchos", ("watchOS 11.1",), ("wifi", "cellular"), False),
)
_APP_VERSIONS = ("5.11.3", "5.12.0", "5.12.1", "5.13.0", "5.14.2")
_APP_VERSION_WEIGHTS = (3, 6, 10, 20, 30)

_KINDS = ("music", "audiobook", "podcast", "video")
# Taste -> weights of session kinds (music, audiobook, podcast, video).
_TASTES: tuple[tuple[float, tuple[float, float, float, float]], ...] = (
    (30, (0.75, 0.05, 0.10, 0.10)),
    (20, (0.15, 0.70, 0.10, 0.05)),
    (15, (0.20, 0.10, 0.60, 0.10)),
    (15, (0.15, 0.05, 0.10, 0.70)),
    (20, (0.35, 0.20, 0.25, 0.20)),
)
# Relative chance that a session starts in each local hour (commute and evening peaks).
_HOUR_WEIGHTS = (
    0.18, 0.09, 0.05, 0.04, 0.04, 0.08, 0.35, 0.90, 1.00, 0.60, 0.45, 0.50,
    0.65, 0.60, 0.50, 0.50, 0.60, 0.85, 1.00, 1.10, 1.20, 1.20, 1.00, 0.55,
)  # fmt: skip
_WEEKEND_HOUR_WEIGHTS = tuple(
    w * (0.6 if 6 <= h <= 9 else 1.25 if 10 <= h <= 17 else 1.0)
    for h, w in enumerate(_HOUR_WEIGHTS)
)
_MAX_HOUR_WEIGHT = max(max(_HOUR_WEIGHTS), max(_WEEKEND_HOUR_WEIGHTS))
_MEAN_HOUR_WEIGHT = sum(_HOUR_WEIGHTS) / 24

_RATES = (1.0, 1.25, 1.5, 1.75, 2.0)
_SOURCES = ("home", "search", "library", "recommendation", "deeplink")
_ERRORS = (
    ("NETWORK_TIMEOUT", "segment request timed out after 10 s"),
    ("HTTP_503", "media server returned 503 Service Unavailable"),
    ("DECODER_ERROR", "audio decoder failed: invalid frame header"),
    ("DRM_LICENSE_EXPIRED", "playback license expired"),
    ("SOURCE_NOT_FOUND", "media source not found (404)"),
)
_PAYMENT_METHODS = ("card", "paypal", "apple_pay", "google_pay", "invoice")
_PRICES = (199, 299, 499, 799, 999, 1299, 1499, 1999, 2499, 2999, 4999, 7999)
_INCIDENTS = ("pause", "seek", "buffer", "speed", "bookmark", "visibility", "error")
# Per kind, hazards per minute of playing time: pause, seek, speed change, bookmark, error.
_HAZARDS: dict[str, tuple[float, float, float, float, float]] = {
    "track": (0.02, 0.015, 0.0, 0.0, 0.002),
    "audiobook": (0.035, 0.02, 0.008, 0.012, 0.001),
    "episode": (0.04, 0.05, 0.01, 0.004, 0.001),
    "video": (0.05, 0.06, 0.0, 0.0, 0.002),
}
# Rebuffering hazard per minute of playing time, by "on a cellular network".
_BUFFER_HAZARD = {False: 0.012, True: 0.04}
_BOGUS_TYPES = ("page_view", "play_pause", "ad_impression", "playback_started")

_ADJECTIVES = (
    "Silent", "Golden", "Broken", "Hidden", "Last", "Wild", "Electric", "Quiet", "Burning",
    "Distant", "Midnight", "Crimson", "Endless", "Forgotten", "Little", "Northern", "Paper",
    "Restless", "Secret", "Velvet",
)  # fmt: skip
_NOUNS = (
    "River", "Garden", "Empire", "Harbor", "Machine", "Winter", "Signal", "Kingdom", "Echo",
    "Orchard", "Lantern", "Mountain", "Ocean", "Letter", "City", "Storm", "Mirror", "Road",
    "Forest", "Island",
)  # fmt: skip
_FIRST_NAMES = (
    "Anna", "Ben", "Clara", "David", "Elena", "Felix", "Grace", "Hiro", "Ines", "Jonas",
    "Kavya", "Liam", "Maya", "Noah", "Olga", "Priya", "Quentin", "Rosa", "Sven", "Yuki",
)  # fmt: skip
_LAST_NAMES = (
    "Becker", "Carter", "Dubois", "Fischer", "Garcia", "Hoffmann", "Ito", "Jensen", "Khan",
    "Larsen", "Moreau", "Novak", "Okafor", "Patel", "Rossi", "Schmidt", "Tanaka", "Weber",
)  # fmt: skip
_TOPICS = (
    "Tech", "History", "Science", "Business", "Comedy", "True Crime", "Design", "Football",
    "Cooking", "Health", "Politics", "Film", "Travel", "Music", "Gaming",
)  # fmt: skip


# --------------------------------------------------------------------------------------
# Internal model
# --------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Item:
    """One piece of content; ``base`` is the ``content`` object of ``play_start``."""

    kind: str
    content_id: str
    duration_s: float
    base: dict[str, Any]
    chapter_starts: list[float] | None = None
    first_chapter: int = 1
    chapter_titles: list[str] | None = None


@dataclass(slots=True)
class _Product:
    product_id: str
    vendor_id: str
    price_minor: int


@dataclass(slots=True)
class _User:
    user_id: str | None
    anonymous_id: str | None
    context: dict[str, Any]
    zone: ZoneInfo
    networks: tuple[str, ...]
    can_background: bool
    currency: str
    local_offsets: bool
    sends_sent_at: bool
    sends_session_id: bool
    skew_ms: int
    flush_ms: int
    heartbeat_ms: int
    latency_ms: int
    sessions_per_ms: float
    kind_cum: list[float]
    audiobook_rate: float
    podcast_rate: float
    progress: dict[str, float] = field(default_factory=dict)
    current_book: _Item | None = None
    intervals: list[tuple[int, int]] = field(default_factory=list)


# A logical event: (true occurred time in ms, event_type, type fields, foreground or None).
_Logical = tuple[int, str, dict[str, Any], bool | None]


class _Popularity(Generic[_T]):
    """Zipf-like choice: the item at rank k (0-based) has weight 1 / (k + 1) ** s."""

    __slots__ = ("_cum", "_items")

    def __init__(self, items: Sequence[_T], exponent: float) -> None:
        self._items: list[_T] = list(items)
        total = 0.0
        cum = []
        for k in range(len(self._items)):
            total += 1.0 / (k + 1) ** exponent
            cum.append(total)
        self._cum = cum

    def pick(self, rng: random.Random) -> _T:
        x = rng.random() * self._cum[-1]
        return self._items[min(bisect_right(self._cum, x), len(self._items) - 1)]


def _cumulative(weights: Sequence[float]) -> list[float]:
    out, total = [], 0.0
    for w in weights:
        total += w
        out.append(total)
    return out


def _uuid(rng: random.Random) -> str:
    """A random UUID string (version 4 layout) drawn from ``rng``."""
    h = f"{rng.getrandbits(128) & _UUID_MASK | _UUID_V4:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _clone(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _clone(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clone(v) for v in value]
    return value


# --------------------------------------------------------------------------------------
# The simulator
# --------------------------------------------------------------------------------------


class _Simulator:
    """Holds the random streams, catalog, users and the receive-order queue of one run."""

    def __init__(self, config: SimulationConfig) -> None:
        self.cfg = config
        master = random.Random(config.seed)
        # Independent streams: behaviour (what people do) and delivery (how it arrives),
        # so changing a delivery rate does not change what was played.
        self.rng = random.Random(master.getrandbits(64))
        self.drng = random.Random(master.getrandbits(64))
        self.start_ms = (config.start - _EPOCH) // timedelta(milliseconds=1)
        self.end_ms = (config.end - _EPOCH) // timedelta(milliseconds=1)
        self._minute_prefix: dict[int, str] = {}
        # Receive-order queue of requests: (received ms, sequence, payloads, valid flags).
        self._queue: list[tuple[int, int, list[dict[str, Any]], list[bool]]] = []
        self._seq = 0
        # Foreground state of the app in the session being generated (None: no such
        # state, e.g. a TV or car).
        self._foreground: bool | None = None
        self._build_catalog()
        self._build_shop()
        # Sessions per day of each user: log-normal (many light users, a few heavy ones),
        # drawn by stratified sampling so that the population's total activity hardly
        # depends on the seed or the number of users.
        n = config.users
        quantiles = [(i + self.rng.random()) / n for i in range(n)]
        self.rng.shuffle(quantiles)
        activity = NormalDist(math.log(0.62) - 0.5, 1.0)
        self.users = [
            self._make_user(i, min(8.0, math.exp(activity.inv_cdf(q))))
            for i, q in enumerate(quantiles)
        ]
        # Offline sessions are added where the late share falls behind its rate: the
        # events generated so far, late ones, and a random threshold (in events) the
        # shortfall must exceed, so the share follows the rate closely yet unevenly.
        self._generated = 0
        self._late = 0
        self._very_late = 0
        self._late_threshold = self.rng.uniform(1, _LATE_LUMP)
        self._very_late_threshold = self.rng.uniform(1, _VERY_LATE_LUMP)

    # -- catalog ---------------------------------------------------------------------

    def _title(self) -> str:
        rng = self.rng
        return f"The {rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)}"

    def _person(self) -> str:
        return f"{self.rng.choice(_FIRST_NAMES)} {self.rng.choice(_LAST_NAMES)}"

    def _build_catalog(self) -> None:
        rng, cfg = self.rng, self.cfg
        authors = [self._person() for _ in range(max(1, cfg.audiobooks // 3))]
        books: list[_Item] = []
        for i in range(cfg.audiobooks):
            duration = round(rng.uniform(3 * 3600, 15 * 3600), 3)
            n = rng.randint(10, 40)
            weights = [rng.uniform(0.5, 1.5) for _ in range(n)]
            total = sum(weights)
            starts, acc = [], 0.0
            for w in weights:
                starts.append(round(acc, 3))
                acc += duration * w / total
            first = 0 if rng.random() < 0.2 else 1
            titles = ["Prologue" if first + k == 0 else f"Chapter {first + k}" for k in range(n)]
            content_id = f"book-{i:05d}"
            base = {
                "content_id": content_id,
                "content_type": "audiobook",
                "title": self._title(),
                "creator": rng.choice(authors),
                "duration_s": duration,
            }
            books.append(_Item("audiobook", content_id, duration, base, starts, first, titles))
        artists = [
            f"{rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)}s"
            for _ in range(max(1, cfg.tracks // 12))
        ]
        tracks = [
            self._simple(f"track-{i:06d}", "track", rng.uniform(120, 360), rng.choice(artists))
            for i in range(cfg.tracks)
        ]
        shows = [
            f"{rng.choice(_TOPICS)} {rng.choice(('Weekly', 'Daily', 'Talk', 'Hour', 'Unplugged'))}"
            for _ in range(max(1, cfg.episodes // 15))
        ]
        episodes = [
            self._simple(f"ep-{i:06d}", "episode", rng.uniform(1200, 5400), rng.choice(shows))
            for i in range(cfg.episodes)
        ]
        channels = [
            f"{rng.choice(_NOUNS)} {rng.choice(('TV', 'Studio', 'Lab', 'Channel'))}"
            for _ in range(max(1, cfg.videos // 10))
        ]
        videos = [
            self._simple(f"video-{i:06d}", "video", rng.uniform(300, 2400), rng.choice(channels))
            for i in range(cfg.videos)
        ]
        for items in (books, tracks, episodes, videos):
            rng.shuffle(items)  # popularity rank independent of id order
        self.books = _Popularity(books, 0.9)
        self.tracks = _Popularity(tracks, 1.05)
        self.episodes = _Popularity(episodes, 0.95)
        self.videos = _Popularity(videos, 1.0)

    def _simple(self, content_id: str, kind: str, duration: float, creator: str) -> _Item:
        duration = round(duration, 3)
        base = {
            "content_id": content_id,
            "content_type": kind,
            "title": self._title(),
            "creator": creator,
            "duration_s": duration,
        }
        return _Item(kind, content_id, duration, base)

    def _build_shop(self) -> None:
        rng, cfg = self.rng, self.cfg
        vendor_ids = [f"vendor-{i:04d}" for i in range(cfg.vendors)]
        vendor_rank = _Popularity(range(cfg.vendors), 1.0)
        self.vendor_products: list[list[_Product]] = [[] for _ in range(cfg.vendors)]
        price_cum = _cumulative((4, 8, 10, 8, 12, 6, 6, 8, 4, 4, 3, 1))
        for i in range(cfg.products):
            v = i if i < cfg.vendors else int(vendor_rank.pick(rng))
            price = rng.choices(_PRICES, cum_weights=price_cum)[0]
            self.vendor_products[v].append(_Product(f"prod-{i:06d}", vendor_ids[v], price))
        self.vendor_ids = vendor_ids
        self.vendors = _Popularity(range(cfg.vendors), 1.0)

    # -- users -----------------------------------------------------------------------

    def _make_user(self, index: int, per_day: float) -> _User:
        rng, cfg = self.rng, self.cfg
        _, country, zone_name, currency = rng.choices(_PLACES, weights=[p[0] for p in _PLACES])[0]
        _, device_type, platform, oses, networks, can_bg = rng.choices(
            _DEVICES, weights=[d[0] for d in _DEVICES]
        )[0]
        context: dict[str, Any] = {"device_type": device_type, "platform": platform}
        context["os"] = rng.choice(oses)
        if platform == "web":
            context["app_version"] = "web-2026.02.3"
        else:
            context["app_version"] = rng.choices(_APP_VERSIONS, weights=_APP_VERSION_WEIGHTS)[0]
        context["country"] = country
        context["timezone"] = zone_name
        anonymous = rng.random() < cfg.anonymous_share
        user_id = None if anonymous else f"user-{index:07d}"
        anonymous_id = _uuid(rng) if anonymous or platform == "web" else None
        skewed = rng.random() < cfg.skewed_clock_share
        skew = 0
        if skewed:
            skew = int(rng.uniform(1 * _MINUTE, 3 * _HOUR))
            if rng.random() < 0.6:
                skew = -skew  # clocks behind are more common
        taste = rng.choices(_TASTES, weights=[t[0] for t in _TASTES])[0][1]
        rate_pref = rng.random()
        return _User(
            user_id=user_id,
            anonymous_id=anonymous_id,
            context=context,
            zone=ZoneInfo(zone_name),
            networks=networks,
            can_background=can_bg,
            currency=currency,
            local_offsets=rng.random() < 0.25,
            sends_sent_at=skewed or rng.random() < 0.92,
            sends_session_id=rng.random() < 0.85,
            skew_ms=skew,
            flush_ms=rng.choice((15, 30, 30, 60)) * _SECOND,
            heartbeat_ms=rng.choices((10, 15, 20, 30), weights=(2, 2, 3, 3))[0] * _SECOND,
            latency_ms=rng.randint(20, 250),
            sessions_per_ms=per_day / _DAY,
            kind_cum=_cumulative(taste),
            audiobook_rate=1.0 if rate_pref < 0.55 else rng.choice(_RATES[1:]),
            podcast_rate=1.0 if rate_pref < 0.7 else rng.choice(_RATES[1:4]),
        )

    def _next_start(self, user: _User, after_ms: int) -> int:
        """Next session start after ``after_ms``: a Poisson process thinned by the
        local hour-of-day (and weekend) rhythm."""
        rng = self.rng
        peak = user.sessions_per_ms * _MAX_HOUR_WEIGHT / _MEAN_HOUR_WEIGHT
        t = after_ms
        while True:
            t += int(rng.expovariate(peak)) + 1
            if t >= self.end_ms:
                return t
            local = datetime.fromtimestamp(t / 1000, user.zone)
            weights = _WEEKEND_HOUR_WEIGHTS if local.weekday() >= 5 else _HOUR_WEIGHTS
            if rng.random() * _MAX_HOUR_WEIGHT < weights[local.hour]:
                return t

    # -- the run ---------------------------------------------------------------------

    def run(self) -> Iterator[SimulatedEvent]:
        limit = self.cfg.max_events
        if limit == 0:
            return
        emitted = 0
        heap: list[tuple[int, int]] = []
        for i, user in enumerate(self.users):
            t = self._next_start(user, self.start_ms - 1)
            if t < self.end_ms:
                heap.append((t, i))
        heapq.heapify(heap)
        queue = self._queue
        while True:
            # Everything not yet generated happens at or after the next session start,
            # and is received after it happens: requests received by then are final.
            frontier = heap[0][0] if heap else _NEVER
            while queue and queue[0][0] <= frontier:
                received_ms, _, payloads, valid = heapq.heappop(queue)
                received = _EPOCH + timedelta(milliseconds=received_ms)
                for payload, ok in zip(payloads, valid, strict=True):
                    yield SimulatedEvent(payload, received, ok)
                    emitted += 1
                    if emitted == limit:
                        return
            if not heap:
                return
            t, i = heapq.heappop(heap)
            user = self.users[i]
            end = self._session(user, t)
            nxt = self._next_start(user, end + _SESSION_GAP_MS)
            if nxt < self.end_ms:
                heapq.heappush(heap, (nxt, i))

    # -- sessions --------------------------------------------------------------------

    def _session(self, user: _User, t: int) -> int:
        """Simulate one session of ``user`` starting at ``t``; returns its end (ms)."""
        rng = self.rng
        ctx = dict(user.context)
        ctx["network_type"] = rng.choice(user.networks)
        session_id = _uuid(rng) if user.sends_session_id else None
        events: list[_Logical] = []
        if rng.random() < self.cfg.commerce_share:
            end = self._shop(user, t, events)
        else:
            kind = rng.choices(_KINDS, cum_weights=user.kind_cum)[0]
            cfg = self.cfg
            very_late_due = cfg.very_late_rate * self._generated - self._very_late
            late_due = (cfg.late_rate - cfg.very_late_rate) * self._generated - self._late
            if very_late_due > self._very_late_threshold:
                self._very_late += self._backlog(user, kind, t, very_late=True)
                self._very_late_threshold = rng.uniform(1, _VERY_LATE_LUMP)
            elif late_due > self._late_threshold:
                self._late += self._backlog(user, kind, t, very_late=False)
                self._late_threshold = rng.uniform(1, _LATE_LUMP)
            end = self._listen(user, kind, t, ctx, events, offline=False)
        self._deliver(user, ctx, session_id, events, sync_at=None)
        user.intervals.append((t, end))
        return end

    def _backlog(self, user: _User, kind: str, sync_at: int, *, very_late: bool) -> int:
        """Deliver, at ``sync_at``, a session played offline earlier (one play only when
        ``very_late``): hours to days late, or more than 7 days when ``very_late``.
        Returns its number of events."""
        rng = self.rng
        if very_late:
            delay = int(rng.uniform(7 * _DAY + 6 * _HOUR, 20 * _DAY))
            latest_end = sync_at - 7 * _DAY - 30 * _MINUTE
        elif rng.random() < 0.6:
            delay = int(rng.uniform(2 * _HOUR, 24 * _HOUR))
            latest_end = sync_at - _HOUR
        else:
            delay = int(rng.uniform(1 * _DAY, 7 * _DAY))
            latest_end = sync_at - _HOUR
        ctx = dict(user.context)
        ctx["network_type"] = "offline"
        session_id = _uuid(rng) if user.sends_session_id else None
        events: list[_Logical] = []
        start = sync_at - delay
        end = self._listen(user, kind, start, ctx, events, offline=True, single=very_late)
        # Move it earlier until it ends in time and overlaps no other session of the user.
        shift = min(0, latest_end - end)
        for _ in range(50):
            moved = False
            for a, b in user.intervals:
                if start + shift < b + _SESSION_GAP_MS and end + shift > a - _SESSION_GAP_MS:
                    shift = a - _SESSION_GAP_MS - end
                    moved = True
            if not moved:
                break
        # The SDK keeps at most this many events while offline, dropping the oldest.
        events = events[-_OFFLINE_QUEUE:]
        if shift:
            events = [(t + shift, typ, f, fg) for t, typ, f, fg in events]
        user.intervals.append((start + shift, end + shift))
        self._deliver(user, ctx, session_id, events, sync_at=sync_at + rng.randint(500, 5000))
        return len(events)

    def _listen(
        self,
        user: _User,
        kind: str,
        t: int,
        ctx: dict[str, Any],
        events: list[_Logical],
        *,
        offline: bool,
        single: bool = False,
    ) -> int:
        """One listening session of ``kind`` from ``t`` (only one play if ``single``);
        appends its events to ``events`` and returns the time of the last one."""
        rng = self.rng
        cellular = ctx["network_type"] == "cellular"
        # The app starts in the foreground; the state carries over from play to play.
        self._foreground = True if user.can_background else None
        if kind == "music":
            n = 1 if single else 1 + min(30, int(rng.expovariate(1 / 7)))
            source = rng.choice(_SOURCES)
            for i in range(n):
                item = self.tracks.pick(rng)
                last = i == n - 1
                r = rng.random()
                budget: int | None
                if r < 0.02:
                    budget, ending = int(rng.uniform(5, item.duration_s) * 1000), "killed"
                elif r < 0.38:
                    skip = rng.uniform(1.5, 30) if rng.random() < 0.8 else rng.uniform(30, 120)
                    budget, ending = int(skip * 1000), "next"
                elif last and rng.random() < 0.5:
                    budget = int(rng.uniform(0.2, 0.9) * item.duration_s * 1000)
                    ending = "stopped"
                else:
                    budget, ending = None, "completed"
                t, _, how = self._play(
                    user, item, t, 0.0, 1.0, budget, ending, source, cellular, offline, events
                )
                if how in ("killed", "error", "stopped"):
                    break
                t += rng.randint(5, 800)
                if rng.random() < 0.04:  # the listener picks the next one by hand
                    t += int(rng.uniform(20, 300) * _SECOND)
                    source = rng.choice(_SOURCES)
                else:
                    source = "autoplay"
            return t
        if kind == "audiobook":
            plays = 2 if rng.random() < 0.12 and not single else 1
            for _ in range(plays):
                book = user.current_book
                if book is None or rng.random() < 0.12:
                    book = self.books.pick(rng)
                    user.current_book = book
                pos = user.progress.get(book.content_id, 0.0)
                if pos >= book.duration_s - 60:
                    pos = 0.0
                minutes = min(240.0, rng.lognormvariate(math.log(22), 0.7))
                ending = "killed" if rng.random() < 0.04 else "stopped"
                t, pos, how = self._play(
                    user, book, t, pos, user.audiobook_rate, int(minutes * _MINUTE), ending,
                    "library", cellular, offline, events,
                )  # fmt: skip
                if not offline:
                    user.progress[book.content_id] = pos
                if how in ("killed", "error"):
                    break
                t += int(rng.uniform(1, 15) * _MINUTE)
            return t
        if kind == "podcast":
            n = 1 if single else 1 + min(3, int(rng.expovariate(1.5)))
            source = rng.choice(_SOURCES)
            for _ in range(n):
                ep = self.episodes.pick(rng)
                pos = user.progress.get(ep.content_id, 0.0)
                if pos >= ep.duration_s - 30:
                    pos = 0.0
                r = rng.random()
                if r < 0.55:
                    budget, ending = None, "completed"
                elif r < 0.97:
                    budget, ending = int(rng.uniform(2, 40) * _MINUTE), "stopped"
                else:
                    budget, ending = int(rng.uniform(1, 30) * _MINUTE), "killed"
                t, pos, how = self._play(
                    user, ep, t, pos, user.podcast_rate, budget, ending, source, cellular,
                    offline, events,
                )  # fmt: skip
                if not offline:
                    user.progress[ep.content_id] = pos
                if how != "completed":
                    break
                source = "autoplay"
                t += rng.randint(200, 3000)
            return t
        # video
        n = 1 if single else 1 + min(5, int(rng.expovariate(0.8)))
        source = rng.choice(_SOURCES)
        for _ in range(n):
            item = self.videos.pick(rng)
            r = rng.random()
            if r < 0.5:
                budget, ending = None, "completed"
            elif r < 0.75:
                budget, ending = int(rng.uniform(0.5, 15) * _MINUTE), "stopped"
            elif r < 0.97:
                budget, ending = int(rng.uniform(10, 300) * _SECOND), "next"
            else:
                budget, ending = int(rng.uniform(1, 10) * _MINUTE), "killed"
            t, _, how = self._play(
                user, item, t, 0.0, 1.0, budget, ending, source, cellular, offline, events
            )
            if how in ("killed", "error", "stopped"):
                break
            source = "autoplay"
            t += rng.randint(300, 8000)
        return t

    # -- one play --------------------------------------------------------------------

    def _play(
        self,
        user: _User,
        item: _Item,
        t: int,
        pos: float,
        rate: float,
        budget: int | None,
        ending: str,
        source: str,
        cellular: bool,
        offline: bool,
        events: list[_Logical],
    ) -> tuple[int, float, str]:
        """Simulate one play of ``item`` from ``t`` (ms) at position ``pos`` (s).

        ``budget`` is the playing time (ms) after which the listener ends the play the
        ``ending`` way (``stopped``, ``next`` or ``killed``: no closing event); ``None``
        plays to the end. Returns (time of the last event, position, how it ended:
        ``completed``, ``stopped``, ``next``, ``killed`` or ``error``).
        """
        rng = self.rng
        emit = events.append
        pid = _uuid(rng)
        dur = item.duration_s
        kind = item.kind
        starts = item.chapter_starts or []
        titles = item.chapter_titles or []

        def mark(at: int, typ: str, position: float, extra: dict[str, Any] | None = None) -> None:
            fields: dict[str, Any] = {"playback_id": pid, "position_s": round(position, 3)}
            if extra:
                fields.update(extra)
            emit((at, typ, fields, None))

        def chapter(at: int, index: int, position: float) -> None:
            now: dict[str, Any] = {"content_id": item.content_id, "content_type": kind}
            now["chapter"] = item.first_chapter + index
            now["chapter_title"] = titles[index]
            mark(at, "chapter_change", position, {"content": now})

        ci = bisect_right(starts, pos) - 1
        content = dict(item.base)
        if starts:
            content["chapter"] = item.first_chapter + ci
            content["chapter_title"] = titles[ci]
        first = {"content": content, "playback_rate": rate, "properties": {"source": source}}
        fg = self._foreground
        # The SDK reports the app state with play_start (where the device has one).
        emit((t, "play_start", {"playback_id": pid, "position_s": round(pos, 3), **first}, fg))
        if not offline and rng.random() < (0.45 if cellular else 0.2):
            mark(t, "buffer_start", pos)
            t += int(rng.uniform(150, 3500 if cellular else 1500))
            mark(t, "buffer_end", pos)

        # Hazards per minute of playing time.
        pause_h, seek_h, speed_h, bookmark_h, error_h = _HAZARDS[kind]
        buffer_h = 0.0 if offline else _BUFFER_HAZARD[cellular] * (1.5 if kind == "video" else 1)
        # Audio apps spend much of their time in the background (screen locked); videos
        # less, but often enough.
        to_bg_h = (0.06 if kind == "video" else 0.1) if user.can_background else 0.0
        to_fg_h = 0.25 if kind == "video" else 0.08
        weights = [pause_h, seek_h, buffer_h, speed_h, bookmark_h, to_bg_h, error_h]
        if fg is False:
            weights[5] = to_fg_h
        total = sum(weights)
        hb_ms = user.heartbeat_ms
        next_hb = hb_ms
        next_inc = int(rng.expovariate(total / _MINUTE)) + 1
        played = 0
        n_chapters = len(starts)
        while True:
            d_end = math.ceil((dur - pos) * 1000 / rate)
            d_ch = (
                math.ceil((starts[ci + 1] - pos) * 1000 / rate) if ci + 1 < n_chapters else _NEVER
            )
            d_stop = budget - played if budget is not None else _NEVER
            d = max(0, min(d_end, d_ch, next_hb, next_inc, d_stop))
            t += d
            played += d
            next_hb -= d
            next_inc -= d
            pos = min(dur, pos + rate * d / 1000)
            if d == d_end:  # the end of the content
                mark(t, "play_end", dur, {"reason": "completed"})
                return t, dur, "completed"
            if d == d_ch:
                ci += 1
                pos = max(pos, starts[ci])
                chapter(t, ci, pos)
                continue
            if next_hb <= 0:
                mark(t, "heartbeat", pos, {"playback_rate": rate})
                next_hb = hb_ms - int(rng.random() * 250)
                continue
            if d == d_stop:  # the listener is done
                if ending == "killed":
                    return t, pos, "killed"
                if ending == "stopped" and rng.random() < 0.35:
                    mark(t, "pause", pos)
                    t += int(rng.uniform(2, 120) * _SECOND)
                reason = "next" if ending == "next" else "stopped"
                mark(t, "play_end", pos, {"reason": reason})
                return t, pos, reason
            # Otherwise next_inc reached 0: an incident.
            what = rng.choices(_INCIDENTS, weights=weights)[0]
            if what == "pause":
                mark(t, "pause", pos)
                r = rng.random()
                if r < 0.6:
                    paused = rng.uniform(3, 60) * _SECOND
                elif r < 0.93:
                    paused = rng.uniform(1, 10) * _MINUTE
                elif r < 0.98:
                    paused = rng.uniform(10, 28) * _MINUTE
                else:
                    paused = rng.uniform(31, 90) * _MINUTE  # longer than the idle timeout
                t += int(paused)
                if rng.random() < 0.1:
                    mark(t, "play_end", pos, {"reason": "stopped"})
                    return t, pos, "stopped"
                mark(t, "resume", pos)
            elif what == "seek":
                target = self._seek_target(kind, pos, dur, starts)
                if abs(target - pos) >= 1.0:
                    mark(t, "seek", target, {"from_position_s": round(pos, 3)})
                    pos = target
                    new_ci = bisect_right(starts, pos) - 1
                    if new_ci != ci:
                        ci = new_ci
                        chapter(t, ci, pos)
                    if not offline and rng.random() < 0.4:
                        mark(t, "buffer_start", pos)
                        t += int(rng.uniform(100, 1500))
                        mark(t, "buffer_end", pos)
            elif what == "buffer":
                mark(t, "buffer_start", pos)
                t += int(rng.uniform(300, 9000 if cellular else 4000))
                mark(t, "buffer_end", pos)
            elif what == "speed":
                rate = rng.choice([r for r in _RATES if r != rate])
                mark(t, "speed_change", pos, {"playback_rate": rate})
            elif what == "bookmark":
                mark(t, "bookmark", pos)
            elif what == "visibility":
                fg = not fg
                self._foreground = fg
                emit(
                    (t, "visibility_change", {"playback_id": pid, "position_s": round(pos, 3)}, fg)
                )
                weights[5] = to_bg_h if fg else to_fg_h
                total = sum(weights)
            else:
                code, message = rng.choice(_ERRORS)
                mark(t, "error", pos, {"error_code": code, "error_message": message})
                if rng.random() < 0.7:
                    t += rng.randint(0, 50)
                    mark(t, "play_end", pos, {"reason": "error"})
                return t, pos, "error"
            next_inc = int(rng.expovariate(total / _MINUTE)) + 1

    def _seek_target(self, kind: str, pos: float, dur: float, starts: list[float]) -> float:
        rng = self.rng
        r = rng.random()
        if kind == "audiobook":
            if r < 0.6:
                target = pos - rng.choice((15.0, 30.0, 30.0, 60.0))
            elif r < 0.85:
                target = pos + 30.0
            elif starts:
                ci = bisect_right(starts, pos) - 1
                target = starts[max(0, min(len(starts) - 1, ci + rng.choice((-1, 1, 1))))]
            else:
                target = pos + 30.0
        elif kind == "episode":
            target = pos + rng.choice((30.0, 30.0, 60.0, 90.0)) if r < 0.7 else pos - 15.0
        elif kind == "video":
            target = pos + rng.uniform(10, 300) if r < 0.6 else pos - rng.uniform(5, 120)
        else:
            target = rng.uniform(0, dur)
        return round(min(max(0.0, target), dur - 0.5), 3)

    # -- commerce --------------------------------------------------------------------

    def _shop(self, user: _User, t: int, events: list[_Logical]) -> int:
        """A shopping session: vendor page, product pages, favorites, cart, order."""
        rng = self.rng
        v = int(self.vendors.pick(rng))
        vendor_id = self.vendor_ids[v]
        products = self.vendor_products[v]
        currency = user.currency
        emit = events.append
        if rng.random() < 0.45:
            emit((t, "vendor_view", {"vendor_id": vendor_id}, None))
            t += int(rng.uniform(5, 60) * _SECOND)
        viewed: list[_Product] = []
        for _ in range(1 + min(9, int(rng.expovariate(0.45)))):
            k = min(int(rng.expovariate(0.35)), len(products) - 1)
            p = products[k]
            fields: dict[str, Any] = {"vendor_id": vendor_id, "product_id": p.product_id}
            fields["amount_minor"] = p.price_minor
            fields["currency"] = currency
            emit((t, "product_view", fields, None))
            if p not in viewed:
                viewed.append(p)
            t += int(rng.uniform(8, 150) * _SECOND)
            if rng.random() < 0.12:
                emit(
                    (
                        t,
                        "product_favorite",
                        {"vendor_id": vendor_id, "product_id": p.product_id},
                        None,
                    )
                )
                t += int(rng.uniform(2, 20) * _SECOND)
        if rng.random() >= 0.35:
            return t
        lines: list[dict[str, Any]] = []
        for p in viewed[: rng.randint(1, 3)]:
            qty = rng.choices((1, 2, 3), weights=(85, 10, 5))[0]
            emit(
                (
                    t,
                    "cart_add",
                    {
                        "vendor_id": vendor_id,
                        "product_id": p.product_id,
                        "quantity": qty,
                        "amount_minor": p.price_minor * qty,
                        "currency": currency,
                    },
                    None,
                )
            )
            lines.append(
                {
                    "product_id": p.product_id,
                    "vendor_id": vendor_id,
                    "quantity": qty,
                    "amount_minor": p.price_minor * qty,
                }
            )
            t += int(rng.uniform(3, 40) * _SECOND)
        if rng.random() >= 0.5:
            return t
        t += int(rng.uniform(30, 300) * _SECOND)
        order = {
            "vendor_id": vendor_id,
            "product_id": lines[0]["product_id"],
            "order_id": f"ord-{rng.getrandbits(48):012x}",
            "amount_minor": sum(line["amount_minor"] for line in lines),
            "currency": currency,
            "items": lines,
        }
        emit((t, "order_created", order, None))
        if rng.random() < 0.88:
            t += int(rng.uniform(5, 180) * _SECOND)
            done = _clone(order)
            done["properties"] = {"payment_method": rng.choice(_PAYMENT_METHODS)}
            emit((t, "order_completed", done, None))
        return t

    # -- delivery --------------------------------------------------------------------

    def _deliver(
        self,
        user: _User,
        ctx: dict[str, Any],
        session_id: str | None,
        events: list[_Logical],
        *,
        sync_at: int | None,
    ) -> None:
        """Cut ``events`` into requests: by flush timer and at ``play_end`` (online), or
        all at ``sync_at`` in chunks (an offline backlog)."""
        if not events:
            return
        self._generated += len(events)
        if sync_at is not None:
            for i in range(0, len(events), _SYNC_BATCH):
                self._send(user, ctx, session_id, events[i : i + _SYNC_BATCH], sync_at + i * 2)
            return
        flush = user.flush_ms
        batch: list[_Logical] = []
        deadline = 0
        for ev in events:
            if batch and ev[0] > deadline:
                self._send(user, ctx, session_id, batch, deadline)
                batch = []
            if not batch:
                deadline = ev[0] + flush
            batch.append(ev)
            if ev[1] == "play_end" or ev[1] == "order_completed":
                self._send(user, ctx, session_id, batch, ev[0] + 5)
                batch = []
        if batch:
            self._send(user, ctx, session_id, batch, deadline)

    def _send(
        self,
        user: _User,
        ctx: dict[str, Any],
        session_id: str | None,
        batch: list[_Logical],
        send_ms: int,
    ) -> None:
        """Turn one request's logical events into payloads and queue them by receipt,
        applying out-of-order delivery, duplicates and invalid events."""
        cfg, d = self.cfg, self.drng
        latency = int(user.latency_ms * d.uniform(0.7, 2.5)) * (
            2 if ctx.get("network_type") == "cellular" else 1
        )
        order = batch
        if d.random() < cfg.out_of_order_rate:
            if len(batch) > 1 and d.random() < 0.5:
                order = list(batch)
                d.shuffle(order)
            else:
                send_ms += int(d.uniform(2, 300) * _SECOND)  # a failed attempt, retried
        received = send_ms + max(1, latency)
        skew = user.skew_ms
        fmt = self._fmt_local if user.local_offsets else self._fmt_utc
        zone = user.zone
        sent_at = fmt(send_ms + skew, zone) if user.sends_sent_at else None
        envelope: dict[str, Any] = {"event_type": "", "event_id": "", "occurred_at": ""}
        if sent_at is not None:
            envelope["sent_at"] = sent_at
        if user.user_id is not None:
            envelope["user_id"] = user.user_id
        if user.anonymous_id is not None:
            envelope["anonymous_id"] = user.anonymous_id
        if session_id is not None:
            envelope["session_id"] = session_id
        invalid_rate = cfg.invalid_rate
        payloads: list[dict[str, Any]] = []
        valid: list[bool] = []
        for t, typ, fields, fg in order:
            p = envelope.copy()
            p["event_type"] = typ
            p["event_id"] = _uuid(d)
            p["occurred_at"] = fmt(t + skew, zone)
            c = ctx.copy()
            if fg is not None:
                c["foreground"] = fg
            p["context"] = c
            p.update(fields)
            if invalid_rate and d.random() < invalid_rate:
                self._corrupt(p)
                valid.append(False)
            else:
                valid.append(True)
            payloads.append(p)
        self._push(received, payloads, valid)
        if d.random() < cfg.duplicate_rate:
            # The acknowledgement was lost: the client sends the same request again.
            later = int(d.uniform(1, 600) * _SECOND)
            copies = [_clone(p) for p in payloads]
            if sent_at is not None and d.random() < 0.7:
                resent_at = fmt(send_ms + later + skew, zone)
                for p in copies:
                    p["sent_at"] = resent_at
            self._push(received + later, copies, list(valid))

    def _corrupt(self, payload: dict[str, Any]) -> None:
        """Make ``payload`` invalid: an unknown type, no user, or a naive timestamp."""
        d = self.drng
        r = d.randrange(3)
        if r == 0:
            payload["event_type"] = d.choice(_BOGUS_TYPES)
        elif r == 1:
            payload.pop("user_id", None)
            payload.pop("anonymous_id", None)
        else:
            stamp: str = payload["occurred_at"]
            payload["occurred_at"] = stamp[:-1] if stamp.endswith("Z") else stamp[:-6]

    def _push(self, received: int, payloads: list[dict[str, Any]], valid: list[bool]) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (received, self._seq, payloads, valid))

    # -- time formatting -------------------------------------------------------------

    def _fmt_utc(self, ms: int, zone: ZoneInfo) -> str:
        """ISO 8601 in UTC with millisecond precision and ``Z``."""
        minute, rem = divmod(ms, _MINUTE)
        prefix = self._minute_prefix.get(minute)
        if prefix is None:
            prefix = (_EPOCH + timedelta(minutes=minute)).strftime("%Y-%m-%dT%H:%M:")
            self._minute_prefix[minute] = prefix
        s, milli = divmod(rem, 1000)
        return f"{prefix}{s:02d}.{milli:03d}Z"

    def _fmt_local(self, ms: int, zone: ZoneInfo) -> str:
        """ISO 8601 in the device's local time with its UTC offset (``+05:30``)."""
        local = (_EPOCH + timedelta(milliseconds=ms)).astimezone(zone)
        return local.isoformat(timespec="milliseconds")
