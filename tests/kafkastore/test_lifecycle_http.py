"""The lifecycle routes of the HTTP API (docs/http.md "Stream lifecycle"): metadata, deletes, the
tombstone on every write path, bad input answered 400/409 with nothing changed, OpenAPI."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from kafkastore.config import Settings
from kafkastore.http import create_app
from kafkastore.streams import MAX_AGE, MAX_POSITION
from tests.indexer.helpers import IndexerThread
from tests.kafkastore import lifecycle_support as support
from tests.support import unique
from tests.support.topics import module_settings


@pytest.fixture(scope="module")
def store_settings(kafka_bootstrap: str, database_url: str) -> Iterator[Settings]:
    yield from module_settings(kafka_bootstrap, database_url)


@pytest.fixture(scope="module")
def indexer(store_settings: Settings) -> Iterator[IndexerThread]:
    yield from support.module_indexer(store_settings)


@pytest.fixture(scope="module")
def client(store_settings: Settings, indexer: IndexerThread) -> Iterator[TestClient]:
    with TestClient(create_app(store_settings)) as client:
        yield client


def events(n: int) -> dict[str, Any]:
    return {"events": [{"type": f"E{i}", "data": {"i": i}} for i in range(1, n + 1)]}


def indexed(client: TestClient, stream: str, version: int) -> dict[str, Any]:
    response = client.get(f"/streams/{stream}", params={"min_version": version})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_metadata_is_settable_before_the_stream_has_events_and_versioned(
    client: TestClient,
) -> None:
    stream = unique("Meta")
    fresh = client.get(f"/streams/{stream}/metadata")
    assert fresh.status_code == 200
    assert fresh.json() == {
        "stream_id": stream,
        "metadata_version": 0,
        "max_count": None,
        "max_age": None,
        "truncate_before": None,
        "acl": None,
        "custom": None,
    }
    body = {
        "expected_metadata_version": 0,
        "max_count": 10,
        "max_age": 3600,
        "truncate_before": 1,
        "acl": {"read": ["$authenticated"], "write": ["alice"]},
        "custom": {"owner": "billing"},
    }
    put = client.put(f"/streams/{stream}/metadata", json=body)
    assert put.status_code == 200, put.text
    del body["expected_metadata_version"]
    assert put.json() == {"stream_id": stream, "metadata_version": 1, **body}
    assert client.get(f"/streams/{stream}/metadata").json() == put.json()

    stale = client.put(
        f"/streams/{stream}/metadata", json={"expected_metadata_version": 0, "max_count": 1}
    )
    assert stale.status_code == 409
    assert stale.json()["error"] == "wrong_expected_version"
    assert (stale.json()["expected_version"], stale.json()["current_version"]) == (0, 1)
    assert client.get(f"/streams/{stream}/metadata").json() == put.json()
    # The stream still has no events: metadata alone does not make it exist.
    assert client.get(f"/streams/{stream}").status_code == 404


BAD_METADATA = {
    "zero max_count": ({"max_count": 0}, 400, "max_count"),
    "negative max_count": ({"max_count": -3}, 400, "max_count"),
    "string max_age": ({"max_age": "10"}, 400, "max_age"),
    "fractional max_age": ({"max_age": 1.5}, 400, "max_age"),
    "boolean max_count": ({"max_count": True}, 400, "max_count"),
    "max_age above 100 years": ({"max_age": MAX_AGE + 1}, 400, "max_age"),
    "max_age of millions of years": ({"max_age": MAX_POSITION}, 400, "max_age"),
    "truncate_before above head + 1": ({"truncate_before": 4}, 409, None),
    "unknown field": ({"maxCount": 3}, 400, "maxCount"),
    "acl not an object": ({"acl": ["alice"]}, 400, "acl"),
    "custom not an object": ({"custom": 3}, 400, "custom"),
    "stale expected_metadata_version": ({"expected_metadata_version": 0}, 409, None),
    "bad expected_metadata_version": ({"expected_metadata_version": "x"}, 400, None),
}


@pytest.mark.parametrize("case", sorted(BAD_METADATA))
def test_bad_metadata_is_refused_clearly_and_changes_nothing(client: TestClient, case: str) -> None:
    stream = unique("Bad")
    assert client.post(f"/streams/{stream}", json=events(2)).status_code == 201
    assert client.put(f"/streams/{stream}/metadata", json={"max_count": 5}).status_code == 200
    before = client.get(f"/streams/{stream}/metadata").json()
    body, status, field = BAD_METADATA[case]

    response = client.put(f"/streams/{stream}/metadata", json=body)

    assert response.status_code == status, response.text
    error = response.json()
    codes = {400: "invalid_request", 409: ("wrong_expected_version", "truncate_above_head")}
    assert error["error"] in codes[status]
    if "truncate_before" in body and status == 409:
        assert error == {
            "error": "truncate_above_head",
            "message": f"truncate_before 4 is above the head of {stream!r} + 1 (3)",
            "stream_id": stream,
            "truncate_before": 4,
            "current_version": 2,
        }
    assert error["message"]
    if field is not None:
        assert field in error["details"]
    assert client.get(f"/streams/{stream}/metadata").json() == before


def test_the_longest_max_age_keeps_the_stream_readable_and_indexed(client: TestClient) -> None:
    # PostgreSQL computes now() - max_age for every read and for the indexer: a max_age of
    # millions of years was once stored, and then every read of the stream and the indexer
    # failed ("timestamp out of range").
    stream = unique("Aged")
    put = client.put(f"/streams/{stream}/metadata", json={"max_age": MAX_AGE})
    assert put.status_code == 200, put.text

    assert client.post(f"/streams/{stream}", json=events(2)).status_code == 201

    assert [e["version"] for e in indexed(client, stream, 2)["events"]] == [1, 2]
    assert client.get(f"/streams/{stream}/state").json()["readable_from"] == 1


def test_soft_delete_answers_204_then_404_and_an_append_recreates_the_stream(
    client: TestClient,
) -> None:
    stream = unique("Soft")
    assert client.post(f"/streams/{stream}", json=events(3)).status_code == 201
    indexed(client, stream, 3)

    stale = client.delete(f"/streams/{stream}", params={"expected_version": 2})
    assert stale.status_code == 409 and stale.json()["current_version"] == 3
    assert client.delete(f"/streams/{stream}", params={"expected_version": 3}).status_code == 204

    assert client.get(f"/streams/{stream}").status_code == 404
    assert client.get(f"/streams/{stream}").json()["error"] == "stream_not_found"
    again = client.post(f"/streams/{stream}", json={"expected_version": "no_stream", **events(1)})
    assert again.status_code == 201 and again.json()["from_version"] == 4
    assert [e["version"] for e in indexed(client, stream, 4)["events"]] == [4]


def test_a_tombstone_refuses_every_read_and_write_with_410_also_inside_an_atomic_append(
    client: TestClient,
) -> None:
    stream, other = unique("Hard"), unique("Other")
    assert client.post(f"/streams/{stream}", json=events(2)).status_code == 201
    assert (
        client.put(
            f"/streams/{stream}/snapshots", json={"version": 2, "type": "State", "data": {"n": 2}}
        ).status_code
        == 201
    )

    assert client.delete(f"/streams/{stream}", params={"hard": "true"}).status_code == 204

    answers = {
        "read": client.get(f"/streams/{stream}"),
        "append": client.post(f"/streams/{stream}", json=events(1)),
        "atomic append": client.post(
            "/append",
            json={
                "appends": [
                    {"stream_id": other, **events(1)},
                    {"stream_id": stream, **events(1)},
                ]
            },
        ),
        "metadata read": client.get(f"/streams/{stream}/metadata"),
        "metadata write": client.put(f"/streams/{stream}/metadata", json={"max_count": 1}),
        "snapshot write": client.put(
            f"/streams/{stream}/snapshots", json={"version": 1, "type": "S", "data": {}}
        ),
        "snapshot read": client.get(f"/streams/{stream}/snapshots/latest"),
        "delete again": client.delete(f"/streams/{stream}"),
    }
    assert {k: (r.status_code, r.json()["error"]) for k, r in answers.items()} == dict.fromkeys(
        answers, (410, "stream_deleted")
    )
    # The atomic append failed whole: the other stream was not written.
    assert client.get(f"/streams/{other}/state").status_code == 404
    state = client.get(f"/streams/{stream}/state").json()
    assert (state["deleted"], state["readable_from"]) == (True, None)


def test_the_openapi_document_describes_every_lifecycle_route_and_its_errors(
    client: TestClient,
) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    routes = {
        ("/streams/{stream_id}/metadata", "get"): {"200", "400", "410", "503"},
        ("/streams/{stream_id}/metadata", "put"): {"200", "400", "409", "410", "503"},
        ("/streams/{stream_id}", "delete"): {"204", "400", "409", "410", "503"},
        ("/streams/{stream_id}/snapshots", "put"): {"201", "400", "409", "410", "503"},
        ("/streams/{stream_id}/snapshots/latest", "get"): {"200", "400", "404", "410", "503"},
    }
    # 401/403 are documented only with auth on (docs/http.md "Security"): this app has it off.
    for (path, method), statuses in routes.items():
        operation = paths[path][method]
        assert set(operation["responses"]) == statuses, (path, method)
        for status in statuses - {"204"}:
            content = operation["responses"][status]["content"]["application/json"]
            assert "$ref" in content["schema"], (path, method, status)


def test_lifecycle_routes_answer_their_documented_400_for_bad_parameters(
    client: TestClient,
) -> None:
    stream = unique("Params")
    paths = client.get("/openapi.json").json()["paths"]
    answers = {
        ("/streams/{stream_id}", "delete"): client.delete(
            f"/streams/{stream}", params={"expected_version": "soon"}
        ),
        ("/streams/{stream_id}/metadata", "get"): client.get(
            f"/streams/{stream}/metadata", params={"verison": "1"}
        ),
        ("/streams/{stream_id}/snapshots/latest", "get"): client.get(
            "/streams/$bad/snapshots/latest"
        ),
        ("/streams/{stream_id}/metadata", "put"): client.put(
            f"/streams/{stream}/metadata", content=b"{not json"
        ),
    }

    for (path, method), response in answers.items():
        assert response.status_code == 400, (path, method, response.text)
        assert response.json()["error"] == "invalid_request"
        assert "400" in paths[path][method]["responses"]
