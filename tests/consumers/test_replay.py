"""Replaying dead letters (consumers/replay.py) over real Kafka and PostgreSQL: every record of
``<topic>.dlq.replayed`` counts, a letter is handed over at most once (also by two replays at
once, also after a replay died in its handler), and an event hidden since is skipped."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator

import pytest

from consumers import groups, replay
from consumers.subscription import RetryPolicy, Subscription
from kafkastore import kafka
from kafkastore.client import EventStore
from kafkastore.config import Settings
from kafkastore.records import NewEvent, RecordedEvent
from tests.consumers.test_subscription import eventually
from tests.support.names import unique


def poisoned(settings: Settings, group: str, streams: list[str]) -> dict[str, str]:
    """One "Poison" event in each of ``streams``, dead-lettered by ``group``'s handler (after a
    "Fine" event it handles); the poisoned events' ids by stream."""
    category = streams[0].split("-")[0]
    with EventStore(settings) as store:
        ids = {}
        for stream in streams:
            store.append(stream, [NewEvent(type="Fine")])
            (event,) = store.append(stream, [NewEvent(type="Poison", data={"s": stream})]).events
            ids[stream] = str(event.id)

    def handler(event: RecordedEvent) -> None:
        if event.type == "Poison":
            raise ValueError("cannot digest this")

    with Subscription(
        group,
        handler,
        categories=[category],
        settings=settings,
        retry=RetryPolicy(attempts=2, backoff=0.01),
        install_signal_handlers=False,
    ).start() as sub:
        eventually(lambda: sub.stats()["dead_letters"] >= len(streams))
    return ids


@pytest.fixture
def streams() -> list[str]:
    category = unique("Invoice").replace("-", "")
    return [f"{category}-{n}" for n in range(3)]


class Handed:
    """A handler that remembers what it was handed (thread-safe), optionally slowly."""

    def __init__(self, pause: float = 0.0) -> None:
        self.events: list[str] = []
        self.pause = pause
        self._lock = threading.Lock()

    def __call__(self, event: RecordedEvent) -> None:
        threading.Event().wait(self.pause)
        with self._lock:
            self.events.append(str(event.id))


def outcomes(results: list[replay.Replayed]) -> Counter[str]:
    return Counter(r.outcome for r in results)


@pytest.fixture
def cleanup(settings: Settings) -> Iterator[None]:
    yield
    from confluent_kafka.admin import AdminClient

    AdminClient({"bootstrap.servers": settings.kafka}).delete_topics(
        [settings.topic + ".dlq", replay.replayed_topic(settings.topic)]
    )


@pytest.mark.usefixtures("cleanup")
def test_a_handled_letter_is_seen_behind_more_records_than_a_listing_holds(
    settings: Settings, streams: list[str]
) -> None:
    group = unique("billing")
    ids = poisoned(settings, group, streams[:1])
    # Earlier replays of the group: more records than a listing returns (MAX_LETTERS), before
    # the one that says this letter was handled.
    name = replay.replayed_topic(settings.topic)
    from kafkastore import topic

    topic.ensure_topic(settings.replace(topic=name, partitions=1), partitions=1)
    producer = kafka.producer(settings)
    for n in range(groups.MAX_LETTERS + 5):
        producer.produce(
            name,
            value=b"",
            headers=[
                ("kafkastore_group", group.encode()),
                ("kafkastore_dlq_partition", b"99"),
                ("kafkastore_dlq_offset", str(n).encode()),
                ("kafkastore_outcome", b"failed"),
            ],
        )
    assert producer.flush(30) == 0
    handed = Handed()

    first = replay.replay(settings, group, handed)
    again = replay.replay(settings, group, handed)

    assert [r.outcome for r in first] == ["handled"]
    assert [r.outcome for r in again] == ["already-replayed"]
    assert handed.events == [ids[streams[0]]]


@pytest.mark.usefixtures("cleanup")
def test_a_replay_hands_over_every_letter_not_only_a_listings_worth(
    settings: Settings, streams: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    group = unique("billing")
    ids = poisoned(settings, group, streams)
    # A listing of one letter (the console's page) instead of 1000: three letters are enough.
    monkeypatch.setattr(groups, "MAX_LETTERS", 1)
    assert len(groups.dead_letters(settings, group)) == 1
    handed = Handed()

    results = replay.replay(settings, group, handed)

    assert outcomes(results) == {"handled": 3}
    assert sorted(handed.events) == sorted(ids.values())


@pytest.mark.usefixtures("cleanup")
def test_two_replays_at_once_hand_each_letter_over_once(
    settings: Settings, streams: list[str]
) -> None:
    group = unique("billing")
    ids = poisoned(settings, group, streams)
    handed = Handed(pause=0.3)  # a slow handler: the two replays overlap
    results: list[list[replay.Replayed]] = []
    start = threading.Barrier(2)

    def run() -> None:
        start.wait()
        results.append(replay.replay(settings, group, handed))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)

    assert Counter(handed.events) == Counter(ids.values())  # each exactly once
    assert sorted(sorted(outcomes(r).items()) for r in results) == [
        [("already-replayed", 3)],
        [("handled", 3)],
    ]


@pytest.mark.usefixtures("cleanup")
def test_a_letter_whose_replay_died_in_the_handler_is_not_handed_over_again(
    settings: Settings, streams: list[str]
) -> None:
    group = unique("billing")
    ids = poisoned(settings, group, streams[:2])
    handed: list[str] = []

    def dies_on_the_first(event: RecordedEvent) -> None:
        handed.append(str(event.id))
        raise SystemExit("the process ends in the middle of the handler")

    with pytest.raises(SystemExit):
        replay.replay(settings, group, dies_on_the_first)
    survivor = Handed()
    after = replay.replay(settings, group, survivor)

    assert len(handed) == 1
    (died,) = handed
    assert {r.event_id: r.outcome for r in after} == {
        died: "interrupted",
        **{i: "handled" for i in ids.values() if i != died},
    }
    assert died not in survivor.events
    states = replay.replay_states(settings, group)
    assert sorted(states.values()) == ["attempting", "handled"]


@pytest.mark.usefixtures("cleanup")
def test_an_event_hidden_since_it_was_dead_lettered_is_skipped(
    settings: Settings, streams: list[str]
) -> None:
    group = unique("billing")
    deleted, truncated, kept = streams
    ids = poisoned(settings, group, streams)
    with EventStore(settings) as store:
        store.delete_stream(deleted)
        store.set_metadata(truncated, truncate_before=3)  # the poison is version 2
    handed = Handed()

    results = replay.replay(settings, group, handed)
    again = replay.replay(settings, group, handed)

    by_stream = {r.stream_id: r.outcome for r in results}
    assert by_stream == {deleted: "hidden", truncated: "hidden", kept: "handled"}
    assert handed.events == [ids[kept]]
    assert {r.stream_id: r.outcome for r in again}[deleted] == "hidden"
    recorded = replay.replay_states(settings, group)
    assert sorted(recorded.values()) == ["handled", "hidden", "hidden"]
