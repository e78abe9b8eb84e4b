"""Pydantic models of the lifecycle routes' bodies, for the OpenAPI document only.

The routes parse and render with orjson (kafkastore.lifecycle checks the input and raises our
errors); these models say in ``/openapi.json`` what they accept and answer.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    """Every error: ``{"error": code, "message": text, ...details}`` (docs/http.md)."""

    error: str = Field(examples=["wrong_expected_version"])
    message: str
    details: list[str] | None = Field(None, description="invalid_request: the bad fields")
    stream_id: str | None = None
    expected_version: int | str | None = None
    current_version: int | None = None


class Acl(BaseModel):
    """Who may do what (stored now, enforced by the security layer)."""

    read: list[str] | None = None
    write: list[str] | None = None
    delete: list[str] | None = None
    metadata_read: list[str] | None = None
    metadata_write: list[str] | None = None


class MetadataWrite(BaseModel):
    """``PUT /streams/{stream_id}/metadata``: replaces every field (absent ones are unset)."""

    expected_metadata_version: int | Literal["any"] = Field("any", ge=0)
    max_count: int | None = Field(None, ge=1, description="only the newest N events are readable")
    max_age: int | None = Field(None, ge=1, description="seconds: only younger events readable")
    truncate_before: int | None = Field(
        None, ge=0, description="only versions >= this are readable; at most the head + 1"
    )
    acl: Acl | None = None
    custom: dict[str, Any] | None = None


class MetadataBody(BaseModel):
    """A stream's metadata; ``metadata_version`` 0 means never set."""

    stream_id: str
    metadata_version: int
    max_count: int | None
    max_age: int | None
    truncate_before: int | None
    acl: Acl | None
    custom: dict[str, Any] | None


class SnapshotWrite(BaseModel):
    """``PUT /streams/{stream_id}/snapshots``: state as of ``version`` (at most the head)."""

    version: int = Field(ge=1)
    type: str = Field(min_length=1, max_length=256)
    data: Any = Field(description="any JSON value (or data_base64 and content_type)")
    data_base64: str | None = None
    content_type: str | None = None


class SnapshotBody(BaseModel):
    """A stored snapshot (served even when its version was truncated away)."""

    stream_id: str
    version: int
    type: str
    data: Any = None
    data_base64: str | None = None
    content_type: str | None = None
    created_at: str


def error(description: str) -> dict[str, Any]:
    """An error response entry of a route's ``responses``."""
    return {"model": ErrorBody, "description": description}


def body(model: type[BaseModel]) -> dict[str, Any]:
    """A route's ``openapi_extra`` request body for ``model``."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }
