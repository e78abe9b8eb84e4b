"""A broker that authenticates (SASL/SCRAM-SHA-256) and authorises (StandardAuthorizer): only the
writer's principal may produce to the events topic; the store keeps working; a forged message
with a stolen header set never reaches a read; its controller listener, which admin clients may
reach directly (KIP-919), takes no request without a login (docs/design.md section 13)."""

from __future__ import annotations

import socket
import struct
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
)

from dev import kafka as dev_kafka
from dev.process import LOCALHOST
from indexer.reads import Reads
from kafkastore import kafka, topic
from kafkastore.client import EventStore
from kafkastore.config import Settings
from kafkastore.records import NewEvent
from tests.indexer.helpers import running_indexer
from tests.support import unique
from tests.support.services import session_workdir


@dataclass(frozen=True)
class Secured:
    settings: Settings
    """The store's: the consumer principal for every client, the writer's for its producer."""
    sasl: dev_kafka.Sasl
    controller_port: int
    admin: Settings
    """The admin's login (a super user) on the client listener."""


@pytest.fixture(scope="module")
def secured(database_url: str) -> Iterator[Secured]:
    sasl = dev_kafka.Sasl.generate()
    home = session_workdir() / f"kafka-sasl-{uuid.uuid4().hex[:8]}"
    broker, proc = dev_kafka.start(home, log_path=home / "kafka.log", timeout=120.0, sasl=sasl)
    try:
        base = {"kafka": broker.bootstrap, "database_url": database_url, "partitions": 3}
        admin = Settings.from_env(
            {}, topic=unique("test"), extra_kafka=sasl.client("admin"), **base
        )
        topic.ensure_topic(admin, partitions=3)
        dev_kafka.grant_store_acls(admin, sasl, topic=admin.topic)
        settings = admin.replace(
            extra_kafka=sasl.client("consumer"),
            writer_kafka=sasl.client("writer"),
            indexer_group=unique("indexer"),
        )
        yield Secured(settings, sasl, broker.controller_port, admin)
    finally:
        dev_kafka.stop(broker.pid, proc=proc)


def _produce(
    settings: Settings, who: dict[str, str], headers: list[tuple[str, bytes]]
) -> KafkaError | None:
    """Produce one message as ``who``; the error the broker answered, or None when stored."""
    errors: list[KafkaError | None] = []
    producer: Producer = kafka.producer(
        settings.replace(extra_kafka=who), error_cb=errors.append, **{"linger.ms": 0}
    )

    def report(err: KafkaError | None, msg: Message) -> None:
        errors.append(err)

    producer.produce(settings.topic, key=b"k", value=b"{}", headers=headers, on_delivery=report)
    try:
        producer.flush(30)
    except (KafkaException, SystemError) as exc:  # a fatal error surfaces from the callback
        cause = exc if isinstance(exc, KafkaException) else exc.__cause__
        if isinstance(cause, KafkaException) and isinstance(cause.args[0], KafkaError):
            return cause.args[0]
        raise
    finally:
        # Now, not when collected: a refused producer kept alive past the module's broker
        # logs "Connection refused" for the rest of the session.
        producer.close()
    return (
        next((e for e in errors if e is not None), None)
        if errors
        else KafkaError(KafkaError._TIMED_OUT)
    )


REFUSED = {KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED}


def test_the_consumer_principal_may_not_produce_and_the_writer_principal_may(
    secured: Secured,
) -> None:
    refused = _produce(secured.settings, secured.sasl.client("consumer"), [])
    accepted = _produce(secured.settings, secured.sasl.client("writer"), [])

    assert refused is not None
    # Refused before any message: the broker will not even give it an idempotent producer id.
    assert refused.code() in REFUSED or (refused.fatal() and "authorization" in refused.str())
    assert accepted is None


def test_the_store_appends_and_reads_with_the_writer_and_consumer_principals(
    secured: Secured,
) -> None:
    stream = unique("Secure")
    _produce(secured.settings, secured.sasl.client("consumer"), [])  # refused, changes nothing
    with running_indexer(secured.settings), EventStore(secured.settings).open() as store:
        result = store.append(stream, [NewEvent(type="Checked", data={"n": 1})])
        with Reads.open(secured.settings) as reads:
            page = reads.read_stream(stream, min_version=1, timeout=20)

    assert result.to_version == 1
    assert [e.data for e in page.events] == [{"n": 1}]


def test_a_forged_message_with_a_stolen_header_set_is_never_read(secured: Secured) -> None:
    stream = unique("Forged")
    with running_indexer(secured.settings), EventStore(secured.settings).open() as store:
        store.append(stream, [NewEvent(type="Real", data={"real": True})])
        with Reads.open(secured.settings) as reads:
            real = reads.read_stream(stream, min_version=1, timeout=20).events[0]
        stolen = _stolen_headers(secured, stream)
        forged_id = [(k, str(uuid.uuid4()).encode() if k == "ce_id" else v) for k, v in stolen]
        forged_next = [(k, b"2" if k == "ce_streamversion" else v) for k, v in forged_id]
        # Produced with the writer's own credentials: whatever the broker lets through.
        for headers in (stolen, forged_id, forged_next):
            assert _produce(secured.settings, secured.sasl.client("writer"), headers) is None
        store.append(stream, [NewEvent(type="After", data={})])
        with Reads.open(secured.settings) as reads:
            page = reads.read_stream(stream, min_version=2, timeout=20)

    assert [(e.version, e.type, e.data) for e in page.events] == [
        (1, "Real", {"real": True}),
        (2, "After", {}),
    ]
    assert page.events[0].id == real.id


def _stolen_headers(secured: Secured, stream: str) -> list[tuple[str, bytes]]:
    """The headers of the stream's first message, read from the topic with the consumer login."""
    consumer = kafka.consumer(secured.settings, unique("thief"))
    consumer.subscribe([secured.settings.topic])
    try:
        for _ in range(60):
            msg = consumer.poll(1.0)
            if msg is None or msg.error():
                continue
            headers = [(k, bytes(v)) for k, v in (msg.headers() or [])]
            if (msg.key() or b"").decode() == stream:
                return headers
    finally:
        consumer.close()
    raise AssertionError("the real message was not found")


# The test below tries to take the broker over through its controller listener. Were it to
# succeed, the fixture's broker would be changed for good: it comes last in this module.


def test_no_login_on_the_controller_port_cannot_grant_the_consumer_write(secured: Secured) -> None:
    topic_name = secured.settings.topic
    answer = _create_acl_without_login(secured.controller_port, topic_name, "User:consumer")
    granted = _write_acls(secured.admin, topic_name, "User:consumer")
    refused = _produce(secured.settings, secured.sasl.client("consumer"), [])

    assert answer is None  # the controller closed the connection rather than answer
    assert granted == []
    assert refused is not None


def _create_acl_without_login(port: int, topic_name: str, principal: str) -> int | None:
    """What any local process can send: CreateAcls (version 1) allowing ``principal`` to write
    ``topic_name``, to the controller listener, with no SASL handshake. The answer's error code
    (0: created), or None when the controller closed the connection instead of answering."""

    def string(text: str) -> bytes:
        return struct.pack(">h", len(text)) + text.encode()

    # confluent-kafka's enums carry the protocol's codes.
    creation = (
        struct.pack(">b", ResourceType.TOPIC.value)
        + string(topic_name)
        + struct.pack(">b", ResourcePatternType.LITERAL.value)
        + string(principal)
        + string("*")
        + struct.pack(">bb", AclOperation.WRITE.value, AclPermissionType.ALLOW.value)
    )
    create_acls, version, correlation = 30, 1, 1
    header = struct.pack(">hhi", create_acls, version, correlation) + string("no-login")
    request = header + struct.pack(">i", 1) + creation
    with socket.create_connection((LOCALHOST, port), timeout=30) as sock:
        sock.sendall(struct.pack(">i", len(request)) + request)
        answer = b""
        while len(answer) < 4 or len(answer) < 4 + struct.unpack(">i", answer[:4])[0]:
            chunk = sock.recv(65536)
            if not chunk:
                return None
            answer += chunk
    # size, correlation id, throttle time, then the results: [error code, error message]
    count, error = struct.unpack(">ih", answer[12:18])
    assert count == 1
    return int(error)


def _write_acls(admin: Settings, topic_name: str, principal: str) -> list[object]:
    """The broker's ACLs that allow ``principal`` to write ``topic_name`` (asked as the admin)."""
    wanted = AclBindingFilter(
        ResourceType.TOPIC,
        topic_name,
        ResourcePatternType.LITERAL,
        principal,
        None,
        AclOperation.WRITE,
        AclPermissionType.ALLOW,
    )
    client = kafka.admin(admin)  # referenced until the future resolves
    return list(client.describe_acls(wanted).result(timeout=30))
