"""Principals, bearer tokens, ACLs and the one access decision (docs/http.md "Security").

Everything here is I/O-free: :mod:`kafkastore.authstore` reads principals and tokens from
PostgreSQL into a :class:`Snapshot` (the cache), and the HTTP app asks :func:`decide`.

- A token is ``kst_<id>.<secret>``: ``id`` (12 hex digits) is public and names the token in
  listings and revocations; ``secret`` is 256 random bits (``secrets.token_urlsafe``). Only the
  SHA-256 of the whole string is stored; it is compared with ``hmac.compare_digest``.
- Roles: ``admin`` (everything, user management), ``ops`` (every read, ``$all``, metrics),
  plain users (what the ACLs grant).
- An ACL maps actions (``read``, ``write``, ``delete``, ``metadata_read``, ``metadata_write``)
  to lists of user names, ``"$admin"``, ``"$ops"`` or ``"$authenticated"``. For each action the
  first ACL that names the action decides: the stream's own ACL (stream metadata), then its
  category's default, then the global default.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from kafkastore.errors import ConfigurationError, Forbidden, InvalidRequest, Unauthorized
from kafkastore.streams import category_of

READ = "read"
WRITE = "write"
DELETE = "delete"
METADATA_READ = "metadata_read"
METADATA_WRITE = "metadata_write"
ACL_ACTIONS = (READ, WRITE, DELETE, METADATA_READ, METADATA_WRITE)
"""The actions an ACL grants."""
OPS = "ops"
"""Operations: ``$all`` reads, metrics (role ``ops`` or ``admin``)."""
ADMIN = "admin"
"""User and token management (role ``admin``)."""
AUTHENTICATED = "authenticated"
"""Any known principal."""
OPEN = "open"
"""No credentials needed (``/healthz``)."""

ROLES = ("admin", "ops")
OPS_READS = frozenset({READ, METADATA_READ})
"""What role ``ops`` may do on every stream and category."""

ROLE_ENTRIES = {"$admin": "admin", "$ops": "ops"}
EVERYONE = "$authenticated"

TOKEN_PREFIX = "kst_"
TOKEN_ID_HEX = 12
_TOKEN = re.compile(r"^kst_([0-9a-f]{12})\.([A-Za-z0-9_-]{43})$")
_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,128}")
MAX_LABEL = 200
MAX_EXPIRES_IN = 10 * 365 * 86400
"""Seconds: the longest a token may be made to live (10 years); it may also never expire."""

DEFAULT_ACL: Mapping[str, Sequence[str]] = {
    READ: (EVERYONE,),
    WRITE: (EVERYONE,),
    METADATA_READ: (EVERYONE,),
    DELETE: ("$admin",),
    METADATA_WRITE: ("$admin",),
}
"""The global default when ``auth_default_acl`` is not configured."""


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: a user name and its roles."""

    name: str
    roles: frozenset[str] = frozenset()

    def has_role(self, role: str) -> bool:
        return role in self.roles


@dataclass(frozen=True, slots=True)
class Resource:
    """What an action is on: a stream, a category, ``$all`` or the system itself."""

    kind: Literal["stream", "category", "all", "system"]
    name: str = ""


ALL = Resource("all", "$all")
SYSTEM = Resource("system")


@dataclass(frozen=True, slots=True)
class Acl:
    """Action -> who may do it. An action that is absent defers to the next ACL."""

    grants: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def parse(cls, value: Any, *, where: str = "acl") -> Acl:
        """An ACL from its JSON form; raises InvalidRequest naming what is wrong."""
        if not isinstance(value, dict):
            raise InvalidRequest(f"{where} must be an object", fields=[where])
        grants: dict[str, tuple[str, ...]] = {}
        for action, entries in value.items():
            if action not in ACL_ACTIONS:
                raise InvalidRequest(f"{where}: unknown action {action!r}", fields=[where])
            if not isinstance(entries, list) or not all(isinstance(e, str) and e for e in entries):
                raise InvalidRequest(
                    f"{where}.{action} must be a list of names", fields=[f"{where}.{action}"]
                )
            grants[action] = tuple(entries)
        return cls(grants)

    def to_json(self) -> dict[str, list[str]]:
        return {action: list(entries) for action, entries in self.grants.items()}


def _admits(entries: Sequence[str], principal: Principal) -> bool:
    for entry in entries:
        if entry in (EVERYONE, principal.name):
            return True
        role = ROLE_ENTRIES.get(entry)
        if role is not None and principal.has_role(role):
            return True
    return False


def decide(
    principal: Principal, action: str, resource: Resource, acls: Sequence[Acl | None]
) -> bool:
    """The one access decision: may ``principal`` do ``action`` on ``resource``?

    ``acls`` are the ACLs that apply to ``resource``, most specific first (stream ACL, category
    default, global default; None where there is none): for ``action`` the first one naming it
    decides. Role ``admin`` may do everything; ``ops`` may read everything, ``$all`` and the
    metrics; ``$all`` and :data:`OPS` need one of the two; :data:`ADMIN` needs ``admin``.
    """
    if action == OPEN:
        return True
    if principal.has_role("admin"):
        return True
    if action == AUTHENTICATED:
        return True
    if action == ADMIN:
        return False
    if action == OPS or resource.kind in ("all", "system"):
        return principal.has_role("ops") and action in (OPS, READ)
    if action in OPS_READS and principal.has_role("ops"):
        return True
    for acl in acls:
        if acl is not None and action in acl.grants:
            return _admits(acl.grants[action], principal)
    return False


@dataclass(frozen=True, slots=True)
class Policy:
    """The configured defaults: the global ACL and one per category."""

    default: Acl = field(default_factory=lambda: Acl({k: tuple(v) for k, v in DEFAULT_ACL.items()}))
    categories: Mapping[str, Acl] = field(default_factory=dict)

    @classmethod
    def parse(cls, default_json: str, categories_json: str) -> Policy:
        """From the ``auth_default_acl`` and ``auth_category_acls`` settings (JSON text)."""
        try:
            policy = cls()
            default = policy.default
            if default_json.strip():
                default = Acl.parse(orjson.loads(default_json), where="auth_default_acl")
            categories: dict[str, Acl] = {}
            if categories_json.strip():
                raw = orjson.loads(categories_json)
                if not isinstance(raw, dict):
                    raise InvalidRequest("auth_category_acls must map categories to ACLs")
                for name, acl in raw.items():
                    categories[name] = Acl.parse(acl, where=f"auth_category_acls.{name}")
        except (orjson.JSONDecodeError, InvalidRequest) as exc:
            raise ConfigurationError(f"bad ACL setting: {exc}") from None
        return cls(default, categories)

    def acls(self, resource: Resource, *, stream_acl: Acl | None = None) -> list[Acl | None]:
        """The ACLs that apply to ``resource``, most specific first."""
        if resource.kind == "stream":
            return [stream_acl, self.categories.get(category_of(resource.name)), self.default]
        if resource.kind == "category":
            return [self.categories.get(resource.name), self.default]
        return []


# -- tokens --


def new_token() -> tuple[str, str]:
    """A fresh ``(token_id, token)``; the token is shown once and never stored."""
    token_id = secrets.token_hex(TOKEN_ID_HEX // 2)
    return token_id, f"{TOKEN_PREFIX}{token_id}.{secrets.token_urlsafe(32)}"


def token_hash(token: str) -> bytes:
    """What PostgreSQL keeps of a token: its SHA-256."""
    return hashlib.sha256(token.encode()).digest()


def token_id_of(token: str) -> str | None:
    """The public id of a well-formed token, or None when it is malformed."""
    match = _TOKEN.match(token)
    return match[1] if match else None


def check_name(name: Any, what: str = "name") -> str:
    """A user name: 1-128 of letters, digits, ``_.@-``; raises InvalidRequest otherwise."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidRequest(
            f"{what} must be 1-128 characters of letters, digits, '_', '.', '@' or '-'",
            fields=[what],
        )
    return name


def check_roles(roles: Sequence[Any]) -> tuple[str, ...]:
    bad = [r for r in roles if r not in ROLES]
    if bad:
        raise InvalidRequest(f"unknown roles {bad!r} (known: admin, ops)", fields=["roles"])
    return tuple(sorted(set(roles)))


@dataclass(frozen=True, slots=True)
class CachedToken:
    """A live token as the cache holds it (its hash, never the token)."""

    hash: bytes
    principal: Principal
    expires_at: float | None
    """Epoch seconds, or None for no expiry."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every live token by id, as read from PostgreSQL at ``loaded_at`` (monotonic seconds)."""

    tokens: Mapping[str, CachedToken] = field(default_factory=dict)
    loaded_at: float = float("-inf")

    def authenticate(self, token: str, *, now: float | None = None) -> Principal | None:
        """The principal of ``token``, or None (malformed, unknown, revoked or expired)."""
        token_id = token_id_of(token)
        if token_id is None:
            return None
        cached = self.tokens.get(token_id)
        if cached is None or not hmac.compare_digest(cached.hash, token_hash(token)):
            return None
        if cached.expires_at is not None and (now or time.time()) >= cached.expires_at:
            return None
        return cached.principal


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


# -- clients of the HTTP API (the CLI) --


def authorization(token: str) -> dict[str, str]:
    """The request headers that carry ``token`` (none when it is empty)."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def refusal(status: int, api: str, token: str) -> Unauthorized | Forbidden | None:
    """Our error for an HTTP API's 401 or 403 answer, else None; never shows the token."""
    if status == 401:
        hint = "it refused the token" if token else "pass --token or set KAFKASTORE_TOKEN"
        return Unauthorized(f"{api} needs a valid bearer token ({hint})")
    if status == 403:
        return Forbidden(f"{api} refused: the token's user may not do this (403 forbidden)")
    return None
