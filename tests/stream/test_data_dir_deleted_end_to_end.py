"""The issue's fault, end to end: the data dir is deleted under a running collector.

Before, SQLite kept appending to the unlinked files and 50 of 50 POSTs answered 200 with
their events lost. Now every append checks the file is still there and the collector
answers 503 (retry later), so no event is acknowledged that nobody will ever read.
"""

from __future__ import annotations

import json
import shutil

import httpx

from playpulse.testing import playpulse_server


def event(n: int) -> dict[str, object]:
    return {
        "event_id": f"deleted-dir-{n}",
        "event_type": "play_start",
        "occurred_at": "2026-11-21T08:00:00Z",
        "user_id": f"listener-{n}",
        "playback_id": f"pb-{n}",
        "position_s": 0,
        "content": {"content_id": "book-42", "content_type": "audiobook"},
        "context": {"device_type": "mobile", "platform": "ios"},
    }


def test_posts_after_the_data_dir_was_deleted_are_refused_not_acknowledged(tmp_path):
    data_dir = tmp_path / "data"
    with playpulse_server("collect", data_dir, tmp_path / "collect.log") as (url, _):
        before = httpx.post(f"{url}/v1/events", json=[event(0)], timeout=30)
        assert before.status_code == 200
        assert before.json()["accepted"] == 1

        shutil.rmtree(data_dir)
        answers = [
            httpx.post(f"{url}/v1/events", json=[event(n)], timeout=30) for n in range(1, 51)
        ]

        assert [a.status_code for a in answers] == [503] * 50
        body = json.loads(answers[0].content)
        assert "gone" in body["error"]["message"]
        assert answers[0].headers.get("Retry-After")
