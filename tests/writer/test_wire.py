"""What the writer puts on the topic: CloudEvents binary mode, Java-compatible partitioning."""

from __future__ import annotations

from cloudevents.core.bindings.kafka import KafkaMessage, from_binary_event

from kafkastore.client import EventStore
from kafkastore.config import Settings
from kafkastore.records import NewEvent
from tests.support import unique
from tests.writer.topic_reader import read_topic


def java_murmur2_partition(key: bytes, partitions: int) -> int:
    """``org.apache.kafka.common.utils.Utils.murmur2`` and the default partitioner's
    ``toPositive(murmur2(key)) % partitions``, transcribed from the Java client."""
    m, r = 0x5BD1E995, 24
    length = len(key)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    for i in range(length // 4):
        k = int.from_bytes(key[i * 4 : i * 4 + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    tail = length % 4
    base = length - tail
    if tail == 3:
        h ^= key[base + 2] << 16
    if tail >= 2:
        h ^= key[base + 1] << 8
    if tail >= 1:
        h ^= key[base]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return (h & 0x7FFFFFFF) % partitions


def test_the_cloudevents_sdk_decodes_every_message_with_payload_unchanged(
    settings: Settings,
) -> None:
    stream = unique("Order")
    with EventStore(settings) as store:
        result = store.append(
            stream,
            [
                NewEvent(
                    type="OrderPlaced",
                    data={"total": 12, "note": "ünïcode"},
                    metadata={"correlation_id": "c-1", "causation_id": "k-9", "tenant": "t"},
                ),
                NewEvent(type="Blob", data=b"\x00\xffraw", content_type="application/x-raw"),
            ],
        )
    messages = read_topic(settings)
    assert [m.event_id for m in messages] == [e.id for e in result.events]
    for message, position in zip(messages, result.events, strict=True):
        raw = _raw_headers(settings, position.offset, position.partition)
        cloud = from_binary_event(
            KafkaMessage(headers=raw, key=stream.encode(), value=message.value)
        )
        attributes = cloud.get_attributes()
        assert cloud.get_id() == str(position.id)
        assert cloud.get_source() == settings.source
        assert attributes["specversion"] == "1.0"
        assert attributes["subject"] == stream
        assert attributes["streamversion"] == str(position.version)
        assert attributes["pgwrite"] == str(result.write_id)
        assert int(attributes["pgxid"]) > 0
        assert attributes["pgsysid"].isdigit()
        assert attributes["partitionkey"] == stream
    first, second = messages
    assert first.value == b'{"total":12,"note":"\xc3\xbcn\xc3\xafcode"}'
    assert first.metadata == {"correlation_id": "c-1", "causation_id": "k-9", "tenant": "t"}
    assert second.value == b"\x00\xffraw" and second.content_type == "application/x-raw"


def _raw_headers(settings: Settings, offset: int, partition: int) -> dict[str, bytes]:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": settings.kafka, "group.id": unique("raw")})
    try:
        consumer.assign([TopicPartition(settings.topic, partition, offset)])
        msg = consumer.poll(20)
        assert msg is not None and msg.error() is None
        return {k: v for k, v in (msg.headers() or []) if v is not None}
    finally:
        consumer.close()


def test_every_header_name_is_a_valid_cloudevents_extension_name(settings: Settings) -> None:
    with EventStore(settings) as store:
        position = store.append(
            unique("Order"), [NewEvent(type="A", data={}, metadata={"traceparent": "00-ab-cd-01"})]
        ).events[0]
    names = _raw_headers(settings, position.offset, position.partition)
    extensions = [n[3:] for n in names if n.startswith("ce_")]
    assert "traceparent" in extensions and "metadata" in extensions
    assert all(n.isalnum() and n.islower() for n in extensions)
    assert names["content-type"] == b"application/json"


def test_a_stream_lands_on_the_partition_java_clients_compute(make_settings: object) -> None:
    settings = make_settings(partitions=7)  # type: ignore[operator]
    streams = [unique("Order") for _ in range(20)] + ["a", "ab", "abc", "abcd", "ünï"]
    with EventStore(settings) as store:
        landed = {
            s: store.append(s, [NewEvent(type="A", data={})]).events[0].partition for s in streams
        }
    assert landed == {s: java_murmur2_partition(s.encode(), 7) for s in streams}
