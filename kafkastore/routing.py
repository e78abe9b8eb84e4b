"""Which route a path belongs to, for the HTTP app (:mod:`kafkastore.http`): the ``Allow``
header of a 405, and one resource per path.

Stream ids may contain ``/``, so ``/streams/a/state`` matches both ``/streams/{stream_id}``
(stream ``a/state``) and ``/streams/{stream_id}/state`` (the state of ``a``). A path belongs
to its most specific template (the most literal text), the one the OpenAPI document lists it
under: its methods are the ``Allow`` of a 405, and a method it lacks is a 405 even when a less
specific template has it (a POST there is not an append to a stream ``a/state``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.routing import Match


def _matching_templates(app: FastAPI, scope: Any) -> dict[str, set[str]]:
    """The path templates that ``scope``'s path matches, with their methods."""
    routes: list[APIRoute] | None = getattr(app.state, "api_routes", None)
    if routes is None:
        routes = app.state.api_routes = list(_api_routes(app.router.routes))
    matched: dict[str, set[str]] = {}
    for route in routes:
        if route.matches(scope)[0] != Match.NONE:
            matched.setdefault(route.path, set()).update(route.methods or ())
    return matched


def _most_specific(templates: Iterable[str]) -> str:
    """The template with the most literal text: ``/streams/{stream_id:path}/state`` over
    ``/streams/{stream_id:path}`` for ``/streams/a/state``."""
    return max(templates, key=lambda path: len(re.sub(r"\{[^}]*\}", "", path)))


def allowed_methods(app: FastAPI, scope: Any) -> str:
    """The ``Allow`` header of a 405: the methods of the path template that ``scope``'s path
    matches most specifically (the one the document lists it under)."""
    matched = _matching_templates(app, scope)
    if not matched:
        return ""
    methods = matched[_most_specific(matched)]
    order = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
    return ", ".join(sorted(methods, key=lambda m: order.index(m) if m in order else len(order)))


def one_resource_per_path(request: Request) -> None:
    """A path belongs to its most specific template. Stream ids may contain ``/``, so
    ``/streams/a/state`` also matches ``/streams/{stream_id}``; but it names the state of
    ``a``, which has GET only: a POST there is 405 (with ``Allow``), not an append to a stream
    ``a/state`` (``POST /append`` can still name such a stream)."""
    route = request.scope.get("route")
    stream_id = request.path_params.get("stream_id")
    if not isinstance(route, APIRoute) or not isinstance(stream_id, str) or "/" not in stream_id:
        return
    matched = _matching_templates(request.app, request.scope)
    if matched and _most_specific(matched) != route.path:
        raise HTTPException(405)


def _api_routes(routes: Any) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        included = getattr(route, "original_router", None)  # an included APIRouter
        if included is not None:
            yield from _api_routes(included.routes)
