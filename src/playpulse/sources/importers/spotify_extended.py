"""Spotify *extended* streaming history (``endsong_N.json``, ``Streaming_History_Audio_*``,
``Streaming_History_Video_*``): a JSON array, one object per playback.

Source (per Spotify's ReadMeFirst_ExtendedStreamingHistory and the real exports under
``shared/data/real``): ``ts`` is the UTC time playback *stopped*; ``ms_played`` the
milliseconds actually played. All three key generations are read, and no optional key is
required:

1. 2021 ``endsong``: ``username``, ``ip_addr_decrypted``, ``user_agent_decrypted``,
   ``offline_timestamp`` in milliseconds, ``skipped`` often null;
2. 2023 ``Streaming_History_Audio``: the same keys, ``offline_timestamp`` in seconds;
3. 2024+: ``ip_addr``, no username or user agent, ``audiobook_*`` keys.

**One row = one play** of ``ms_played`` ending at ``ts``: ``play_start`` at
``ts - ms_played`` (position 0), a ``heartbeat`` every 10 minutes of playing, ``play_end``
at ``ts`` (see :func:`~playpulse.sources.importers.base.play_events`), so the play's
playing time is exactly ``ms_played / 1000`` seconds and it is a skip exactly when
``ms_played < 30000``. The play ends with reason ``completed`` for ``reason_end``
``trackdone``, ``next`` for ``fwdbtn``/``backbtn``, ``error`` for ``trackerror`` and
``stopped`` otherwise. The ``play_end`` properties keep Spotify's own skip signal as the
export gives it: ``skipped`` (when true or false) and ``reason_end`` (when not empty), from
which the processor derives the play's ``skipped_by_source``
(:func:`~playpulse.processor.plays.source_skip_signal`), beside the 30-second rule.

**Content** (by which group of fields is set): a track (``spotify_track_uri``,
``master_metadata_track_name``, creator = ``master_metadata_album_artist_name``), an
episode (``spotify_episode_uri``, ``episode_name``, creator = ``episode_show_name``) or an
audiobook (content id ``audiobook_uri``, title and creator = ``audiobook_title``,
``chapter_title`` = ``audiobook_chapter_title``; the chapter URI goes to the
``play_start`` properties). A row with no content fields at all is a track with content
id ``spotify:unknown``.

**User**: the caller's ``user_id`` when given, else the row's ``username``, else
``spotify-user``. **Context**: ``platform`` normalized to ios, android, windows, macos,
linux, web or other from both the verbose (``iOS 14.4.2 (iPhone10,3)``) and the
normalized (``ios``) spellings; ``device_type`` guessed from it; ``country`` from
``conn_country`` (``ZZ``, Spotify's "unknown", is left out); ``timezone`` the caller's
(``--tz``), else the zone of ``conn_country`` when the country keeps one time
(:func:`~playpulse.sources.importers.timezones.zone_of_country`: ``DE`` ->
``Europe/Berlin``), else none (the export has no zone). IP addresses, user agents and the
verbose platform string (a device model) are never stored.

**Identity**: the row without personal fields, with ``username`` replaced by the user
and ``offline_timestamp`` normalized to seconds (generation 1 has milliseconds).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from playpulse.sources.importers.base import (
    InvalidRow,
    MapContext,
    RowIdentity,
    SourceRow,
    as_int,
    clean_content,
    digest,
    ident,
    parse_iso_utc,
    play_events,
    require,
    strip_personal,
    text,
)
from playpulse.sources.importers.timezones import zone_of_country

NAME = "spotify_extended"
DEFAULT_USER = "spotify-user"
#: Longest accepted play, in milliseconds (a week; the longest real rows are hours).
MAX_MS_PLAYED = 7 * 24 * 3600 * 1000

#: ``reason_end`` values with their own ``play_end`` reason (others: ``stopped``).
END_REASONS = {
    "trackdone": "completed",
    "fwdbtn": "next",
    "backbtn": "next",
    "trackerror": "error",
}

_TRACK = ("spotify_track_uri", "master_metadata_track_name")
_EPISODE = ("spotify_episode_uri", "episode_name")
_AUDIOBOOK = ("audiobook_uri", "audiobook_chapter_uri", "audiobook_title")


def matches(first: Any) -> bool:
    """Whether a JSON array whose first element is ``first`` is this format."""
    return isinstance(first, dict) and "ts" in first and "ms_played" in first


def end_reason(reason_end: Any) -> str:
    """The ``play_end`` reason for Spotify's ``reason_end``."""
    return END_REASONS.get(reason_end, "stopped") if isinstance(reason_end, str) else "stopped"


def _keyword_device(s: str) -> str:
    if any(k in s for k in ("cast_tv", "_tv", " tv", "tv;", "television", "roku", "tvos")):
        return "tv"
    if any(k in s for k in ("sonos", "speaker", "echo", "alexa", "google_home", "homepod")):
        return "speaker"
    if any(k in s for k in ("playstation", "ps4", "ps5", "xbox")):
        return "console"
    if any(k in s for k in ("car", "android_auto", "carplay", "tesla")):
        return "car"
    if any(k in s for k in ("watch", "wear")):
        return "wearable"
    return "other"


def normalize_platform(raw: Any) -> tuple[str | None, str | None]:
    """``(platform, device_type)`` for a Spotify ``platform`` string, verbose or
    normalized.

    ``platform`` is one of ios, android, windows, macos, linux, web, other (``None`` when
    unknown); ``device_type`` one of the model's device types (``None`` when unknown).
    Examples: ``iOS 14.3 (iPad11,3)`` -> ``("ios", "tablet")``; ``windows`` ->
    ``("windows", "desktop")``; ``Partner google cast_tv;Chromecast;;`` ->
    ``("other", "tv")``; ``not_applicable`` -> ``("other", None)``.
    """
    if not isinstance(raw, str):
        return None, None
    s = raw.strip().lower()
    if not s or s == "unknown":
        return None, None
    if s == "not_applicable":
        return "other", None
    if s.startswith("partner") or s.startswith("cast"):
        return "other", _keyword_device(s)
    if s.startswith("ios") or "iphone" in s or "ipad" in s:
        return "ios", "tablet" if "ipad" in s else "mobile"
    if s.startswith("android"):
        device = _keyword_device(s)
        return "android", "mobile" if device == "other" else device
    if s.startswith(("web_player", "webplayer", "web player")) or s == "web":
        return "web", "web"
    if s.startswith("windows"):
        return "windows", "desktop"
    if s.startswith(("os x", "osx", "os_x", "macos", "mac os", "mac")):
        return "macos", "desktop"
    if s.startswith("linux"):
        return "linux", "desktop"
    return "other", _keyword_device(s)


def country(raw: Any) -> str | None:
    """An ISO 3166-1 alpha-2 code from ``conn_country``; ``None`` for ``ZZ`` or junk."""
    if isinstance(raw, str):
        code = raw.strip().upper()
        if len(code) == 2 and code.isascii() and code.isalpha() and code != "ZZ":
            return code
    return None


def _set(data: dict[str, Any], keys: tuple[str, ...]) -> bool:
    return any(data.get(k) not in (None, "") for k in keys)


def content_of(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(content, extra start properties)`` of a row (see the module docstring)."""
    if _set(data, _TRACK):
        title = text(data.get("master_metadata_track_name"), "master_metadata_track_name")
        creator = text(
            data.get("master_metadata_album_artist_name"), "master_metadata_album_artist_name"
        )
        album = text(
            data.get("master_metadata_album_album_name"), "master_metadata_album_album_name"
        )
        uri = text(data.get("spotify_track_uri"), "spotify_track_uri")
        cid = (
            ident("", uri)
            if uri
            else ident("spotify:track-name:", digest(creator or "", title or ""))
        )
        content = {"content_id": cid, "content_type": "track", "title": title, "creator": creator}
        return clean_content(content), {"album": album} if album else {}
    if _set(data, _EPISODE):
        title = text(data.get("episode_name"), "episode_name")
        show = text(data.get("episode_show_name"), "episode_show_name")
        uri = text(data.get("spotify_episode_uri"), "spotify_episode_uri")
        cid = (
            ident("", uri)
            if uri
            else ident("spotify:episode-name:", digest(show or "", title or ""))
        )
        content = {"content_id": cid, "content_type": "episode", "title": title, "creator": show}
        return clean_content(content), {}
    if _set(data, _AUDIOBOOK):
        book = text(data.get("audiobook_title"), "audiobook_title")
        chapter = text(data.get("audiobook_chapter_title"), "audiobook_chapter_title")
        uri = text(data.get("audiobook_uri"), "audiobook_uri")
        chapter_uri = text(data.get("audiobook_chapter_uri"), "audiobook_chapter_uri")
        if uri:
            cid = ident("", uri)
        elif chapter_uri:
            cid = ident("", chapter_uri)
        else:
            cid = ident("spotify:audiobook-name:", digest(book or ""))
        content = {
            "content_id": cid,
            "content_type": "audiobook",
            "title": book,
            "creator": book,
            "chapter_title": chapter,
        }
        return clean_content(content), {"chapter_uri": chapter_uri} if chapter_uri else {}
    return {"content_id": "spotify:unknown", "content_type": "track"}, {}


def _offline_seconds(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return None
    return value // 1000 if value >= 100_000_000_000 else value


def identity_of(data: dict[str, Any], user: str) -> dict[str, Any]:
    """What identifies a row: the row minus personal fields and ``username``, plus the
    resolved user and ``offline_timestamp`` in seconds."""
    out = {k: v for k, v in strip_personal(data).items() if k != "username"}
    out["user"] = user
    out["offline_timestamp"] = _offline_seconds(data.get("offline_timestamp"))
    return out


def _flag(data: dict[str, Any], key: str) -> dict[str, bool]:
    value = data.get(key)
    return {key: value} if isinstance(value, bool) else {}


def map_row(row: SourceRow, ctx: MapContext) -> list[dict[str, Any]]:
    """The events of one extended-history row (see the module docstring)."""
    data = row.data
    if not isinstance(data, dict):
        raise InvalidRow("row", f"expected a JSON object, got {type(data).__name__}")
    end = parse_iso_utc(require(data, "ts"), "ts")
    played_ms = as_int(require(data, "ms_played"), "ms_played")
    if not 0 <= played_ms <= MAX_MS_PLAYED:
        raise InvalidRow("ms_played", f"must be 0 to {MAX_MS_PLAYED}, got {played_ms}")
    user = ctx.user_id or text(data.get("username"), "username") or DEFAULT_USER
    content, extra = content_of(data)
    platform, device = normalize_platform(data.get("platform"))
    code = country(data.get("conn_country"))
    zone = ctx.timezone or (zone_of_country(code) if code else None)
    context = {
        k: v
        for k, v in (
            ("platform", platform),
            ("device_type", device),
            ("country", code),
            ("timezone", zone),
        )
        if v is not None
    }
    start_props: dict[str, Any] = dict(extra)
    reason_start = data.get("reason_start")
    if isinstance(reason_start, str) and reason_start:
        start_props["reason_start"] = reason_start[:64]
    for key in ("shuffle", "offline", "incognito_mode"):
        start_props.update(_flag(data, key))
    end_props: dict[str, Any] = _flag(data, "skipped")
    reason_raw = data.get("reason_end")
    if isinstance(reason_raw, str) and reason_raw:
        end_props["reason_end"] = reason_raw[:64]
    return play_events(
        RowIdentity.of(NAME, identity_of(data, user)),
        actor={"user_id": user},
        content=content,
        start=end - timedelta(milliseconds=played_ms),
        played_ms=played_ms,
        reason=end_reason(reason_raw),
        context=context,
        start_properties=start_props,
        end_properties=end_props,
    )
