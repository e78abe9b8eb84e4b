"""The OpenAPI document says what every route answers: a schema for each body, the error
responses each route can give (with the one error body), and the headers of docs/http.md."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from kafkastore.config import Settings
from kafkastore.http import create_app

# The error statuses each route can answer. A new route must be added here.
ERRORS = {
    ("post", "/streams/{stream_id}"): {400, 409, 410, 413, 415, 503},
    ("post", "/append"): {400, 409, 410, 413, 415, 503},
    ("get", "/streams/{stream_id}"): {400, 404, 410, 503},
    ("get", "/streams/{stream_id}/state"): {400, 404, 503},
    ("get", "/categories/{category}"): {400, 503},
    ("get", "/all"): {400, 503},
    ("get", "/healthz"): {400},
    ("get", "/readyz"): {400, 503},
    ("get", "/metrics"): {400},
}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    # No lifespan: the document needs no Kafka or PostgreSQL.
    response = TestClient(create_app(Settings.from_env({}))).get("/openapi.json")
    assert response.status_code == 200
    doc: dict[str, Any] = response.json()
    return doc


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        resolved: dict[str, Any] = document["components"]["schemas"][name]
        return resolved
    return schema


def test_every_route_of_the_app_is_in_the_error_table(document: dict[str, Any]) -> None:
    assert {(m, p) for m, p, _ in operations(document)} == set(ERRORS)


def test_no_response_has_an_empty_schema(document: dict[str, Any]) -> None:
    empty = []
    for method, path, operation in operations(document):
        for status, response in operation["responses"].items():
            for media, content in response.get("content", {}).items():
                schema = resolve(document, content.get("schema", {}))
                if not schema or schema == {"title": schema.get("title")}:
                    empty.append(f"{method.upper()} {path} {status} {media}")
    assert empty == []


def test_every_route_documents_its_error_responses_with_the_error_body(
    document: dict[str, Any],
) -> None:
    for method, path, operation in operations(document):
        responses = operation["responses"]
        errors = {int(s) for s in responses if int(s) >= 400}
        assert errors == ERRORS[(method, path)], f"{method.upper()} {path}"
        for status in errors:
            schema = responses[str(status)]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (path, status)
        if 503 in errors:
            assert "Retry-After" in responses["503"]["headers"]
        assert "422" not in responses  # validation errors answer 400 invalid_request


def test_the_error_body_has_error_and_message(document: dict[str, Any]) -> None:
    body = document["components"]["schemas"]["ErrorBody"]
    assert body["required"] == ["error", "message"]
    assert {"event_ids", "reason", "current_version", "limit", "outcome"} <= set(body["properties"])


def test_successes_name_their_bodies(document: dict[str, Any]) -> None:
    def body(method: str, path: str, status: str) -> str:
        response = document["paths"][path][method]["responses"][status]
        ref: str = response["content"]["application/json"]["schema"]["$ref"]
        return ref.rsplit("/", 1)[-1]

    assert body("post", "/streams/{stream_id}", "201") == "AppendResult"
    assert body("post", "/streams/{stream_id}", "200") == "AppendResult"
    assert body("post", "/append", "201") == "AppendResults"
    assert body("get", "/streams/{stream_id}", "200") == "StreamPage"
    assert body("get", "/streams/{stream_id}/state", "200") == "StreamState"
    assert body("get", "/categories/{category}", "200") == "PositionPage"
    assert body("get", "/all", "200") == "PositionPage"
    page = document["components"]["schemas"]["StreamPage"]["properties"]["events"]
    assert page["items"] == {"$ref": "#/components/schemas/RecordedEvent"}


def test_conditional_reads_and_index_lag_are_documented(document: dict[str, Any]) -> None:
    read = document["paths"]["/streams/{stream_id}"]["get"]
    assert {"ETag", "X-Index-Behind"} <= set(read["responses"]["200"]["headers"])
    assert "ETag" in read["responses"]["304"]["headers"]
    assert "content" not in read["responses"]["304"]
    headers = [p["name"] for p in read["parameters"] if p["in"] == "header"]
    assert headers == ["if-none-match"]


def test_appends_document_their_json_body_and_the_415(document: dict[str, Any]) -> None:
    append = document["paths"]["/streams/{stream_id}"]["post"]
    assert set(append["requestBody"]["content"]) == {"application/json"}
    assert "JSON" in append["responses"]["415"]["description"]
