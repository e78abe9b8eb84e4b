"""The admin routes for users and tokens (role ``admin``, checked by
:func:`kafkastore.auth_http.authorise` like every route): ``/auth/users`` and ``/auth/tokens``,
over :mod:`kafkastore.authstore` (the same functions as ``kafkastore auth``)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from kafkastore import apidoc, apirules, auth, authstore
from kafkastore.config import Settings

# No prefix: the access table is keyed by the path a route declares.
router = APIRouter(tags=["auth"])


class NewUser(BaseModel):
    model_config = ConfigDict(extra="forbid")  # an unknown field is a 400, as on every route

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.@-]+$")
    roles: list[Literal["admin", "ops"]] = []


class UserOut(BaseModel):
    name: str
    roles: list[str]
    created_at: str


class UsersOut(BaseModel):
    users: list[UserOut]


class NewToken(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.@-]+$")
    label: str = Field(default="", max_length=auth.MAX_LABEL, pattern="^[^\\x00]*$")
    expires_in: float | None = Field(
        default=None,
        gt=0,
        le=auth.MAX_EXPIRES_IN,
        description="seconds until it expires (10 years at most)",
    )


class TokenOut(BaseModel):
    id: str
    user: str
    label: str
    created_at: str
    expires_at: str | None
    revoked_at: str | None


class CreatedToken(TokenOut):
    token: str = Field(description="the bearer token: shown this once, stored only as a hash")


class TokensOut(BaseModel):
    tokens: list[TokenOut]


_BAD_TEXT = (
    "invalid_request: a bad name, roles, label, expires_in or token id, or an unknown query "
    "parameter"
)
_BAD = apidoc.errors(400, text={400: _BAD_TEXT})
_NO_SUCH = apidoc.errors(
    400, 404, text={400: _BAD_TEXT, 404: "not_found: no such user or token id"}
)
_TAKEN = apidoc.errors(
    400, 409, text={400: _BAD_TEXT, 409: "already_exists: a user of this name exists"}
)
UserName = Annotated[str, Path(json_schema_extra=apirules.USER_NAME)]
TokenId = Annotated[str, Path(json_schema_extra=apirules.TOKEN_ID)]


def _json(content: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json")


def _url(request: Request) -> str:
    settings: Settings = request.app.state.settings
    return settings.database_url


_NEW_USER_LINKS = {
    "CreateAToken": apidoc.link(
        "post", "/auth/tokens", "a token for the new user", body={"user": "$response.body#/name"}
    ),
    "RemoveTheUser": apidoc.link(
        "delete",
        "/auth/users/{name}",
        "remove the new user (and their tokens)",
        parameters={"name": "$response.body#/name"},
    ),
}
_NEW_TOKEN_LINKS = {
    "ListTheUsersTokens": apidoc.link(
        "get", "/auth/tokens", "the user's tokens", parameters={"user": "$response.body#/user"}
    ),
    "RevokeIt": apidoc.link(
        "delete",
        "/auth/tokens/{token_id}",
        "revoke the new token",
        parameters={"token_id": "$response.body#/id"},
    ),
}


@router.post(
    "/auth/users",
    status_code=201,
    response_model=UserOut,
    responses={201: {"links": _NEW_USER_LINKS}, **_TAKEN},
)
async def add_user(request: Request, body: NewUser) -> Response:
    """Create a user with roles (``admin``, ``ops``; none for a plain user)."""
    user = await asyncio.to_thread(authstore.add_user, _url(request), body.name, tuple(body.roles))
    return _json(user.to_json(), 201)


@router.get("/auth/users", response_model=UsersOut, responses=_BAD)
async def list_users(request: Request) -> Response:
    """Every user and their roles."""
    users = await asyncio.to_thread(authstore.list_users, _url(request))
    return _json({"users": [u.to_json() for u in users]})


@router.delete("/auth/users/{name}", status_code=204, responses=_NO_SUCH)
async def remove_user(request: Request, name: UserName) -> Response:
    """Delete a user and every token of theirs."""
    await asyncio.to_thread(authstore.remove_user, _url(request), name)
    return Response(status_code=204)


@router.post(
    "/auth/tokens",
    status_code=201,
    response_model=CreatedToken,
    responses={201: {"links": _NEW_TOKEN_LINKS}, **_NO_SUCH},
)
async def create_token(request: Request, body: NewToken) -> Response:
    """A new bearer token for a user; the answer is the only place the token ever appears."""
    info, token = await asyncio.to_thread(
        authstore.create_token,
        _url(request),
        body.user,
        label=body.label,
        expires_in=body.expires_in,
    )
    return _json({**info.to_json(), "token": token}, 201)


@router.get("/auth/tokens", response_model=TokensOut, responses=_BAD)
async def list_tokens(
    request: Request,
    user: Annotated[str | None, Query(json_schema_extra=apirules.USER_NAME)] = None,
) -> Response:
    """Every token (id, user, label, times), never a secret or a hash."""
    tokens = await asyncio.to_thread(authstore.list_tokens, _url(request), user)
    return _json({"tokens": [t.to_json() for t in tokens]})


@router.delete("/auth/tokens/{token_id}", status_code=204, responses=_NO_SUCH)
async def revoke_token(request: Request, token_id: TokenId) -> Response:
    """Revoke a token: it stops working within milliseconds (NOTIFY), within
    ``auth_cache_ttl`` + 1 s (2 s by default) at worst."""
    await asyncio.to_thread(authstore.revoke_token, _url(request), token_id)
    return Response(status_code=204)
