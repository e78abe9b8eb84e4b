"""The index API over a running indexer: stream paging, waits, categories, types, $all, HTTP."""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import psycopg
import pytest
from fastapi import FastAPI, Request, Response

from indexer.reads import AsyncReads, Reads
from indexer.routes import router
from kafkastore.client import EventStore
from kafkastore.config import Settings
from kafkastore.errors import InvalidRequest, KafkaStoreError, StreamNotFound
from kafkastore.http import error_response
from kafkastore.records import NewEvent
from tests.indexer.helpers import IndexerThread, running_indexer
from tests.support import unique
from tests.support.topics import module_settings


@pytest.fixture(scope="module")
def store_settings(kafka_bootstrap: str, database_url: str) -> Iterator[Settings]:
    """One topic and one indexer for this module; every test uses its own streams."""
    yield from module_settings(kafka_bootstrap, database_url)


@pytest.fixture(scope="module")
def indexer(store_settings: Settings) -> Iterator[IndexerThread]:
    with running_indexer(store_settings) as ix:
        yield ix


@pytest.fixture(scope="module")
def store(store_settings: Settings, indexer: IndexerThread) -> Iterator[EventStore]:
    with EventStore(store_settings).open() as s:
        yield s


@pytest.fixture(scope="module")
def reads(store_settings: Settings) -> Iterator[Reads]:
    with Reads.open(store_settings) as r:
        yield r


@pytest.fixture
async def client(store_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.include_router(router)

    @app.exception_handler(KafkaStoreError)
    async def _ours(request: Request, exc: KafkaStoreError) -> Response:
        return error_response(exc)

    app.state.reads = await AsyncReads.open(store_settings)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c
    await app.state.reads.close()


def append(store: EventStore, stream_id: str, *types: str, **kw: Any) -> int:
    result = store.append(stream_id, [NewEvent(type=t, data={"t": t}, **kw) for t in types])
    return result.to_version


def test_min_version_reads_your_writes_right_after_an_append(
    store: EventStore, reads: Reads
) -> None:
    stream = unique("Order")
    version = append(store, stream, "Placed", "Paid")
    page = reads.read_stream(stream, min_version=version, timeout=30)
    assert [(e.version, e.type, e.data) for e in page.events] == [
        (1, "Placed", {"t": "Placed"}),
        (2, "Paid", {"t": "Paid"}),
    ]
    assert (page.version, page.next_version, page.index_behind) == (2, None, False)


def test_forward_and_backward_paging_follow_next_version(store: EventStore, reads: Reads) -> None:
    stream = unique("Paging")
    append(store, stream, *[f"E{i}" for i in range(1, 6)])
    reads.read_stream(stream, min_version=5, timeout=30)
    forward, start = [], 1
    while start is not None:
        page = reads.read_stream(stream, from_version=start, limit=2)
        forward.append([e.version for e in page.events])
        start = page.next_version
    backward, top = [], None
    while True:
        page = reads.read_stream(stream, from_version=top, limit=2, direction="backward")
        backward.append([e.version for e in page.events])
        if page.next_version is None:
            break
        top = page.next_version
    assert forward == [[1, 2], [3, 4], [5]]
    assert backward == [[5, 4], [3, 2], [1]]


def test_a_stream_without_events_is_not_found_and_bad_arguments_are_invalid(
    reads: Reads,
) -> None:
    with pytest.raises(StreamNotFound):
        reads.read_stream(unique("Missing"))
    with pytest.raises(StreamNotFound):
        reads.stream_state(unique("Missing"))
    with pytest.raises(InvalidRequest):
        reads.read_stream("$all")
    with pytest.raises(InvalidRequest):
        reads.read_all(limit=0)


def test_category_and_type_filters_keep_global_position_order(
    store: EventStore, reads: Reads
) -> None:
    category = unique("Cat").replace("-", "")
    a, b = f"{category}-a", f"{category}-b"
    append(store, a, "Opened", "Noted")
    append(store, b, "Opened", "Closed")
    append(store, unique("Other"), "Opened")
    reads.read_stream(b, min_version=2, timeout=30)
    reads.read_stream(a, min_version=2, timeout=30)
    page = reads.read_category(category)
    positions = [e.global_position for e in page.events]
    assert sorted((e.stream_id, e.type) for e in page.events) == [
        (a, "Noted"), (a, "Opened"), (b, "Closed"), (b, "Opened")
    ]  # fmt: skip
    assert positions == sorted(positions)
    # A short page continues after the index head it scanned (maybe past other categories'
    # later events), never before its own last event.
    assert page.next_position is not None and page.next_position > positions[-1]  # type: ignore[operator]
    assert reads.read_category(category, from_position=page.next_position).events == ()
    opened = reads.read_category(category, types=["Opened", "Closed"])
    assert sorted((e.stream_id, e.type) for e in opened.events) == [
        (a, "Opened"), (b, "Closed"), (b, "Opened")
    ]  # fmt: skip
    first = positions[0]
    typed = reads.read_all(from_position=first, types=["Noted"], limit=10_000)
    assert (a, "Noted") in [(e.stream_id, e.type) for e in typed.events]
    assert {e.type for e in typed.events} == {"Noted"}


def test_stream_state_has_the_head_and_the_indexed_version(store: EventStore, reads: Reads) -> None:
    stream = unique("State")
    append(store, stream, "A", "B", "C")
    reads.read_stream(stream, min_version=3, timeout=30)
    state = reads.stream_state(stream)
    assert (state.version, state.indexed_version, state.category, state.deleted) == (
        3, 3, "State", False
    )  # fmt: skip


@pytest.mark.anyio
async def test_http_stream_read_has_the_api_shape_and_binary_payloads_round_trip(
    store: EventStore, client: httpx.AsyncClient
) -> None:
    stream = unique("Blob")
    payload = bytes(range(256)) * 3
    store.append(
        stream,
        [
            NewEvent(type="Json", data={"x": [1, 2]}, metadata={"correlation_id": "c-1"}),
            NewEvent(type="Bin", data=payload, content_type="image/png"),
        ],
    )
    r = await client.get(f"/streams/{stream}", params={"min_version": 2, "timeout_ms": 30000})
    assert r.status_code == 200
    body = r.json()
    assert (body["stream_id"], body["version"], body["next_version"]) == (stream, 2, None)
    first, second = body["events"]
    assert set(first) == {
        "id", "stream_id", "version", "type", "data", "metadata", "created_at",
        "global_position", "partition", "offset",
    }  # fmt: skip
    assert (first["data"], first["metadata"]) == ({"x": [1, 2]}, {"correlation_id": "c-1"})
    assert first["created_at"].endswith("Z")
    assert second["content_type"] == "image/png"
    assert base64.b64decode(second["data_base64"]) == payload
    assert second["global_position"] > first["global_position"]
    again = await client.get(f"/streams/{stream}", headers={"If-None-Match": r.headers["ETag"]})
    assert again.status_code == 304


@pytest.mark.anyio
async def test_http_min_version_time_out_answers_what_is_indexed_with_index_behind(
    store: EventStore, client: httpx.AsyncClient
) -> None:
    stream = unique("Behind")
    append(store, stream, "A")
    ok = await client.get(f"/streams/{stream}", params={"min_version": 1, "timeout_ms": 30000})
    r = await client.get(f"/streams/{stream}", params={"min_version": 5, "timeout_ms": 200})
    missing = await client.get(f"/streams/{unique('Nope')}")
    bad = await client.get("/all", params={"limit": 0})
    state = await client.get(f"/streams/{stream}/state")
    assert "X-Index-Behind" not in ok.headers
    assert (r.status_code, r.headers.get("X-Index-Behind")) == (200, "true")
    assert [e["version"] for e in r.json()["events"]] == [1]
    assert (missing.status_code, missing.json()["error"]) == (404, "stream_not_found")
    assert (bad.status_code, bad.json()["error"]) == (400, "invalid_request")
    assert state.json()["version"] == 1 and state.json()["indexed_version"] == 1


@pytest.mark.anyio
async def test_a_reader_tailing_all_while_8_writers_append_never_skips_or_repeats(
    store: EventStore, client: httpx.AsyncClient
) -> None:
    head = _head_position(store.settings.database_url)
    streams = [unique(f"Tail{n}") for n in range(8)]
    per_writer = 40

    def writer(stream: str) -> None:
        for i in range(per_writer):
            store.append(stream, [NewEvent(type="Tick", data={"i": i})])

    threads = [threading.Thread(target=writer, args=(s,)) for s in streams]
    for t in threads:
        t.start()
    seen: list[int] = []
    ours = 0
    position = head + 1
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 120
    while ours < 8 * per_writer and loop.time() < deadline:
        page = (await client.get("/all", params={"from_position": position, "limit": 50})).json()
        for e in page["events"]:
            seen.append(e["global_position"])
            ours += e["stream_id"] in streams
        position = page["next_position"]
        if not page["events"]:
            await asyncio.sleep(0.02)
    for t in threads:
        t.join()
    assert ours == 8 * per_writer
    assert seen == list(range(head + 1, head + 1 + len(seen)))


def _head_position(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT last_position FROM index_head").fetchone()
    return int(row[0]) if row else 0
