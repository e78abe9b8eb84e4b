"""Appends through the in-process EventStore: expected versions, idempotency, batching."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from kafkastore import pg
from kafkastore.client import EventStore
from kafkastore.config import Settings
from kafkastore.errors import (
    AppendConflicts,
    DuplicateEventId,
    Unavailable,
    WrongExpectedVersion,
)
from kafkastore.records import AppendRequest, NewEvent
from tests.support import unique
from writer import faults
from writer.prepare import prepare


def ev(n: int = 0, **kw: object) -> NewEvent:
    return NewEvent(type="Happened", data={"n": n}, **kw)  # type: ignore[arg-type]


def head(settings: Settings, stream_id: str) -> int | None:
    with pg.connect(settings.database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT version FROM streams WHERE stream_id = %s", (stream_id,)
        ).fetchone()
    return None if row is None else int(row[0])


def test_any_appends_to_a_new_and_then_an_existing_stream(store: EventStore) -> None:
    stream = unique("Order")
    first = store.append(stream, [ev(1)])
    second = store.append(stream, [ev(2), ev(3)], expected_version="any")
    assert (first.from_version, first.to_version) == (1, 1)
    assert (second.from_version, second.to_version) == (2, 3)
    assert [e.version for e in second.events] == [2, 3]
    assert len({e.partition for e in first.events + second.events}) == 1


@pytest.mark.parametrize("expected", ["no_stream", 0])
def test_no_stream_passes_only_while_the_stream_has_no_events(
    store: EventStore, expected: object
) -> None:
    stream = unique("Order")
    assert store.append(stream, [ev()], expected_version=expected).to_version == 1  # type: ignore[arg-type]
    with pytest.raises(WrongExpectedVersion) as info:
        store.append(stream, [ev()], expected_version=expected)  # type: ignore[arg-type]
    assert (info.value.stream_id, info.value.current) == (stream, 1)


def test_exists_passes_only_when_the_stream_has_events(store: EventStore) -> None:
    stream = unique("Order")
    with pytest.raises(WrongExpectedVersion) as info:
        store.append(stream, [ev()], expected_version="exists")
    assert info.value.current == 0
    store.append(stream, [ev()])
    assert store.append(stream, [ev()], expected_version="exists").to_version == 2


def test_an_exact_version_passes_only_when_it_is_the_current_version(
    store: EventStore, settings: Settings
) -> None:
    stream = unique("Order")
    store.append(stream, [ev(), ev()])
    with pytest.raises(WrongExpectedVersion) as info:
        store.append(stream, [ev()], expected_version=1)
    assert (info.value.expected, info.value.current) == (1, 2)
    with pytest.raises(WrongExpectedVersion):
        store.append(stream, [ev()], expected_version=3)
    assert store.append(stream, [ev()], expected_version=2).to_version == 3
    assert head(settings, stream) == 3


def test_a_repeat_with_the_same_ids_returns_the_original_result(store: EventStore) -> None:
    stream = unique("Order")
    events = [ev(1, id=uuid.uuid4()), ev(2, id=uuid.uuid4())]
    original = store.append(stream, events, expected_version="no_stream")
    repeat = store.append(stream, events, expected_version="no_stream")
    also = store.append(stream, events, expected_version=7)
    assert original.created and not repeat.created and not also.created
    assert repeat.events == original.events == also.events
    assert store.append(stream, [ev()]).to_version == 3  # nothing was appended twice


def test_a_repeat_of_the_second_of_two_appends_returns_its_versions(store: EventStore) -> None:
    stream = unique("Order")
    store.append(stream, [ev(1, id=uuid.uuid4())])
    second = [ev(2, id=uuid.uuid4())]
    original = store.append(stream, second)
    repeat = store.append(stream, second)
    assert (repeat.from_version, repeat.created) == (2, False)
    assert repeat.events == original.events


def test_mixing_stored_and_new_ids_is_a_duplicate_event_id(
    store: EventStore, settings: Settings
) -> None:
    stream = unique("Order")
    stored = uuid.uuid4()
    store.append(stream, [ev(1, id=stored)])
    with pytest.raises(DuplicateEventId) as info:
        store.append(stream, [ev(1, id=stored), ev(2, id=uuid.uuid4())])
    assert info.value.event_ids == (str(stored),)
    assert head(settings, stream) == 1


def test_reusing_an_id_on_another_stream_is_a_duplicate_event_id(store: EventStore) -> None:
    stored = uuid.uuid4()
    store.append(unique("Order"), [ev(id=stored)])
    other = unique("Order")
    with pytest.raises(DuplicateEventId):
        store.append(other, [ev(id=stored)])


def test_the_same_id_twice_in_one_append_is_a_duplicate_event_id(store: EventStore) -> None:
    same = uuid.uuid4()
    with pytest.raises(DuplicateEventId):
        store.append(unique("Order"), [ev(id=same), ev(id=same)])


def test_an_atomic_append_to_several_streams_is_all_or_nothing(
    store: EventStore, settings: Settings
) -> None:
    a, b = unique("Order"), unique("Payment")
    store.append(b, [ev()])
    with pytest.raises(AppendConflicts) as info:
        store.append_many(
            [
                AppendRequest(a, (ev(),), "no_stream"),
                AppendRequest(b, (ev(),), "no_stream"),
            ]
        )
    assert [c.stream_id for c in info.value.conflicts] == [b]
    assert head(settings, a) in (None, 0)
    assert head(settings, b) == 1
    results = store.append_many(
        [AppendRequest(a, (ev(), ev()), "no_stream"), AppendRequest(b, (ev(),), 1)]
    )
    assert [(r.stream_id, r.from_version, r.to_version) for r in results] == [
        (a, 1, 2),
        (b, 2, 2),
    ]
    assert results[0].write_id == results[1].write_id  # one transaction, one marker


def test_concurrent_appends_to_one_stream_get_contiguous_versions(store: EventStore) -> None:
    stream = unique("Hot")
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda i: store.append(stream, [ev(i), ev(i)]), range(64)))
    versions = sorted(v.version for r in results for v in r.events)
    assert versions == list(range(1, 129))
    assert store.writer.batches < 64  # group commit gathered some of them


def test_one_bad_append_in_a_batch_fails_alone(settings: Settings) -> None:
    # A long gathering window puts all the appends in one transaction.
    with EventStore(settings.replace(batch_wait=0.3, max_inflight_batches=1)) as store:
        good = [unique("Good") for _ in range(5)]
        bad = unique("Bad")
        store.append(bad, [ev()])
        before = store.writer.batches
        writer = store.writer
        futures = [
            writer.submit(
                [prepare(AppendRequest(s, (ev(),), "no_stream"), settings.limits)], atomic=False
            )
            for s in [*good[:2], bad, *good[2:]]
        ]
        outcomes = []
        for f in futures:
            try:
                outcomes.append(f.result(30)[0].to_version)
            except WrongExpectedVersion as exc:
                outcomes.append(exc)
        assert store.writer.batches == before + 1
    assert outcomes[:2] == [1, 1] and outcomes[3:] == [1, 1, 1]
    assert isinstance(outcomes[2], WrongExpectedVersion)


def test_a_full_writer_refuses_at_once_when_asked_not_to_wait(settings: Settings) -> None:
    # One in-flight transaction held open by a fault hook fills the writer.
    release = threading.Event()

    def hold(step: str) -> None:
        if step == "locked":
            release.wait(20)

    tight = settings.replace(max_inflight_bytes=1, max_inflight_batches=1)
    with faults.injected(hold), EventStore(tight) as store:
        first = store.writer.submit(
            [prepare(AppendRequest(unique("Bp"), (ev(),)), tight.limits)], atomic=False
        )
        with pytest.raises(Unavailable) as info:
            for _ in range(3):
                store.writer.submit(
                    [prepare(AppendRequest(unique("Bp"), (ev(),)), tight.limits)],
                    atomic=False,
                    wait=0.0,
                )
        release.set()
        assert first.result(30)[0].to_version == 1
    assert info.value.retriable


def test_concurrent_reuse_of_one_id_on_two_streams_commits_only_one(settings: Settings) -> None:
    # Two stores: two writers, each with its own connections, racing on the same id.
    shared = uuid.uuid4()
    streams = [unique("Twin"), unique("Twin")]
    outcomes: list[object] = []
    with EventStore(settings) as one, EventStore(settings) as two:
        barrier = threading.Barrier(2)

        def run(store: EventStore, stream: str) -> None:
            barrier.wait()
            try:
                outcomes.append(store.append(stream, [ev(id=shared)]))
            except DuplicateEventId as exc:
                outcomes.append(exc)

        threads = [
            threading.Thread(target=run, args=(s, n))
            for s, n in zip((one, two), streams, strict=True)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sorted(type(o).__name__ for o in outcomes) == ["AppendResult", "DuplicateEventId"]
    assert sorted(head(settings, s) or 0 for s in streams) == [0, 1]


def test_a_committed_id_resent_with_another_payload_is_refused_and_the_marker_keeps_digests(
    store: EventStore, settings: Settings
) -> None:
    stream = unique("Order")
    ids = [uuid.uuid4(), uuid.uuid4()]
    original = store.append(stream, [ev(1, id=ids[0]), ev(2, id=ids[1])])
    with pg.connect(settings.database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT cardinality(digests) FROM appends WHERE write_id = %s", (original.write_id,)
        ).fetchone()
    assert row == (2,)
    assert store.append(stream, [ev(1, id=ids[0]), ev(2, id=ids[1])]).created is False
    with pytest.raises(DuplicateEventId) as info:
        store.append(stream, [ev(1, id=ids[0]), ev(3, id=ids[1])])
    assert (info.value.event_ids, info.value.reason) == ((str(ids[1]),), "payload_differs")
    assert head(settings, stream) == 2


def test_a_marker_written_before_digests_were_kept_answers_repeats_by_position(
    store: EventStore, settings: Settings
) -> None:
    stream = unique("Order")
    stored = uuid.uuid4()
    original = store.append(stream, [ev(1, id=stored)])
    with pg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE appends SET digests = NULL WHERE write_id = %s", (original.write_id,)
        )  # what migration 0003 leaves in markers older than it
    repeat = store.append(stream, [ev(99, id=stored)])
    assert (repeat.created, repeat.from_version, repeat.events) == (False, 1, original.events)


def test_the_same_id_twice_in_one_append_says_so(store: EventStore) -> None:
    same = uuid.uuid4()
    with pytest.raises(DuplicateEventId) as info:
        store.append(unique("Order"), [ev(id=same), ev(id=same)])
    assert info.value.reason == "repeated_in_request"
    assert "repeated within this request" in info.value.message
