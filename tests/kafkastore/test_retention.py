"""Retention and deletion on every read path (docs/http.md "Stream lifecycle"), over a real indexer:
stream reads forward and backward with paging across the hidden range, category and $all
reads, ``min_version`` waits, the stream state; soft delete and recreation; hard delete."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from indexer.reads import Reads
from kafkastore.client import EventStore
from kafkastore.config import Settings
from kafkastore.errors import StreamDeleted, StreamNotFound
from kafkastore.records import NewEvent
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
def store(store_settings: Settings, indexer: IndexerThread) -> Iterator[EventStore]:
    yield from support.module_store(store_settings)


@pytest.fixture(scope="module")
def reads(store_settings: Settings) -> Iterator[Reads]:
    with Reads.open(store_settings) as r:
        yield r


def forward_pages(reads: Reads, stream: str, limit: int = 2) -> list[list[int]]:
    pages, start = [], 1
    while start is not None:
        page = reads.read_stream(stream, from_version=start, limit=limit)
        pages.append([e.version for e in page.events])
        start = page.next_version
    return pages


def backward_pages(reads: Reads, stream: str, limit: int = 2) -> list[list[int]]:
    pages: list[list[int]] = []
    top: int | None = None
    while True:
        page = reads.read_stream(stream, from_version=top, limit=limit, direction="backward")
        pages.append([e.version for e in page.events])
        if page.next_version is None:
            return pages
        top = page.next_version


def position_reads(
    reads: Reads, stream: str, category: str, start: int
) -> tuple[list[int], list[int]]:
    """The stream's versions as category and $all reads page them (limit 1) from ``start``."""
    found: dict[str, list[int]] = {"category": [], "all": []}
    for kind in found:
        position = start
        while True:
            if kind == "category":
                page = reads.read_category(category, from_position=position, limit=1)
            else:
                page = reads.read_all(from_position=position, limit=1)
            if not page.events:
                break
            found[kind] += [e.version for e in page.events if e.stream_id == stream]
            assert page.next_position is not None
            position = page.next_position
    return found["category"], found["all"]


def six_events(store: EventStore, reads: Reads) -> tuple[str, str, str, int]:
    """A stream of 6 indexed events and a control stream in its category; (stream, control,
    category, the stream's first global position)."""
    category = unique("Ret").replace("-", "")
    stream, control = f"{category}-s", f"{category}-c"
    support.append(store, stream, 6)
    support.append(store, control, 2)
    page = reads.read_stream(stream, min_version=6, timeout=30)
    reads.read_stream(control, min_version=2, timeout=30)
    first = page.events[0].global_position
    assert first is not None
    return stream, control, category, first


def _max_count(store: EventStore, stream: str) -> None:
    store.set_metadata(stream, max_count=3)


def _truncate_before(store: EventStore, stream: str) -> None:
    store.set_metadata(stream, truncate_before=4)


RULES: dict[str, Callable[[EventStore, str], None]] = {
    "max_count": _max_count,
    "truncate_before": _truncate_before,
}


@pytest.mark.parametrize("rule", sorted(RULES))
def test_a_retention_rule_hides_the_old_events_from_every_read_path_with_paging_right(
    store: EventStore, reads: Reads, rule: str
) -> None:
    stream, control, category, first = six_events(store, reads)

    RULES[rule](store, stream)

    assert forward_pages(reads, stream) == [[4, 5], [6]]
    assert backward_pages(reads, stream) == [[6, 5], [4]]
    page = reads.read_stream(stream, from_version=1, limit=10)
    assert (page.version, page.next_version) == (6, None)
    in_category, in_all = position_reads(reads, stream, category, first)
    assert in_category == in_all == [4, 5, 6]
    assert [e.version for e in reads.read_stream(control).events] == [1, 2]
    waited = reads.read_stream(stream, min_version=6, timeout=5)
    assert [e.version for e in waited.events] == [4, 5, 6] and not waited.index_behind
    state = reads.stream_state(stream)
    assert (state.version, state.indexed_version, state.readable_from) == (6, 6, 4)


def test_max_age_hides_events_older_than_that_many_seconds(store: EventStore, reads: Reads) -> None:
    category = unique("Age").replace("-", "")
    stream = f"{category}-s"
    support.append(store, stream, 3)
    first_page = reads.read_stream(stream, min_version=3, timeout=30)
    time.sleep(4.5)
    store.append(stream, [NewEvent(type="Fresh", data={})])
    reads.read_stream(stream, min_version=4, timeout=30)

    store.set_metadata(stream, max_age=4)

    assert forward_pages(reads, stream) == [[4]]
    assert backward_pages(reads, stream) == [[4]]
    start = first_page.events[0].global_position
    assert start is not None
    assert position_reads(reads, stream, category, start) == ([4], [4])


def test_a_stream_whose_events_are_all_truncated_reads_like_an_empty_stream(
    store: EventStore, reads: Reads
) -> None:
    stream, _control, category, first = six_events(store, reads)

    store.set_metadata(stream, truncate_before=7)

    page = reads.read_stream(stream)
    assert (page.version, page.events, page.next_version) == (6, (), None)
    assert reads.read_stream(stream, direction="backward").events == ()
    assert position_reads(reads, stream, category, first) == ([], [])
    assert reads.stream_state(stream).readable_from is None


def test_a_soft_deleted_stream_is_not_found_and_recreating_it_continues_the_numbering(
    store: EventStore, reads: Reads
) -> None:
    stream, control, category, first = six_events(store, reads)

    store.delete_stream(stream, expected_version=6)

    with pytest.raises(StreamNotFound):
        reads.read_stream(stream)
    with pytest.raises(StreamNotFound):
        reads.stream_state(stream)
    assert position_reads(reads, stream, category, first) == ([], [])
    assert store.get_metadata(stream).truncate_before == 7

    again = store.append(stream, [NewEvent(type="Again", data={})], "no_stream")

    assert (again.from_version, again.to_version) == (7, 7)
    page = reads.read_stream(stream, min_version=7, timeout=30)
    assert [(e.version, e.type) for e in page.events] == [(7, "Again")]
    assert backward_pages(reads, stream) == [[7]]
    assert position_reads(reads, stream, category, first) == ([7], [7])
    assert [e.version for e in reads.read_stream(control).events] == [1, 2]


def test_a_hard_deleted_stream_answers_stream_deleted_for_good(
    store: EventStore, reads: Reads
) -> None:
    stream, control, category, first = six_events(store, reads)

    store.delete_stream(stream, hard=True)

    with pytest.raises(StreamDeleted):
        reads.read_stream(stream)
    with pytest.raises(StreamDeleted):
        store.append(stream, [NewEvent(type="Again", data={})], "no_stream")
    with pytest.raises(StreamDeleted):
        store.set_metadata(stream, max_count=1)
    with pytest.raises(StreamDeleted):
        store.get_metadata(stream)
    with pytest.raises(StreamDeleted):
        store.delete_stream(stream)
    assert reads.stream_state(stream).deleted
    assert position_reads(reads, stream, category, first) == ([], [])
    assert [e.version for e in reads.read_stream(control).events] == [1, 2]
