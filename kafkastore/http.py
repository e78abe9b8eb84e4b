"""The HTTP app: the writer's append routes and the indexer's read routes in one FastAPI app.

Errors map to statuses here, by one table; every error body is
``{"error": code, "message": text, ...details}`` (docs/http.md). Unknown query parameters are
refused (400) like unknown body fields. ``/docs`` (Swagger UI) and ``/redoc`` are served with
their assets from the ``fastapi-offline`` package: they work without internet access. What each
route answers is described for the OpenAPI document in :mod:`kafkastore.apidoc`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
import uvicorn
from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException

from indexer import metrics as indexer_metrics
from indexer import ownership
from indexer.console_routes import router as console_router
from indexer.reads import AsyncReads
from indexer.routes import router as read_router
from indexer.sse import Subscribers
from indexer.sse import router as subscribe_router
from kafkastore import apidoc, apirules, auth_http, kafka, pg, routing
from kafkastore.config import Settings, export_settings
from kafkastore.errors import (
    AlreadyExists,
    AppendConflicts,
    ConfigurationError,
    DuplicateEventId,
    Forbidden,
    IntegrityError,
    InvalidRequest,
    KafkaStoreError,
    NotFound,
    PayloadTooLarge,
    SchemaError,
    SnapshotAboveHead,
    SnapshotNotFound,
    StreamDeleted,
    StreamNotFound,
    TruncateAboveHead,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
    WrongExpectedVersion,
)
from writer.engine import Writer
from writer.routes import router as append_router

STATUS: dict[type[KafkaStoreError], int] = {
    InvalidRequest: 400,
    UnsupportedMediaType: 415,
    NotFound: 404,
    AlreadyExists: 409,
    Unauthorized: 401,
    Forbidden: 403,
    StreamNotFound: 404,
    SnapshotNotFound: 404,
    SnapshotAboveHead: 409,
    TruncateAboveHead: 409,
    WrongExpectedVersion: 409,
    AppendConflicts: 409,
    DuplicateEventId: 409,
    StreamDeleted: 410,
    PayloadTooLarge: 413,
    Unavailable: 503,
    SchemaError: 503,
    ConfigurationError: 500,
    IntegrityError: 500,
}


READY_EXAMPLE = {
    "status": "ready",
    "indexer": {
        "group": "kafkastore-indexer",
        "state": "STABLE",
        "members": 1,
        "owned_partitions": 6,
        "partitions": 6,
    },
}


def status_of(error: KafkaStoreError) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def error_response(error: KafkaStoreError) -> Response:
    body: dict[str, Any] = {"error": error.code, "message": error.message, **error.details()}
    headers = {}
    if isinstance(error, Unavailable):
        headers["Retry-After"] = str(max(1, round(error.retry_after)))
    if isinstance(error, Unauthorized):
        headers["WWW-Authenticate"] = 'Bearer realm="kafkastore"'
    return Response(
        orjson.dumps(body),
        status_code=status_of(error),
        media_type="application/json",
        headers=headers,
    )


_KNOWN_QUERY: dict[int, frozenset[str]] = {}


async def known_query_only(request: Request) -> None:
    """Refuse query parameters the route does not declare (400 ``invalid_request``), as unknown
    body fields are: a misspelt ``?limt=5`` must not be silently ignored. Also refuse control
    characters in the path: the router's pattern would drop a trailing ``%0A`` and hand the
    route another stream id than the one asked for."""
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in request.scope.get("path", "")):
        raise InvalidRequest("the path must not contain control characters", fields=["path"])
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    known = _KNOWN_QUERY.get(id(dependant))
    if known is None:
        known = _KNOWN_QUERY[id(dependant)] = frozenset(_query_names(dependant))
    routing.one_resource_per_path(request)
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        raise InvalidRequest(
            f"unknown query parameters: {', '.join(unknown)}"
            + (f" (this route takes {', '.join(sorted(known))})" if known else ""),
            fields=unknown,
        )


def _query_names(dependant: Any) -> set[str]:
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, finished by :func:`kafkastore.apirules.finish` (built once)."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        doc = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        app.openapi_schema = apirules.finish(doc, app.state.settings)
    return app.openapi_schema


def create_app(settings: Settings) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        writer = Writer(settings)
        await asyncio.to_thread(writer.open)
        app.state.writer = writer
        reads = await AsyncReads.open(settings)
        app.state.reads = reads
        indexer_metrics.register_api_collectors(settings)
        app.state.subscribers = Subscribers(settings.sse_max_subscribers, reads, settings)
        if settings.auth_enabled:
            await app.state.auth_cache.start()
            await app.state.stream_acl_cache.start()
        try:
            # SIGTERM/SIGINT end the live subscriptions first, so shutdown does not wait on them.
            with app.state.subscribers.closing_on_stop():
                yield
        finally:
            app.state.subscribers.close()
            await app.state.subscribers.hub.close()
            await app.state.auth_cache.close()
            if settings.auth_enabled:
                await app.state.stream_acl_cache.close()
            await asyncio.to_thread(writer.close)
            await reads.close()

    app = FastAPIOffline(
        title="kafkastore",
        version="0.1.0",
        description="An event store on Apache Kafka with a PostgreSQL stream index.",
        lifespan=lifespan,
        # Every route is checked by one table (kafkastore.auth_http.ACCESS), and refuses unknown
        # query parameters.
        dependencies=[Depends(auth_http.authorise), Depends(known_query_only)],
        # No request to a validator service on the internet from /docs.
        swagger_ui_parameters={"validatorUrl": None},
    )
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    app.state.settings = settings

    @app.exception_handler(KafkaStoreError)
    async def _ours(request: Request, exc: KafkaStoreError) -> Response:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        fields = [
            ".".join(str(p) for p in e.get("loc", ()) if p not in ("query", "path"))
            for e in exc.errors()
        ]
        return error_response(
            InvalidRequest(f"invalid parameters: {', '.join(fields)}", fields=fields)
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = routing.allowed_methods(app, request.scope)
        return Response(
            orjson.dumps({"error": code, "message": str(exc.detail)}),
            status_code=exc.status_code,
            media_type="application/json",
            headers=headers,
        )

    @app.get(
        "/healthz",
        tags=["ops"],
        summary="The process is alive",
        response_model=apidoc.Status,
        responses=apidoc.errors(400),
    )
    async def healthz() -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    @app.get(
        "/readyz",
        tags=["ops"],
        summary="Kafka and PostgreSQL are reachable, and the indexer owns the topic's partitions",
        responses={
            "200": {
                "model": apidoc.Ready,
                "description": "ready; ``indexer``: the indexer group's members and owned "
                "partitions (no member at all does not fail readiness)",
                "content": {"application/json": {"example": READY_EXAMPLE}},
            },
            **apidoc.errors(
                400,
                503,
                text={
                    503: "unavailable: Kafka or PostgreSQL unreachable, or the indexer group's "
                    "members own fewer than all partitions (the message says which)"
                },
            ),
        },
    )
    async def readyz() -> Response:
        problems: dict[str, str] = {}
        owners: ownership.Ownership | None = None
        try:
            await asyncio.to_thread(kafka.check_reachable, settings, 2.0)
            owners = await asyncio.to_thread(ownership.describe, settings)
        except KafkaStoreError as exc:
            problems["kafka"] = exc.message
        try:
            conn = await pg.connect_async(settings.database_url, autocommit=True, connect_timeout=2)
            async with conn:
                await conn.execute("SELECT 1")
        except KafkaStoreError as exc:
            problems["postgresql"] = exc.message
        if owners is not None and (problem := owners.problem()) is not None:
            problems["indexer"] = problem
        if problems:
            error = Unavailable("; ".join(f"{k}: {v}" for k, v in problems.items()))
            return error_response(error)
        assert owners is not None
        body = {"status": "ready", "indexer": owners.to_json()}
        return Response(orjson.dumps(body), media_type="application/json")

    @app.get(
        "/metrics",
        tags=["ops"],
        summary="Prometheus metrics of this process (appends, reads, index lag)",
        response_class=Response,
        responses={
            200: {
                "description": "Prometheus text exposition format",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            },
            **apidoc.errors(400),
        },
    )
    async def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        # Collectors may ask Kafka and PostgreSQL (index lag): keep them off the event loop.
        body = await asyncio.to_thread(generate_latest)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    app.include_router(append_router)
    app.include_router(read_router)
    app.include_router(subscribe_router)
    app.include_router(console_router)
    auth_http.install(app, settings)
    return app


def create_app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` (several worker processes)."""
    return create_app(Settings.from_env())


REQUEST_CONCURRENCY = 2048
"""Connections a process serves at once besides its live subscriptions (uvicorn's limit)."""


def serve(settings: Settings, *, workers: int = 1) -> int:
    """Run the HTTP API until SIGINT/SIGTERM (uvicorn shuts down gracefully)."""
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": "info",
        "access_log": False,
        "loop": "auto",
        "http": "auto",
        "timeout_graceful_shutdown": 10,
        # Connections beyond this get 503 from uvicorn: with the writer's bounded queue
        # (503 when full), memory stays bounded under any load. Live subscriptions hold their
        # connection for long (each bounded, and limited by sse_max_subscribers): on top.
        "limit_concurrency": REQUEST_CONCURRENCY + settings.sse_max_subscribers,
    }
    if settings.tls_certfile:
        options["ssl_certfile"] = settings.tls_certfile
        options["ssl_keyfile"] = settings.tls_keyfile
    if workers > 1:
        # Workers are new processes that build their settings from the environment.
        export_settings(settings)
        uvicorn.run("kafkastore.http:create_app_from_env", factory=True, workers=workers, **options)
    else:
        uvicorn.run(create_app(settings), **options)
    return 0
