"""Authorisation of the HTTP API: one dependency, driven by one table, on every route.

:data:`ACCESS` maps each route (method, path template) to a :class:`Rule`: the action it needs
and where its resource comes from (a path parameter, the body of an atomic append, ``$all`` or
the system). :func:`authorise` runs before every route of the app (an app-wide FastAPI
dependency): it authenticates the bearer token through the cache of
:mod:`kafkastore.authstore` (no database round trip) and asks :func:`kafkastore.auth.decide`.
A route added without a row is refused to all but admins (and ``tests/kafkastore/test_auth.py``
fails), so a new route is checked by adding its row here.

Stream ACLs come from ``app.state.stream_acl`` (an async ``[stream_id] -> {stream_id: Acl |
None}``): with auth on, the :class:`~kafkastore.streamacl.StreamAclCache` of the streams'
metadata (no database round trip for a hot stream; a change is enforced within
``auth_stream_acl_ttl``, at once by NOTIFY). :func:`forget_stream_acl` drops a stream's entry
after its metadata was written in this process.

Reads of many streams at once (a category, its live feed) are allowed by the category's ACL;
:func:`readable_streams` then tells which of the streams met on a page the caller may read
(the stream's own ACL may deny it), and the route leaves the others' events out of the page.

The admin routes for users and tokens (role ``admin``) are :mod:`kafkastore.auth_admin`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Container, Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import orjson
from fastapi import FastAPI, Request, Response, Security
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from kafkastore import apidoc, auth, auth_admin, authstore, streamacl
from kafkastore.config import Settings
from kafkastore.errors import Forbidden, Unauthorized

StreamAcl = Callable[[list[str]], Awaitable[Mapping[str, auth.Acl | None]]]
ResourceFrom = Literal["stream", "category", "all", "system", "appends", "none"]


@dataclass(frozen=True, slots=True)
class Rule:
    """What a route needs: an action on a resource taken from ``resource``."""

    action: str
    resource: ResourceFrom = "system"


STREAM_READ = Rule(auth.READ, "stream")
OPEN_RULE = Rule(auth.OPEN, "none")
ADMIN = Rule(auth.ADMIN)

ACCESS: dict[tuple[str, str], Rule] = {
    ("GET", "/healthz"): OPEN_RULE,
    ("GET", "/readyz"): Rule(auth.OPS),
    ("GET", "/metrics"): Rule(auth.OPS),
    ("GET", "/openapi.json"): Rule(auth.AUTHENTICATED, "none"),
    # The documentation pages hold no data (a browser cannot send a bearer token when it opens
    # them); the document they load is /openapi.json, checked above unless configured open.
    ("GET", "/docs"): OPEN_RULE,
    ("GET", "/docs/oauth2-redirect"): OPEN_RULE,
    ("GET", "/redoc"): OPEN_RULE,
    # writer/routes.py
    ("POST", "/streams/{stream_id:path}"): Rule(auth.WRITE, "stream"),
    ("POST", "/append"): Rule(auth.WRITE, "appends"),
    # indexer/routes.py
    ("GET", "/streams/{stream_id:path}"): STREAM_READ,
    ("GET", "/streams/{stream_id:path}/state"): STREAM_READ,
    ("GET", "/categories/{category:path}"): Rule(auth.READ, "category"),
    ("GET", "/all"): Rule(auth.READ, "all"),
    # indexer/sse.py: a live subscription needs what the same read needs
    ("GET", "/subscribe/all"): Rule(auth.READ, "all"),
    ("GET", "/subscribe/categories/{category}"): Rule(auth.READ, "category"),
    ("GET", "/subscribe/streams/{stream_id:path}"): STREAM_READ,
    # indexer/console_routes.py: the page and its assets hold no data; what it shows comes from
    # /console/api (ops: every stream, group and dead letter), a replay runs handlers (admin)
    ("GET", "/console"): OPEN_RULE,
    ("GET", "/console/assets/{name}"): OPEN_RULE,
    ("GET", "/console/api/overview"): Rule(auth.OPS),
    ("GET", "/console/api/streams"): Rule(auth.OPS),
    ("GET", "/console/api/events/{event_id}"): Rule(auth.OPS),
    ("GET", "/console/api/groups"): Rule(auth.OPS),
    ("GET", "/console/api/groups/{group}/dead-letters"): Rule(auth.OPS),
    ("POST", "/console/api/groups/{group}/dead-letters/replay"): ADMIN,
    # stream lifecycle routes (docs/http.md "Stream lifecycle"); changing an ACL is a metadata write
    ("GET", "/streams/{stream_id:path}/metadata"): Rule(auth.METADATA_READ, "stream"),
    ("PUT", "/streams/{stream_id:path}/metadata"): Rule(auth.METADATA_WRITE, "stream"),
    ("DELETE", "/streams/{stream_id:path}"): Rule(auth.DELETE, "stream"),
    ("PUT", "/streams/{stream_id:path}/snapshots"): Rule(auth.WRITE, "stream"),
    ("GET", "/streams/{stream_id:path}/snapshots/latest"): STREAM_READ,
    # the admin routes below
    ("POST", "/auth/users"): ADMIN,
    ("GET", "/auth/users"): ADMIN,
    ("DELETE", "/auth/users/{name}"): ADMIN,
    ("POST", "/auth/tokens"): ADMIN,
    ("GET", "/auth/tokens"): ADMIN,
    ("DELETE", "/auth/tokens/{token_id}"): ADMIN,
}
"""Route -> what it needs. Every route of the app has a row (a test checks it)."""

UNLISTED = Rule(auth.ADMIN)
"""What a route without a row needs: fail closed."""

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {
        **{k: v for k, v in response.items() if k != "model"},
        # Added to the built document: the body's schema is spelled out here.
        "content": {apidoc.JSON: {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    }
    for status, response in apidoc.errors(401, 403).items()
}
"""What every checked route may answer when auth is on (documented only then)."""

SCHEME = "HTTPBearer"
"""The name of the bearer scheme in the document's ``components.securitySchemes``."""
_bearer = HTTPBearer(
    scheme_name=SCHEME,
    auto_error=False,
    description="A token from `kafkastore auth token create`",
)


async def _no_stream_acl(stream_ids: list[str]) -> Mapping[str, auth.Acl | None]:
    return {}


def forget_stream_acl(request: Request, stream_id: str) -> None:
    """The metadata of ``stream_id`` changed (committed) in this process: the next request sees
    its new ACL (other processes learn it by NOTIFY)."""
    cache: streamacl.StreamAclCache | None = getattr(request.app.state, "stream_acl_cache", None)
    if cache is not None:
        cache.forget(stream_id)


def rule_of(request: Request) -> Rule:
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return UNLISTED
    return ACCESS.get((request.method, route.path), UNLISTED)


async def _stream_ids_of_appends(request: Request) -> list[str]:
    """The stream ids of ``POST /append`` (the body is cached for the route); none when the body
    is malformed: the route answers 400 then."""
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        return []
    appends = body.get("appends") if isinstance(body, dict) else None
    if not isinstance(appends, list):
        return []
    ids = (a.get("stream_id") if isinstance(a, dict) else None for a in appends)
    return [i for i in ids if isinstance(i, str)]


async def authorise(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> None:
    """The app-wide dependency: 401 without a valid token, 403 without the right."""
    settings: Settings = request.app.state.settings
    if not settings.auth_enabled or request.url.path in settings.open_paths:
        return
    rule = rule_of(request)
    if rule.action == auth.OPEN:
        return
    token = auth.bearer(request.headers.get("authorization"))
    cache: authstore.TokenCache = request.app.state.auth_cache
    principal = None if token is None else await cache.authenticate(token)
    if principal is None:
        raise Unauthorized()
    request.state.principal = principal
    policy: auth.Policy = request.app.state.auth_policy
    resources = await _resources(request, rule)
    streams = [r.name for r in resources if r.kind == "stream"]
    lookup: StreamAcl = request.app.state.stream_acl
    stream_acls = await lookup(streams) if streams else {}
    for resource in resources:
        stream_acl = stream_acls.get(resource.name) if resource.kind == "stream" else None
        acls = policy.acls(resource, stream_acl=stream_acl)
        if not auth.decide(principal, rule.action, resource, acls):
            raise Forbidden()


async def readable_streams(request: Request, stream_ids: Iterable[str]) -> Container[str]:
    """Of ``stream_ids`` (the streams of a page of a category read or feed, which the caller may
    read as a whole), those whose events the caller may see: the category's read right admits
    the request, and each stream's own ACL, when it has one, decides for its events, by the one
    rule of :func:`kafkastore.auth.decide` (an EventStoreDB ``$ce-`` reader without read on a
    stream does not get its events either). Everything when auth is off, for admins and for ops
    (they read every stream); otherwise one cache lookup for the streams, no query when hot."""
    principal: auth.Principal | None = getattr(request.state, "principal", None)
    if principal is None or principal.has_role(auth.ADMIN) or principal.has_role(auth.OPS):
        return _EVERYTHING
    wanted = list(dict.fromkeys(stream_ids))
    if not wanted:
        return frozenset()
    policy: auth.Policy = request.app.state.auth_policy
    lookup: StreamAcl = request.app.state.stream_acl
    acls = await lookup(wanted)
    allowed = set()
    for stream_id in wanted:
        resource = auth.Resource("stream", stream_id)
        if auth.decide(
            principal, auth.READ, resource, policy.acls(resource, stream_acl=acls.get(stream_id))
        ):
            allowed.add(stream_id)
    return allowed


class _Everything:
    """The container that holds every stream id (no filtering)."""

    def __contains__(self, item: object) -> bool:
        return True


_EVERYTHING = _Everything()


def stream_filter(request: Request) -> Callable[[list[str]], Awaitable[Container[str]]] | None:
    """For a long-lived response (a live subscription) of an authorised request: a function
    giving the streams of a page its caller may read *now* (:func:`readable_streams`, ACL
    changes included); it raises Unauthorized once the caller's token was revoked or expired.
    None when auth is off or the route is open (everything may be sent)."""
    principal: auth.Principal | None = getattr(request.state, "principal", None)
    token = auth.bearer(request.headers.get("authorization"))
    if principal is None or token is None:
        return None
    cache: authstore.TokenCache = request.app.state.auth_cache
    checked_token: str = token

    async def allowed(stream_ids: list[str]) -> Container[str]:
        if await cache.authenticate(checked_token) != principal:
            raise Unauthorized()
        return await readable_streams(request, stream_ids)

    return allowed


async def _resources(request: Request, rule: Rule) -> list[auth.Resource]:
    params = request.path_params
    if rule.resource == "stream":
        return [auth.Resource("stream", str(params.get("stream_id", "")))]
    if rule.resource == "category":
        return [auth.Resource("category", str(params.get("category", "")))]
    if rule.resource == "appends":
        return [auth.Resource("stream", s) for s in await _stream_ids_of_appends(request)]
    if rule.resource == "all":
        return [auth.ALL]
    return [auth.SYSTEM]


def openapi_checked(settings: Settings) -> bool:
    """Whether ``/openapi.json`` needs a token: auth is on and it is not in ``auth_open_paths``
    (the documentation pages stay open; what they load then needs one)."""
    return settings.auth_enabled and "/openapi.json" not in settings.open_paths


def install(app: FastAPI, settings: Settings) -> None:
    """Policy, cache and stream-ACL hook on ``app.state``; with auth on, the bearer scheme and
    401/403 in the OpenAPI entry of every checked route."""
    if openapi_checked(settings):
        # FastAPI serves the document on a route of its own, which no dependency checks: it
        # gives way to a route of the app (its row in ACCESS: any signed-in user).
        app.router.routes[:] = [
            r
            for r in app.router.routes
            if isinstance(r, APIRoute) or getattr(r, "path", None) != app.openapi_url
        ]

        @app.get("/openapi.json", include_in_schema=False)
        async def openapi() -> Response:
            return Response(orjson.dumps(app.openapi()), media_type="application/json")

    policy = auth.Policy.parse(settings.auth_default_acl, settings.auth_category_acls)
    app.state.auth_policy = policy
    app.state.auth_cache = authstore.TokenCache(settings.database_url, ttl=settings.auth_cache_ttl)
    app.state.stream_acl = _no_stream_acl
    if settings.auth_enabled:
        cache = streamacl.StreamAclCache(settings.database_url, ttl=settings.auth_stream_acl_ttl)
        app.state.stream_acl_cache = cache
        app.state.stream_acl = cache.acls
    app.include_router(auth_admin.router)
    _document_refusals(app, settings)


def _document_refusals(app: FastAPI, settings: Settings) -> None:
    """The document says what the app answers with these settings. With auth on: every route
    the dependency checks requires the bearer scheme and may answer 401/403; the open ones
    (``/healthz``, ``auth_open_paths``, the console page) require nothing. With auth off: no
    route requires credentials, none answers 401/403, and the scheme is not declared."""
    build = app.openapi
    rules = {(m.lower(), p.replace(":path", "")): rule for (m, p), rule in ACCESS.items()}
    done: list[bool] = []

    def openapi() -> dict[str, Any]:
        document = build()
        if not done:
            for path, item in document.get("paths", {}).items():
                for method, operation in item.items():
                    open_route = (
                        path in settings.open_paths or rules.get((method, path)) == OPEN_RULE
                    )
                    if settings.auth_enabled and not open_route:
                        operation["responses"].update(
                            {str(k): v for k, v in ERROR_RESPONSES.items()}
                        )
                        operation["security"] = [{SCHEME: []}]
                    else:
                        operation.pop("security", None)
            if not settings.auth_enabled:
                document.get("components", {}).pop("securitySchemes", None)
            done.append(True)
        return document

    app.openapi = openapi  # type: ignore[method-assign]
