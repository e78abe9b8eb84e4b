"""The HTTP app: the writer's append routes and the indexer's read routes in one FastAPI app.

Errors map to statuses here, by one table; every error body is
``{"error": code, "message": text, ...details}`` (API.md).
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
from starlette.exceptions import HTTPException as StarletteHTTPException

from indexer import metrics as indexer_metrics
from indexer.reads import AsyncReads
from indexer.routes import router as read_router
from kafkastore import auth_http, kafka, pg
from kafkastore.config import Settings, export_settings
from kafkastore.errors import (
    AppendConflicts,
    ConfigurationError,
    DuplicateEventId,
    Forbidden,
    IntegrityError,
    InvalidRequest,
    KafkaStoreError,
    PayloadTooLarge,
    SchemaError,
    StreamDeleted,
    StreamNotFound,
    Unauthorized,
    Unavailable,
    WrongExpectedVersion,
)
from writer.engine import Writer
from writer.routes import router as append_router

STATUS: dict[type[KafkaStoreError], int] = {
    InvalidRequest: 400,
    Unauthorized: 401,
    Forbidden: 403,
    StreamNotFound: 404,
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


def create_app(settings: Settings) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        writer = Writer(settings)
        await asyncio.to_thread(writer.open)
        app.state.writer = writer
        reads = await AsyncReads.open(settings)
        app.state.reads = reads
        indexer_metrics.register_api_collectors(settings)
        if settings.auth_enabled:
            await app.state.auth_cache.start()
        try:
            yield
        finally:
            await app.state.auth_cache.close()
            await asyncio.to_thread(writer.close)
            await reads.close()

    app = FastAPI(
        title="kafkastore",
        version="0.1.0",
        description="An event store on Apache Kafka with a PostgreSQL stream index.",
        lifespan=lifespan,
        # Every route is checked by one table (kafkastore.auth_http.ACCESS).
        dependencies=[Depends(auth_http.authorise)],
        openapi_url=auth_http.openapi_url(settings),
    )
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
        return Response(
            orjson.dumps({"error": code, "message": str(exc.detail)}),
            status_code=exc.status_code,
            media_type="application/json",
        )

    @app.get("/healthz", tags=["ops"], summary="The process is alive")
    async def healthz() -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    @app.get("/readyz", tags=["ops"], summary="Kafka and PostgreSQL are reachable")
    async def readyz() -> Response:
        problems: dict[str, str] = {}
        try:
            await asyncio.to_thread(kafka.check_reachable, settings, 2.0)
        except KafkaStoreError as exc:
            problems["kafka"] = exc.message
        try:
            conn = await pg.connect_async(settings.database_url, autocommit=True, connect_timeout=2)
            async with conn:
                await conn.execute("SELECT 1")
        except KafkaStoreError as exc:
            problems["postgresql"] = exc.message
        if problems:
            return error_response(Unavailable("; ".join(f"{k}: {v}" for k, v in problems.items())))
        return Response(b'{"status":"ready"}', media_type="application/json")

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics")
    async def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        # Collectors may ask Kafka and PostgreSQL (index lag): keep them off the event loop.
        body = await asyncio.to_thread(generate_latest)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    app.include_router(append_router)
    app.include_router(read_router)
    auth_http.install(app, settings)
    return app


def create_app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` (several worker processes)."""
    return create_app(Settings.from_env())


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
        # (503 when full), memory stays bounded under any load.
        "limit_concurrency": 2048,
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
