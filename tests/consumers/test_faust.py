"""The Faust adapter: an in-process Faust app's agent receives verdict-filtered events."""

from __future__ import annotations

import asyncio
from pathlib import Path

import faust

from consumers.faust import broker_url, events_topic, recorded_events
from kafkastore.config import Settings
from kafkastore.records import RecordedEvent
from tests.support.names import unique
from tests.support.wire import ManualWriter


def test_a_faust_agent_receives_committed_events_and_never_phantoms(
    settings: Settings, writer: ManualWriter, tmp_path: Path
) -> None:
    stream = unique("Order")
    produced = writer.append(stream, [("Placed", {"n": 1}), ("Paid", {"n": 2})])
    aborted = writer.phantom_aborted(stream, [("Ghost", {})])
    writer.malformed(stream)
    last = writer.append(stream, [("Shipped", {"n": 3})])
    received: list[RecordedEvent] = []

    async def main() -> None:
        app = faust.App(
            unique("faust"),
            broker=broker_url(settings),
            store="memory://",
            datadir=str(tmp_path / "faust"),  # not faust-<id>-data in the working directory
            web_enabled=False,
            autodiscover=False,
            consumer_auto_offset_reset="earliest",
            topic_partitions=settings.partitions,
        )
        topic = events_topic(app, settings)
        done = asyncio.Event()

        @app.agent(topic)
        async def agent(messages: faust.StreamT[bytes]) -> None:
            async for event in recorded_events(messages, settings=settings):
                received.append(event)
                if len(received) == 3:
                    done.set()

        await app.start()
        try:
            await asyncio.wait_for(done.wait(), timeout=120)
        finally:
            await app.stop()

    asyncio.run(main())
    assert [e.id for e in received] == [p.event_id for p in (*produced, *last)]
    assert [e.data for e in received] == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert aborted[0].event_id not in {e.id for e in received}


def test_the_faust_broker_is_the_configured_kafka_every_bootstrap_server() -> None:
    settings = Settings.from_env({}, kafka="10.0.0.1:9092, 10.0.0.2:9093")

    assert broker_url(settings) == "kafka://10.0.0.1:9092;kafka://10.0.0.2:9093"
