"""The rules of names, numbers and payloads (:mod:`kafkastore.streams`, docs/http.md "Names
and limits") as JSON Schema, for the OpenAPI document: the routes cite them for their
parameters and bodies, and :func:`finish` gives the document its last touches. They describe
only; the routes check (our errors, our messages), and the schemathesis test
(``tests/kafkastore/test_schemathesis.py``) proves the two agree.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Path, Query
from pydantic import BaseModel, ConfigDict, Field

from kafkastore.config import Settings
from kafkastore.streams import MAX_AGE, MAX_POSITION, MAX_POSITION_DIGITS

_CONTROL = r"\x00-\x1f\x7f-\x9f"

STREAM_ID: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": 256,
    # No control characters, no leading or trailing whitespace, not starting with "$".
    "pattern": rf"^[^\s${_CONTROL}](?:[^{_CONTROL}]*[^\s{_CONTROL}])?$",
    "description": "1-256 characters, no control characters, no leading or trailing whitespace, "
    "not starting with $ (reserved); / is allowed",
    "examples": ["Order-1"],
}
CATEGORY: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": 256,
    "pattern": rf"^[^\s${_CONTROL}-][^{_CONTROL}-]*$",
    "description": "a stream id's part before its first - (no -, no control characters, not "
    "starting with whitespace or $)",
    "examples": ["Order"],
}
EVENT_TYPE: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": 256,
    "pattern": rf"^[^{_CONTROL}]+$",
    "examples": ["OrderPlaced"],
}
UUID_PATTERN = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
UUID: dict[str, Any] = {"type": "string", "format": "uuid", "pattern": UUID_PATTERN}
USER_NAME: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": 128,
    "pattern": "^[A-Za-z0-9_.@-]+$",
    "examples": ["alice"],
}
NO_NUL: dict[str, Any] = {"type": "string", "pattern": "^[^\\x00]*$"}
"""A string PostgreSQL can store: no NUL character."""
JSON_OBJECT_REF = "#/components/schemas/JsonObject"
JSON_SCHEMAS: dict[str, dict[str, Any]] = {
    "JsonObject": {
        "type": "object",
        "description": "a JSON object whose strings and keys hold no NUL character (PostgreSQL's "
        "jsonb cannot)",
        "propertyNames": NO_NUL,
        "additionalProperties": {"$ref": "#/components/schemas/JsonValue"},
    },
    "JsonValue": {
        "anyOf": [
            NO_NUL,
            {"type": ["number", "boolean", "null"]},
            {"type": "array", "items": {"$ref": "#/components/schemas/JsonValue"}},
            {"$ref": JSON_OBJECT_REF},
        ]
    },
}
"""Components of the document (:func:`finish` adds them): metadata and custom fields."""
JSON_OBJECT_OR_NULL: dict[str, Any] = {"anyOf": [{"$ref": JSON_OBJECT_REF}, {"type": "null"}]}

BASE64: dict[str, Any] = {
    "type": "string",
    "contentEncoding": "base64",
    "pattern": "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$",
}
NO_CONTROL: dict[str, Any] = {"type": "string", "minLength": 1, "pattern": rf"^[^{_CONTROL}]+$"}
"""A path segment: the app refuses control characters anywhere in a path (400)."""
TOKEN_ID: dict[str, Any] = {
    "type": "string",
    "pattern": "^[0-9a-f]{12}$",
    "examples": ["0123456789ab"],
}
EXPECTED_WORD: dict[str, Any] = {
    "type": "string",
    "pattern": f"^(any|no_stream|exists|[0-9]{{1,{MAX_POSITION_DIGITS}}})$",
    "description": 'any, no_stream, exists or a version of at most 15 digits (0 is "no_stream")',
}


def at_least(minimum: int, maximum: int | None = MAX_POSITION) -> dict[str, Any]:
    """An integer parameter's bounds, for ``json_schema_extra`` (versions and positions are at
    most :data:`~kafkastore.streams.MAX_POSITION`)."""
    bounds: dict[str, Any] = {"minimum": minimum}
    if maximum is not None:
        bounds["maximum"] = maximum
    return bounds


# Parameters whose rules the document states; the routes check them themselves (our errors,
# our messages), so these only describe.
StreamIdPath = Annotated[str, Path(json_schema_extra=STREAM_ID)]
CategoryPath = Annotated[str, Path(json_schema_extra=CATEGORY)]
Limit = Annotated[
    int | None,
    Query(
        description="page size (default read_default_limit)",
        # The maximum is the read_max_limit setting: finish() puts it in the document.
        json_schema_extra={"minimum": 1, "x-maximum-setting": "read_max_limit"},
    ),
]
Types = Annotated[
    list[str] | None,
    Query(
        description="keep only these event types (repeatable)",
        json_schema_extra={"items": EVENT_TYPE},
    ),
]


# -- request bodies --

AclNames = list[Annotated[str, Field(min_length=1, pattern="^[^\\x00]+$")]]


class Acl(BaseModel):
    """Who may do what: per action, user names, roles (``$admin``, ``$ops``) or
    ``$authenticated``. An absent action falls back to the category's or the global default."""

    model_config = ConfigDict(extra="forbid")

    read: AclNames = Field(default_factory=list)
    write: AclNames = Field(default_factory=list)
    delete: AclNames = Field(default_factory=list)
    metadata_read: AclNames = Field(default_factory=list)
    metadata_write: AclNames = Field(default_factory=list)


class MetadataWrite(BaseModel):
    """``PUT /streams/{stream_id}/metadata``: replaces every field (absent ones are unset)."""

    model_config = ConfigDict(extra="forbid")

    expected_metadata_version: Annotated[int, Field(ge=0, le=MAX_POSITION)] | Literal["any"] = "any"
    max_count: int | None = Field(
        None, ge=1, le=MAX_POSITION, description="only the newest N events are readable"
    )
    max_age: int | None = Field(
        None,
        ge=1,
        le=MAX_AGE,
        description="seconds: only younger events readable (100 years at most)",
    )
    truncate_before: int | None = Field(
        None,
        ge=0,
        le=MAX_POSITION,
        description="only versions >= this are readable; at most the head + 1",
    )
    acl: Acl | None = None
    custom: dict[str, Any] | None = Field(
        None, description="any JSON object of yours (no NUL character in its strings)"
    )


SNAPSHOT_WRITE: dict[str, Any] = {
    "type": "object",
    "description": "``PUT /streams/{stream_id}/snapshots``: state as of ``version`` (at most "
    "the head); the payload is data (JSON) or data_base64 (bytes), never both",
    "additionalProperties": False,
    "required": ["version", "type"],
    "properties": {
        "version": {"type": "integer", "minimum": 1, "maximum": MAX_POSITION},
        "type": EVENT_TYPE,
        "data": {"description": "any JSON value"},
        "data_base64": {**BASE64, "description": "the state's bytes (instead of data)"},
        "content_type": {
            "type": ["string", "null"],
            "minLength": 1,
            "pattern": "^[^\\x00]*$",
            "description": "what data_base64 holds (default application/octet-stream)",
        },
    },
    "oneOf": [{"required": ["data"]}, {"required": ["data_base64"]}],
}


def finish(document: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """FastAPI's document, less what the app never answers (422: validation errors are 400
    ``invalid_request``, documented on every route, and their schemas), with
    :data:`JSON_SCHEMAS` and every parameter's schema as requests see it."""
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            operation.get("responses", {}).pop("422", None)
            for parameter in operation.get("parameters", []):
                parameter["schema"] = _parameter_schema(parameter["schema"], settings)
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(JSON_SCHEMAS)
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    return document


def _parameter_schema(schema: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """An optional parameter is absent, never ``null`` (FastAPI writes ``anyOf: [T, null]``);
    a bound named by a setting (``x-maximum-setting``) is that setting's value."""
    variants = schema.get("anyOf")
    if isinstance(variants, list):
        kept = [v for v in variants if v != {"type": "null"}]
        if len(kept) == 1:
            schema = {**kept[0], **{k: v for k, v in schema.items() if k != "anyOf"}}
    setting = schema.pop("x-maximum-setting", None)
    if setting is not None:
        schema["maximum"] = getattr(settings, setting)
    return schema
