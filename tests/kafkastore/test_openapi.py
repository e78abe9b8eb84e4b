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
    ("post", "/auth/users"): {400, 409},
    ("get", "/auth/users"): {400},
    ("delete", "/auth/users/{name}"): {400, 404},
    ("post", "/auth/tokens"): {400, 404},
    ("get", "/auth/tokens"): {400},
    ("delete", "/auth/tokens/{token_id}"): {400, 404},
    ("post", "/streams/{stream_id}"): {400, 409, 410, 413, 415, 503},
    ("post", "/append"): {400, 409, 410, 413, 415, 503},
    ("get", "/streams/{stream_id}"): {400, 404, 410, 503},
    ("get", "/streams/{stream_id}/state"): {400, 404, 503},
    ("get", "/categories/{category}"): {400, 503},
    ("get", "/all"): {400, 503},
    ("get", "/healthz"): {400},
    ("get", "/readyz"): {400, 503},
    ("get", "/metrics"): {400},
    ("get", "/streams/{stream_id}/metadata"): {400, 410, 503},
    ("put", "/streams/{stream_id}/metadata"): {400, 409, 410, 503},
    ("delete", "/streams/{stream_id}"): {400, 409, 410, 503},
    ("put", "/streams/{stream_id}/snapshots"): {400, 409, 410, 503},
    ("get", "/streams/{stream_id}/snapshots/latest"): {400, 404, 410, 503},
    ("get", "/subscribe/all"): {400, 503},
    ("get", "/subscribe/categories/{category}"): {400, 503},
    ("get", "/subscribe/streams/{stream_id}"): {400, 503},
    ("get", "/console"): {400},
    ("get", "/console/assets/{name}"): {400, 404},
    ("get", "/console/api/overview"): {400, 503},
    ("get", "/console/api/streams"): {400, 503},
    ("get", "/console/api/events/{event_id}"): {400, 404, 410, 503},
    ("get", "/console/api/groups"): {400, 503},
    ("get", "/console/api/groups/{group}/dead-letters"): {400, 503},
    ("post", "/console/api/groups/{group}/dead-letters/replay"): {400, 404, 500, 503},
}

# The bodies that are not JSON, by their media types.
TEXT = {
    "/metrics": {"text/plain"},
    "/subscribe/all": {"text/event-stream"},
    "/subscribe/categories/{category}": {"text/event-stream"},
    "/subscribe/streams/{stream_id}": {"text/event-stream"},
    "/console": {"text/html"},
    "/console/assets/{name}": {"text/css", "text/javascript"},
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
                # Text bodies (SSE, HTML, CSS, metrics) are a string; a JSON one is not.
                bare = not schema or schema == {"title": schema.get("title")}
                if bare or (media == "application/json" and schema == {"type": "string"}):
                    empty.append(f"{method.upper()} {path} {status} {media}")
    assert empty == []


def test_text_answers_name_their_own_media_types(document: dict[str, Any]) -> None:
    media = {
        path: set(item["get"]["responses"]["200"]["content"])
        for path, item in document["paths"].items()
        if "get" in item and "content" in item["get"]["responses"]["200"]
    }

    assert {path: media[path] for path in TEXT} == TEXT
    assert [
        p for p, types in media.items() if p not in TEXT and types != {"application/json"}
    ] == []


def checked_by_auth(method: str, path: str) -> bool:
    """Whether the auth dependency may refuse this route when auth is on
    (kafkastore.auth_http.ACCESS)."""
    from kafkastore.auth_http import ACCESS, OPEN_RULE

    routes = {(m.lower(), p.replace(":path", "")): rule for (m, p), rule in ACCESS.items()}
    return path not in Settings().open_paths and routes.get((method, path)) != OPEN_RULE


@pytest.fixture(scope="module")
def secured_document() -> dict[str, Any]:
    """The document of an app with auth on (its construction asks no service)."""
    app = create_app(Settings.from_env({}, auth="on"))
    doc: dict[str, Any] = app.openapi()
    return doc


def test_every_route_documents_its_error_responses_with_the_error_body(
    document: dict[str, Any], secured_document: dict[str, Any]
) -> None:
    for doc, auth in ((document, False), (secured_document, True)):
        for method, path, operation in operations(doc):
            responses = operation["responses"]
            errors = {int(s) for s in responses if int(s) >= 400}
            # With auth on, every route but the open ones may also refuse; with auth off none.
            refusals = {401, 403} if auth and checked_by_auth(method, path) else set()
            assert errors == ERRORS[(method, path)] | refusals, f"{method.upper()} {path} {auth}"
            for status in errors:
                schema = responses[str(status)]["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (path, status)
            if 503 in errors:
                assert "Retry-After" in responses["503"]["headers"]
            assert "422" not in responses  # validation errors answer 400 invalid_request


def test_the_bearer_scheme_is_required_exactly_where_auth_checks(
    document: dict[str, Any], secured_document: dict[str, Any]
) -> None:
    required = {
        (method, path)
        for method, path, operation in operations(secured_document)
        if operation.get("security") == [{"HTTPBearer": []}]
    }

    assert required == {(m, p) for m, p, _ in operations(document) if checked_by_auth(m, p)}
    assert ("get", "/healthz") not in required and ("get", "/readyz") not in required
    assert secured_document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    # Auth off: nothing asks for credentials, so the document declares no scheme at all.
    assert [(m, p) for m, p, op in operations(document) if "security" in op] == []
    assert "securitySchemes" not in document.get("components", {})


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


def test_every_reference_of_the_document_resolves(document: dict[str, Any]) -> None:
    refs: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document["paths"])
    walk(document["components"])
    schemas = document["components"]["schemas"]

    assert refs
    assert [r for r in refs if r.rsplit("/", 1)[-1] not in schemas or "$defs" in r] == []


def test_lifecycle_writes_document_their_bodies(document: dict[str, Any]) -> None:
    def request(method: str, path: str) -> dict[str, Any]:
        body = document["paths"][path][method]["requestBody"]["content"]["application/json"]
        schema: dict[str, Any] = body["schema"]
        return schema

    metadata = request("put", "/streams/{stream_id}/metadata")
    snapshot = request("put", "/streams/{stream_id}/snapshots")

    assert {"expected_metadata_version", "max_count", "truncate_before"} <= set(
        metadata["properties"]
    )
    assert snapshot["required"] == ["version", "type"]
    assert snapshot["oneOf"] == [{"required": ["data"]}, {"required": ["data_base64"]}]
    assert metadata["additionalProperties"] is False and snapshot["additionalProperties"] is False
    assert "ErrorBody" in document["components"]["schemas"]
    assert not [name for name in document["components"]["schemas"] if "__" in name]


# Requests that need no Kafka or PostgreSQL: each answers a status its route documents.
SAMPLE = {
    "{stream_id}": "Order-1",
    "{category}": "Order",
    "{name}": "console.js",
    "{event_id}": "01a23123-0000-7000-8000-000000000000",
    "{group}": "billing",
}


@pytest.fixture(scope="module")
def offline() -> TestClient:
    # No lifespan: these requests are answered before any service is asked.
    return TestClient(create_app(Settings.from_env({})), raise_server_exceptions=False)


def answered(
    document: dict[str, Any],
    offline: TestClient,
    method: str,
    path: str,
    values: dict[str, str] | None = None,
    **kwargs: Any,
) -> tuple[int, dict[str, Any]]:
    """Send the request to ``path`` with its parameters from ``values`` or SAMPLE; check its
    status is documented for the route and the body is the error body. Returns both."""
    url = path
    for name, value in {**SAMPLE, **(values or {})}.items():
        url = url.replace(name, value)
    response = offline.request(method, url, **kwargs)
    assert str(response.status_code) in document["paths"][path][method]["responses"], url
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert {"error", "message"} <= set(body), body
    return response.status_code, body


def test_every_route_answers_its_documented_400_for_an_unknown_query_parameter(
    document: dict[str, Any], offline: TestClient
) -> None:
    for method, path, _ in operations(document):
        status, body = answered(document, offline, method, path, params={"limt": "5"})
        assert (status, body["error"], body["details"]) == (400, "invalid_request", ["limt"])


def test_a_subscription_with_a_bad_last_event_id_answers_its_documented_400(
    document: dict[str, Any], offline: TestClient
) -> None:
    for path in ("/subscribe/all", "/subscribe/streams/{stream_id}"):
        headers = {"Last-Event-ID": "seven"}
        status, body = answered(document, offline, "get", path, headers=headers)
        assert (status, body["details"]) == (400, ["Last-Event-ID"])


def test_a_stream_subscription_with_a_bad_stream_id_answers_400_before_the_feed_starts(
    document: dict[str, Any], offline: TestClient
) -> None:
    path = "/subscribe/streams/{stream_id}"
    status, body = answered(document, offline, "get", path, {"{stream_id}": "$reserved"})

    assert (status, body["error"]) == (400, "invalid_request")


def test_the_console_answers_its_documented_404s_and_400(
    document: dict[str, Any], offline: TestClient
) -> None:
    asset = answered(document, offline, "get", "/console/assets/{name}", {"{name}": "x.js"})
    event = answered(
        document, offline, "get", "/console/api/events/{event_id}", {"{event_id}": "not-a-uuid"}
    )
    replay = answered(document, offline, "post", "/console/api/groups/{group}/dead-letters/replay")

    assert (asset[0], asset[1]["error"]) == (404, "not_found")
    assert (event[0], event[1]["error"]) == (400, "invalid_request")
    assert (replay[0], replay[1]["error"]) == (404, "not_found")


def test_the_console_page_and_assets_answer_their_documented_media_types(
    offline: TestClient,
) -> None:
    page = offline.get("/console")
    css = offline.get("/console/assets/console.css")
    js = offline.get("/console/assets/console.js")

    assert page.headers["content-type"].startswith("text/html")
    assert css.headers["content-type"].startswith("text/css")
    assert js.headers["content-type"].startswith("text/javascript")


def test_every_link_leads_to_an_operation_with_the_parameters_and_fields_it_names(
    document: dict[str, Any],
) -> None:
    def fields(schema: dict[str, Any]) -> set[str]:
        return set(resolve(document, schema).get("properties", {}))

    found = []
    for method, path, operation in operations(document):
        for status, response in operation["responses"].items():
            for name, link in response.get("links", {}).items():
                found.append(f"{method.upper()} {path} {status} {name}")
                pointer, _, target_method = link["operationRef"].rpartition("/")
                target_path = (
                    pointer.removeprefix("#/paths/")
                    .replace("%7B", "{")
                    .replace("%7D", "}")
                    .replace("~1", "/")
                    .replace("~0", "~")
                )
                target = document["paths"][target_path][target_method]
                names = {p["name"] for p in target.get("parameters", [])}
                assert set(link.get("parameters", {})) <= names, name
                if "requestBody" in link:
                    body = target["requestBody"]["content"]["application/json"]["schema"]
                    assert set(link["requestBody"]) <= fields(body), name
                answer = fields(response["content"]["application/json"]["schema"])
                for expression in [
                    *link.get("parameters", {}).values(),
                    *link.get("requestBody", {}).values(),
                ]:
                    if expression.startswith("$response.body#/"):
                        assert expression.split("/")[1] in answer, (name, expression)
                    else:
                        assert expression.removeprefix("$request.path.") in {
                            p["name"] for p in operation.get("parameters", []) if p["in"] == "path"
                        }, (name, expression)

    assert sorted(found) == [
        "POST /append 200 ReadTheFirstStream",
        "POST /append 201 ReadTheFirstStream",
        "POST /auth/tokens 201 ListTheUsersTokens",
        "POST /auth/tokens 201 RevokeIt",
        "POST /auth/users 201 CreateAToken",
        "POST /auth/users 201 RemoveTheUser",
        "POST /streams/{stream_id} 200 ReadTheStream",
        "POST /streams/{stream_id} 201 ReadTheStream",
    ]
