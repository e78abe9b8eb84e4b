"""Principals and tokens in PostgreSQL, and the cache that keeps them off the request path.

The one place users, roles and tokens are read and written (``auth_users`` and ``auth_tokens``
of migration 0005). :class:`TokenCache` holds a :class:`~kafkastore.auth.Snapshot` of every live
token; it reloads on ``NOTIFY kafkastore_auth`` (a trigger sends it on every change) and at
least every ``ttl`` seconds (``auth_cache_ttl``) besides. So a revoked token, a removed user or
a changed role takes effect within milliseconds, and within :func:`revocation_bound` (``ttl`` +
:data:`RELOAD_ALLOWANCE`: 2 s with the default ttl of 1 s) even when the notification is lost,
as long as the API process reaches PostgreSQL (while it does not, the last snapshot keeps
answering and the log says so). A request costs a dictionary lookup and a SHA-256, no database
round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from kafkastore import auth, pg
from kafkastore.errors import AlreadyExists, InvalidRequest, KafkaStoreError, NotFound
from kafkastore.retry import Backoff
from kafkastore.streams import check_no_nul

logger = logging.getLogger("kafkastore.auth")

CHANNEL = "kafkastore_auth"
LISTEN = "LISTEN kafkastore_auth"
RELOAD_ALLOWANCE = 1.0
"""Seconds allowed, on top of the ``ttl``, for the two reloads around a change (a connection
and one query each: milliseconds while PostgreSQL answers), in :func:`revocation_bound`."""
MISS_RELOAD_INTERVAL = 0.2
"""An unknown token id reloads the cache at most this often (a fresh token works at once)."""

INSERT_USER = """
INSERT INTO auth_users (name, roles) VALUES (%s, %s)
ON CONFLICT (name) DO NOTHING
RETURNING name, roles, created_at
"""
SELECT_USERS = "SELECT name, roles, created_at FROM auth_users ORDER BY name"
DELETE_USER = "DELETE FROM auth_users WHERE name = %s RETURNING name"
INSERT_TOKEN = """
INSERT INTO auth_tokens (id, user_name, hash, label, expires_at)
SELECT %s, name, %s, %s, %s FROM auth_users WHERE name = %s
RETURNING id, user_name, label, created_at, expires_at, revoked_at
"""
SELECT_TOKENS = """
SELECT id, user_name, label, created_at, expires_at, revoked_at FROM auth_tokens
WHERE %(user)s::text IS NULL OR user_name = %(user)s
ORDER BY created_at, id
"""
REVOKE_TOKEN = """
UPDATE auth_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE id = %s
RETURNING id, user_name, label, created_at, expires_at, revoked_at
"""
LIVE_TOKENS = """
SELECT t.id, t.hash, t.expires_at, u.name, u.roles
FROM auth_tokens t JOIN auth_users u ON u.name = t.user_name
WHERE t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > now())
"""


def revocation_bound(ttl: float) -> float:
    """Seconds within which a change to a token or its user (revoked, removed, roles changed)
    is enforced by a cache that reloads every ``ttl`` seconds, even without its NOTIFY: the
    reload under way when the change commits may miss it, the next one starts ``ttl`` after
    that one ends."""
    return ttl + RELOAD_ALLOWANCE


@dataclass(frozen=True, slots=True)
class User:
    """A principal as stored."""

    name: str
    roles: tuple[str, ...]
    created_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "roles": list(self.roles), "created_at": _iso(self.created_at)}


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """A token as listed: everything but the secret (which is never stored) and its hash."""

    id: str
    user: str
    label: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "user": self.user,
            "label": self.label,
            "created_at": _iso(self.created_at),
            "expires_at": _iso(self.expires_at),
            "revoked_at": _iso(self.revoked_at),
        }


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _token_info(row: Any) -> TokenInfo:
    return TokenInfo(row[0], row[1], row[2], row[3], row[4], row[5])


def add_user(database_url: str, name: str, roles: tuple[str, ...] = ()) -> User:
    """Create a user; InvalidRequest for a bad name or an unknown role, AlreadyExists for an
    existing user."""
    auth.check_name(name)
    roles = auth.check_roles(roles)
    with pg.connect(database_url, autocommit=True) as conn, pg.translated():
        row = conn.execute(INSERT_USER, (name, list(roles))).fetchone()
    if row is None:
        raise AlreadyExists(f"user {name!r} already exists", fields=["name"])
    return User(row[0], tuple(row[1]), row[2])


def list_users(database_url: str) -> list[User]:
    with pg.connect(database_url, autocommit=True) as conn, pg.translated():
        return [User(r[0], tuple(r[1]), r[2]) for r in conn.execute(SELECT_USERS)]


def remove_user(database_url: str, name: str) -> None:
    """Delete a user and every token of theirs."""
    auth.check_name(name)
    with pg.connect(database_url, autocommit=True) as conn, pg.translated():
        if conn.execute(DELETE_USER, (name,)).fetchone() is None:
            raise NotFound(f"no user named {name!r}", fields=["name"])


def create_token(
    database_url: str, user: str, *, label: str = "", expires_in: float | None = None
) -> tuple[TokenInfo, str]:
    """A new token for ``user``: its listing and the token itself (show it once, then drop it)."""
    auth.check_name(user, "user")
    if len(label) > auth.MAX_LABEL:
        raise InvalidRequest(f"label is longer than {auth.MAX_LABEL} characters", fields=["label"])
    check_no_nul(label, field="label")
    if expires_in is not None and not 0 < expires_in <= auth.MAX_EXPIRES_IN:
        raise InvalidRequest(
            "expires_in must be more than 0 s and at most 10 years", fields=["expires_in"]
        )
    expires_at = None if expires_in is None else datetime.now(UTC) + timedelta(seconds=expires_in)
    token_id, token = auth.new_token()
    with pg.connect(database_url, autocommit=True) as conn, pg.translated():
        row = conn.execute(
            INSERT_TOKEN, (token_id, auth.token_hash(token), label, expires_at, user)
        ).fetchone()
    if row is None:
        raise NotFound(f"no user named {user!r}", fields=["user"])
    return _token_info(row), token


def list_tokens(database_url: str, user: str | None = None) -> list[TokenInfo]:
    if user is not None:
        auth.check_name(user, "user")
    with pg.connect(database_url, autocommit=True) as conn, pg.translated():
        return [_token_info(r) for r in conn.execute(SELECT_TOKENS, {"user": user})]


def revoke_token(database_url: str, token_id: str) -> TokenInfo:
    """Revoke a token by its id (idempotent); NotFound when there is no such token."""
    if not (len(token_id) == auth.TOKEN_ID_HEX and all(c in "0123456789abcdef" for c in token_id)):
        raise InvalidRequest("a token id is 12 hex digits", fields=["token_id"])
    with pg.connect(database_url, autocommit=True) as conn, pg.translated():
        row = conn.execute(REVOKE_TOKEN, (token_id,)).fetchone()
    if row is None:
        raise NotFound(f"no token with id {token_id!r}", fields=["token_id"])
    return _token_info(row)


def _snapshot(rows: list[Any]) -> auth.Snapshot:
    tokens = {
        row[0]: auth.CachedToken(
            hash=bytes(row[1]),
            principal=auth.Principal(row[3], frozenset(row[4])),
            expires_at=None if row[2] is None else row[2].timestamp(),
        )
        for row in rows
    }
    return auth.Snapshot(tokens, time.monotonic())


class TokenCache:
    """The live tokens of the store, kept fresh by LISTEN/NOTIFY and a ``ttl`` poll (asyncio)."""

    def __init__(self, database_url: str, *, ttl: float = 1.0) -> None:
        self.database_url = database_url
        self.ttl = ttl
        self.snapshot = auth.Snapshot()
        self._task: asyncio.Task[None] | None = None
        self._reload_lock = asyncio.Lock()

    async def start(self) -> None:
        """Load once (raises when PostgreSQL is down), then follow changes in the background."""
        await self.reload()
        self._task = asyncio.create_task(self._follow(), name="kafkastore-auth-cache")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def reload(self) -> None:
        async with self._reload_lock:
            conn = await pg.connect_async(self.database_url, autocommit=True, connect_timeout=5)
            async with conn:
                with pg.translated():
                    rows = await (await conn.execute(LIVE_TOKENS)).fetchall()
            self.snapshot = _snapshot(rows)

    async def authenticate(self, token: str) -> auth.Principal | None:
        """The token's principal from the cache; an unknown id reloads it (rate-limited) once."""
        principal = self.snapshot.authenticate(token)
        if principal is not None:
            return principal
        token_id = auth.token_id_of(token)
        if token_id is None or token_id in self.snapshot.tokens:
            return None
        if time.monotonic() - self.snapshot.loaded_at >= MISS_RELOAD_INTERVAL:
            with contextlib.suppress(KafkaStoreError):
                await self.reload()
        return self.snapshot.authenticate(token)

    async def _follow(self) -> None:
        """Reload on each notification and every ``ttl`` seconds; reconnect when the
        connection breaks (a stale cache meanwhile expires nothing early, so it keeps
        answering; the log says so)."""
        backoff = Backoff(initial=0.1, maximum=self.ttl)
        async for _attempt in backoff.attempts_async():
            try:
                conn = await pg.connect_async(self.database_url, autocommit=True)
                async with conn:
                    with pg.translated():
                        await conn.execute(LISTEN)
                    await self.reload()
                    while True:
                        with pg.translated():
                            async for _ in conn.notifies(timeout=self.ttl, stop_after=1):
                                pass
                        await self.reload()
            except KafkaStoreError as exc:
                logger.warning("auth cache cannot follow PostgreSQL (retrying): %s", exc.message)
