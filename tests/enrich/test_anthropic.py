"""The Anthropic tagger against a local server answering in the Messages API's shape:
success, malformed output, 429 with retry-after and 500 are validated, retried and
cached; nothing leaves 127.0.0.1."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from playpulse.config import Settings
from playpulse.enrich.catalog import EnrichError, open_catalog, refresh_seen
from playpulse.enrich.providers import AnthropicTagger, TagResult, TitleText
from playpulse.enrich.tags import tag_pending

pytest.importorskip("anthropic")

KEY = "sk-ant-test-key"


def tool_answer(genre: str = "jazz", mood: str = "calm", confidence: float = 0.9) -> Any:
    return {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5",
        "content": [
            {
                "type": "tool_use",
                "id": "toolu_01",
                "name": "record_tags",
                "input": {
                    "genre": {"label": genre, "confidence": confidence},
                    "mood": {"label": mood, "confidence": 0.6},
                },
            }
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {"input_tokens": 50, "output_tokens": 20},
    }


def error(kind: str, message: str) -> Any:
    return {"type": "error", "error": {"type": kind, "message": message}}


Answer = tuple[int, dict[str, str], Any]
OK: Answer = (200, {}, tool_answer())
MALFORMED: Answer = (200, {}, tool_answer(genre="polka"))  # not a known genre
TEXT_ONLY: Answer = (
    200,
    {},
    {**tool_answer(), "content": [{"type": "text", "text": "I think it is jazz."}]},
)
RATE_LIMITED: Answer = (429, {"retry-after": "7"}, error("rate_limit_error", "slow down"))
SERVER_ERROR: Answer = (500, {}, error("api_error", "internal"))


@dataclass
class MessagesServer:
    """Answers POST /v1/messages from ``script`` (then with ``OK``), keeps each request."""

    script: list[tuple[int, dict[str, str], Any]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

    def answer(self) -> tuple[int, dict[str, str], Any]:
        return self.script.pop(0) if self.script else OK


@pytest.fixture
def server() -> Iterator[MessagesServer]:
    state = MessagesServer()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            state.requests.append(
                {
                    "path": self.path,
                    # Older SDKs send x-api-key, newer ones a bearer token.
                    "key": self.headers.get("x-api-key")
                    or (self.headers.get("authorization") or "").removeprefix("Bearer "),
                    "body": body,
                }
            )
            status, headers, payload = state.answer()
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


def tagger(server: MessagesServer, waits: list[float], **options: Any) -> AnthropicTagger:
    return AnthropicTagger(api_key=KEY, base_url=server.url, sleep=waits.append, **options)


def test_retries_then_validates(server: MessagesServer) -> None:
    waits: list[float] = []
    server.script = [RATE_LIMITED, SERVER_ERROR, MALFORMED, TEXT_ONLY, OK]
    provider = tagger(server, waits, attempts=5)
    (result,) = provider.tag_many([TitleText("c1", "So What", "Miles Davis", "Kind of Blue")])
    assert isinstance(result, TagResult)
    assert (result.genre.label, result.genre.confidence, result.mood.label) == ("jazz", 0.9, "calm")
    assert provider.requests == 5
    assert provider.retries == 4
    # The 429's retry-after is honoured; the 500 backs off (0.5 s doubled per attempt).
    assert waits == [7.0, 1.0]
    first = server.requests[0]
    assert first["path"] == "/v1/messages"
    assert first["key"] == KEY
    assert first["body"]["tool_choice"] == {"type": "tool", "name": "record_tags"}
    assert "So What by Miles Davis (Kind of Blue)" in first["body"]["messages"][0]["content"]


def test_gives_up_with_one_line(server: MessagesServer) -> None:
    waits: list[float] = []
    server.script = [SERVER_ERROR, MALFORMED, MALFORMED]
    # Each title's failure is given back in its place, as one line.
    (failed, ok) = tagger(server, waits, attempts=3).tag_many(
        [TitleText("c1", "x", None, None), TitleText("c2", "y", None, None)]
    )
    assert isinstance(failed, EnrichError)
    assert str(failed) == (
        "anthropic tagger: c1: no valid answer after 3 attempt(s): malformed answer (1 problem(s))"
    )
    assert isinstance(ok, TagResult)
    server.script = [(400, {}, error("invalid_request_error", "bad model"))]
    (refused,) = tagger(server, waits).tag_many([TitleText("c2", "x", None, None)])
    assert isinstance(refused, EnrichError)
    assert "refused the request (400)" in str(refused)
    assert KEY not in str(refused)
    # A long retry-after is capped.
    server.script = [(429, {"retry-after": "3600"}, error("rate_limit_error", "later"))]
    tagger(server, waits, max_wait_s=2.0).tag_many([TitleText("c3", "x", None, None)])
    assert waits[-1] == 2.0


def test_no_key_no_tagger(monkeypatch: pytest.MonkeyPatch) -> None:
    from playpulse.errors import ConfigError

    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY"):
        AnthropicTagger()


def test_tagging_job_caches_and_survives_failures(
    listened: Settings, server: MessagesServer
) -> None:
    refresh_seen(listened)  # four titles: a (9 plays), b, c (6), d (3)
    waits: list[float] = []
    provider = tagger(server, waits, attempts=2)
    # The first title asked (a, the most played) fails twice; the others succeed.
    server.script = [SERVER_ERROR, SERVER_ERROR]
    run = tag_pending(listened, provider, titles_per_s=1000.0)
    assert (run.tagged, run.cached, run.failed, run.pending) == (3, 0, 1, 1)
    assert len(server.requests) == 5
    # Next run: only a is asked again.
    run = tag_pending(listened, provider, titles_per_s=1000.0)
    assert (run.tagged, run.failed, run.pending) == (1, 0, 0)
    assert len(server.requests) == 6
    with open_catalog(listened, readonly=True) as db:
        tags = db.execute("SELECT content_id, kind, label, provider, model FROM tags").fetchall()
        assert len(tags) == 8
        assert {(t["kind"], t["label"]) for t in tags} == {("genre", "jazz"), ("mood", "calm")}
        assert {t["model"] for t in tags} == {"claude-haiku-4-5"}
    # Tags lost (or asked for again): answered from the cache, no request.
    with open_catalog(listened) as db:
        db.execute("DELETE FROM tags")
    run = tag_pending(listened, provider, titles_per_s=1000.0)
    assert (run.tagged, run.cached) == (4, 4)
    assert len(server.requests) == 6
    # A renamed title (as the next seen job finds it) is tagged again, alone.
    with open_catalog(listened) as db:
        db.execute("UPDATE seen SET title = 'Song a (Remastered)' WHERE title = 'Song a'")
    run = tag_pending(listened, provider, titles_per_s=1000.0)
    assert (run.tagged, run.cached, run.pending) == (1, 0, 0)
    assert len(server.requests) == 7
    assert "Song a (Remastered) by Band" in str(server.requests[-1]["body"]["messages"])
    # Another prompt version is another cache key: asked again.
    provider.prompt_version = "anthropic-tags-2"
    run = tag_pending(listened, provider, titles_per_s=1000.0)
    assert (run.tagged, run.cached) == (4, 0)
    assert len(server.requests) == 11
