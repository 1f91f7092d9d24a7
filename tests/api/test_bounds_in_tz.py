"""The read API's ``from``/``to`` follow the rule of ``playpulse query --from/--to``
(issue #11, item 7): a date is midnight in ``tz``, a time without offset is read in
``tz``, an offset or Z in the value wins, and without ``tz`` it is UTC. The figures, not
only the echoed parameters, follow that window; the CLI and the API read every value
alike (one parser, :func:`playpulse.query.window.read_bound`).

The data is a small Spotify extended history imported with the real ``playpulse
import``, served by a real ``playpulse up`` on 127.0.0.1.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.datastructures import QueryParams as Query

from playpulse.api.auth import ApiError
from playpulse.api.params import parse_params
from playpulse.cli import _when as cli_bound
from playpulse.testing import playpulse_server, run_cli, write_spotify_history

# A: 61 s from 2023-12-31T23:30Z (00:30 on Jan 1st in Berlin); C: 64 s from
# 2024-01-31T23:30Z (00:30 on Feb 1st in Berlin). Spotify's `ts` is when a play ended.
PLAYS = {"A": ("2023-12-31T23:31:01Z", 61_000), "C": ("2024-01-31T23:31:04Z", 64_000)}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``playpulse up`` on a data dir holding the imported plays A and C; its base URL."""
    root = tmp_path_factory.mktemp("api-bounds-in-tz")
    export = write_spotify_history(root / "Streaming_History_Audio_2024.json", PLAYS)
    data_dir = root / "data"
    imported = run_cli("import", str(export), "--user", "sam", "--data-dir", str(data_dir))
    assert imported.returncode == 0, imported.stderr
    with playpulse_server("up", data_dir, root / "up.log") as (base, _):
        yield base


def overview(base: str, **params: str) -> dict[str, Any]:
    response = httpx.get(f"{base}/v1/metrics/overview", params=params, timeout=60)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def figures(body: dict[str, Any]) -> tuple[int, float]:
    (row,) = body["rows"]
    return row["plays"], row["listening_s"]


def test_dates_are_midnights_in_tz_and_utc_without_it(server: str) -> None:
    january = {"from": "2024-01-01", "to": "2024-02-01"}
    utc = overview(server, **january)
    assert figures(utc) == (1, 64.0)  # C
    assert (utc["window"]["from"], utc["window"]["to"]) == (
        "2024-01-01T00:00:00Z",
        "2024-02-01T00:00:00Z",
    )
    berlin = overview(server, **january, tz="Europe/Berlin")
    assert figures(berlin) == (1, 61.0)  # A
    assert (berlin["window"]["from"], berlin["window"]["to"]) == (
        "2023-12-31T23:00:00Z",
        "2024-01-31T23:00:00Z",
    )


def test_an_offset_or_z_wins_over_tz_and_a_naive_time_is_read_in_tz(server: str) -> None:
    # The UTC January in Berlin's buckets: still C only.
    explicit = {"from": "2024-01-01T00:00:00Z", "to": "2024-02-01T00:00:00+00:00"}
    assert figures(overview(server, **explicit, tz="Europe/Berlin")) == (1, 64.0)
    # 00:45 in Berlin is after A started there (00:30), 00:15 before it.
    late = overview(server, **{"from": "2024-01-01T00:45", "to": "2024-02-01"}, tz="Europe/Berlin")
    assert figures(late)[0] == 0
    early = overview(server, **{"from": "2024-01-01T00:15", "to": "2024-02-01"}, tz="Europe/Berlin")
    assert figures(early) == (1, 61.0)
    assert early["window"]["from"] == "2023-12-31T23:15:00Z"


ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"]
# Naive wall-clock times; the offsets are drawn apart, as text.
moments = st.datetimes(
    min_value=datetime(1971, 1, 1),  # noqa: DTZ001
    max_value=datetime(2099, 1, 1),  # noqa: DTZ001
)
offsets = st.sampled_from(["", "Z", "z", "+00:00", "+05:30", "-08:00"])


@given(moment=moments, offset=offsets, tz=st.sampled_from(ZONES), date_only=st.booleans())
def test_the_cli_and_the_api_read_every_bound_alike(
    moment: datetime, offset: str, tz: str, date_only: bool
) -> None:
    text = moment.date().isoformat() if date_only else moment.isoformat() + offset
    api = parse_params(Query({"from": text, "tz": tz})).start
    assert api is not None
    assert cli_bound(text, "--from", tz) == api
    # The rule itself: without an offset, wall-clock time in tz; with one, that instant.
    if date_only or not offset:
        local = moment.replace(hour=0, minute=0, second=0, microsecond=0) if date_only else moment
        assert api == local.replace(tzinfo=ZoneInfo(tz)).astimezone(UTC)
    else:
        fixed = datetime.fromisoformat(moment.isoformat() + offset.upper())
        assert api == fixed.astimezone(UTC)


@given(text=st.text(max_size=30), tz=st.sampled_from(ZONES))
def test_any_text_the_api_accepts_the_cli_reads_as_the_same_instant(text: str, tz: str) -> None:
    # The API also bounds the range and the length; the CLI reads the text alone.
    try:
        api = parse_params(Query({"from": text, "tz": tz})).start
    except ApiError:
        return
    if api is None:  # an empty (or blank) value counts as absent
        assert not text.strip()
        return
    assert cli_bound(text, "--from", tz) == api, text
