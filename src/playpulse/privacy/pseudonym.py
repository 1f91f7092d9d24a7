"""Keyed pseudonyms of user ids, and the suppression list of erased users.

With ``pseudonymize_users`` (``--pseudonymize-users``, ``PLAYPULSE_PSEUDONYMIZE_USERS``)
the collector and the importers store ``u_`` + HMAC-SHA256(secret, user_id) (64 hex
digits) instead of a ``user_id`` and ``a_`` + HMAC-SHA256(secret, anonymous_id) instead
of an ``anonymous_id``, before anything is written: the stream, the lake, the store and
the quarantine (a rejected event's raw JSON, when it can be read) never see the clear id.
The secret is 32 random bytes made once per data dir, in ``<data dir>/privacy/secret``
(mode 0600, folder 0700); whoever holds it can map a clear id to its pseudonym (that is
how ``playpulse privacy delete/export --user`` find a person), never back.

The suppression list (``<data dir>/privacy/suppressed``, one subject hash a line)
holds the users erased with ``--suppress``: the collector refuses their later events
(answered as rejected with reason ``suppressed``, not quarantined). It keeps keyed
hashes only, so it does not keep the ids it suppresses.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from playpulse.config import Settings
from playpulse.errors import ConfigError, EventValidationError
from playpulse.events.codec import decode_stored, encode_event
from playpulse.events.model import EventBase

#: The data dir's folder of privacy files (secret, suppression list, receipts).
PRIVACY_DIR = "privacy"
SECRET_FILE = "secret"
SUPPRESSED_FILE = "suppressed"
#: Prefixes of pseudonyms: of a ``user_id``, of an ``anonymous_id``.
USER_PREFIX = "u_"
ANONYMOUS_PREFIX = "a_"
#: Prefix of a subject hash (receipts, suppression list): see :func:`subject_hash`.
SUBJECT_PREFIX = "s_"
#: The reason of an event refused because its user is on the suppression list.
SUPPRESSED_REASON = "suppressed"


def privacy_dir(settings: Settings) -> Path:
    """``<data dir>/privacy``: the secret, the suppression list and the receipts."""
    return settings.data_dir / PRIVACY_DIR


def _private_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise ConfigError(f"cannot create the privacy folder {path}: {exc.strerror}") from exc
    return path


def load_secret(settings: Settings, *, create: bool) -> bytes | None:
    """The data dir's pseudonym secret (32 bytes); made (mode 0600) when missing and
    ``create``, else ``None`` when missing. Several processes may call this at once: one
    file wins (written whole, then linked into place), all read it. Raises
    :class:`~playpulse.errors.ConfigError` when it cannot be read or made, or is not 64
    hex digits."""
    path = privacy_dir(settings) / SECRET_FILE
    if not path.exists():
        if not create:
            return None
        folder = _private_dir(privacy_dir(settings))
        tmp = folder / f".{SECRET_FILE}.{os.getpid()}-{secrets.token_hex(8)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, secrets.token_hex(32).encode() + b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
            with contextlib.suppress(FileExistsError):  # another process made it first
                os.link(tmp, path)
        except OSError as exc:
            raise ConfigError(f"cannot make the pseudonym secret {path}: {exc.strerror}") from exc
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
    try:
        text = path.read_text(encoding="ascii").strip()
        return bytes.fromhex(text) if len(text) == 64 else _bad_secret(path)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the pseudonym secret {path}: {exc}") from exc


def _bad_secret(path: Path) -> bytes:
    raise ConfigError(f"the pseudonym secret {path} is not 64 hex digits; restore it from a backup")


def pseudonym(secret: bytes, value: str, prefix: str = USER_PREFIX) -> str:
    """``prefix`` + HMAC-SHA256(``secret``, ``value`` as UTF-8), hex (66 characters with
    the 2-character prefixes)."""
    return prefix + hmac.new(secret, value.encode(), hashlib.sha256).hexdigest()


def identities(settings: Settings, user_id: str) -> set[str]:
    """The ids under which the data dir may hold person ``user_id`` (clear or
    pseudonymised, as user or anonymous id): ``user_id`` and, when the data dir has a
    secret, its ``u_`` and ``a_`` pseudonyms."""
    found = {user_id}
    secret = load_secret(settings, create=False)
    if secret is not None:
        found |= {pseudonym(secret, user_id), pseudonym(secret, user_id, ANONYMOUS_PREFIX)}
    return found


def subject_hash(secret: bytes, user_id: str) -> str:
    """The keyed hash that names person ``user_id`` in receipts and the suppression list:
    ``s_`` + HMAC-SHA256(``secret``, ``"subject\\0"`` + id), hex. Another domain than the
    pseudonyms, so a receipt never holds an id the data dir stores; whoever holds the
    secret can check whether a given id was erased, but the id cannot be read back."""
    return pseudonym(secret, "subject\0" + user_id, SUBJECT_PREFIX)


def suppressed(settings: Settings) -> set[str]:
    """The subject hashes on the data dir's suppression list (empty when it has none).
    Raises :class:`~playpulse.errors.ConfigError` when the file cannot be read."""
    path = privacy_dir(settings) / SUPPRESSED_FILE
    try:
        lines = path.read_text(encoding="ascii").split()
    except FileNotFoundError:
        return set()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the suppression list {path}: {exc}") from exc
    return set(lines)


def suppress(settings: Settings, user_id: str) -> str:
    """Put person ``user_id`` on the suppression list (by :func:`subject_hash`; the
    secret is made when missing); returns the hash. The file is replaced atomically
    (mode 0600). Raises :class:`~playpulse.errors.ConfigError` when it cannot be
    written."""
    secret = load_secret(settings, create=True)
    assert secret is not None
    digest = subject_hash(secret, user_id)
    names = suppressed(settings) | {digest}
    folder = _private_dir(privacy_dir(settings))
    tmp = folder / f".{SUPPRESSED_FILE}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write("".join(f"{n}\n" for n in sorted(names)))
        os.replace(tmp, folder / SUPPRESSED_FILE)
    except OSError as exc:
        raise ConfigError(f"cannot write the suppression list in {folder}: {exc}") from exc
    return digest


def pseudonymize_event(secret: bytes, event: EventBase) -> EventBase:
    """``event`` with its ``user_id`` and ``anonymous_id`` replaced by their pseudonyms
    (ids that are pseudonyms already are kept)."""
    changes: dict[str, str] = {}
    user, anonymous = event.user_id, event.anonymous_id
    if user is not None and not _is_pseudonym(user, USER_PREFIX):
        changes["user_id"] = pseudonym(secret, user)
    if anonymous is not None and not _is_pseudonym(anonymous, ANONYMOUS_PREFIX):
        changes["anonymous_id"] = pseudonym(secret, anonymous, ANONYMOUS_PREFIX)
    return msgspec.structs.replace(event, **changes) if changes else event


def _is_pseudonym(value: str, prefix: str) -> bool:
    body = value[len(prefix) :]
    return (
        value.startswith(prefix) and len(body) == 64 and all(c in "0123456789abcdef" for c in body)
    )


def pseudonymize_events(
    settings: Settings, events: Sequence[tuple[EventBase, str, bytes]]
) -> list[tuple[EventBase, str, bytes]]:
    """An import's ``events`` — (validated event, stream key, stored JSON payload) — with
    pseudonymous ids when ``settings.pseudonymize_users`` (else as they are)."""
    if not settings.pseudonymize_users:
        return list(events)
    secret = load_secret(settings, create=True)
    assert secret is not None
    out = []
    for event, _, _ in events:
        changed = pseudonymize_event(secret, event)
        out.append((changed, changed.actor_id, encode_event(changed)))
    return out


class UserPrivacy:
    """The collector's privacy hook (:meth:`filter`): pseudonymises the valid events'
    user and anonymous ids when ``pseudonymize``, refuses the events of suppressed users
    (re-reading the suppression list when its file changes), and scrubs the ids out of
    rejected raw JSON (:meth:`scrub_raw`). Raises :class:`~playpulse.errors.ConfigError`
    when the secret cannot be made or read."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pseudonymize = settings.pseudonymize_users
        self._secret = load_secret(settings, create=self.pseudonymize)
        self._list_path = privacy_dir(settings) / SUPPRESSED_FILE
        self._list_stamp: tuple[int, int] | None = None
        self._suppressed: set[str] = set()

    def _current_list(self) -> set[str]:
        try:
            st = os.stat(self._list_path)
        except OSError:
            self._list_stamp, self._suppressed = None, set()
            return self._suppressed
        stamp = (st.st_mtime_ns, st.st_ino)
        if stamp != self._list_stamp:
            self._suppressed = suppressed(self.settings)
            self._list_stamp = stamp
            if self._secret is None:
                self._secret = load_secret(self.settings, create=False)
        return self._suppressed

    def filter(
        self,
        records: list[tuple[str, bytes]],
        invalid: Sequence[tuple[int, EventValidationError]],
        n_raws: int,
    ) -> tuple[list[tuple[str, bytes]], list[tuple[int, EventValidationError]]]:
        """The valid ``records`` — ``(stream key, stored JSON)`` of a request of
        ``n_raws`` events, ``invalid`` being the others — to append: pseudonymised, less
        those of suppressed users, which come back as ``(index in the request, error)``
        (reason ``suppressed``; they are not to be quarantined)."""
        blocked = self._current_list()
        if not records or (not self.pseudonymize and not blocked):
            return records, []
        secret = self._secret
        if secret is None:  # a suppression list without a secret cannot match anything
            return records, []
        rejected_at = {index for index, _ in invalid}
        accepted_at = [i for i in range(n_raws) if i not in rejected_at]
        kept: list[tuple[str, bytes]] = []
        refused: list[tuple[int, EventValidationError]] = []
        for n, (key, payload) in enumerate(records):
            event = decode_stored(payload)
            if blocked and self._is_blocked(secret, event, blocked):
                message = "this user's data was erased on request; their events are refused"
                refused.append(
                    (
                        accepted_at[n],
                        EventValidationError(
                            message, [{"loc": "user_id", "msg": message}], SUPPRESSED_REASON
                        ),
                    )
                )
                continue
            if self.pseudonymize:
                event = pseudonymize_event(secret, event)
                kept.append((event.actor_id, encode_event(event)))
            else:
                kept.append((key, payload))
        return kept, refused

    @staticmethod
    def _is_blocked(secret: bytes, event: EventBase, blocked: set[str]) -> bool:
        return any(
            value is not None and subject_hash(secret, value) in blocked
            for value in (event.user_id, event.anonymous_id)
        )

    def scrub_raw(self, raw: bytes) -> bytes:
        """A rejected event's raw JSON for the quarantine: with pseudonymisation on, its
        top-level ``user_id`` / ``anonymous_id`` strings replaced by their pseudonyms
        when it parses as a JSON object; else (or when it does not parse) as it is."""
        if not self.pseudonymize or self._secret is None:
            return raw
        try:
            data: Any = json.loads(raw)
        except (ValueError, RecursionError):
            return raw
        if not isinstance(data, dict):
            return raw
        changed = False
        for name, prefix in (("user_id", USER_PREFIX), ("anonymous_id", ANONYMOUS_PREFIX)):
            value = data.get(name)
            if isinstance(value, str) and not _is_pseudonym(value, prefix):
                data[name] = pseudonym(self._secret, value, prefix)
                changed = True
        return json.dumps(data, separators=(",", ":")).encode() if changed else raw


def needles(ids: Iterable[str]) -> list[bytes]:
    """The bytes under which ``ids`` appear in stored JSON and SQLite text: each as UTF-8
    and as its JSON string body (escapes), without duplicates."""
    out: list[bytes] = []
    for value in sorted(ids):
        for form in (value.encode(), msgspec.json.encode(value)[1:-1]):
            if form and form not in out:
                out.append(form)
    return out
