"""A single-node Apache Kafka broker (KRaft, combined broker + controller) for dev and tests.

The broker's jars come from Maven Central through ``mvn`` (``dev/kafka/pom.xml``), cached under
``.kafkastore/cache/kafka-<version>/libs``; nothing is downloaded from anywhere else. The broker
runs as ``java kafka.Kafka server.properties`` with a 512 MiB heap. Readiness is a real metadata
request, stop is SIGTERM (the broker's controlled shutdown) with SIGKILL as the last resort.
:mod:`dev.kafka_cluster` runs several such nodes as one KRaft quorum (`kafkastore dev --brokers 3`).

Why this module is longer than ~400 lines: it is one broker's whole life - jars,
``server.properties`` (plain, or SASL/SCRAM with ACLs), start, readiness, stop - and the
secured configuration is a variant of the same properties, not a separate concern.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dev.process import LOCALHOST, StackError, free_port, port_accepts, state_dir, tail, terminate
from kafkastore.config import Settings
from kafkastore.errors import Unavailable
from kafkastore.kafka import admin, check_reachable, translated
from kafkastore.retry import Backoff

log = logging.getLogger("dev.kafka")

POM = Path(__file__).resolve().parent / "kafka" / "pom.xml"
LOG4J2_CONFIG = Path(__file__).resolve().parent / "kafka" / "log4j2.properties"
HEAP = ("-Xmx512m", "-Xms256m")
MIN_JAVA = 17


@dataclass(frozen=True, slots=True)
class KafkaBroker:
    """A running broker."""

    pid: int
    port: int
    """The listener clients connect to (SASL_PLAINTEXT on a secured broker)."""
    controller_port: int
    home: Path
    """Holds ``server.properties`` and the log directory."""
    log_path: Path

    @property
    def bootstrap(self) -> str:
        return f"{LOCALHOST}:{self.port}"


def kafka_version() -> str:
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    node = ET.parse(POM).getroot().find("m:properties/m:kafka.version", ns)
    if node is None or not node.text:
        raise StackError(f"{POM} has no kafka.version property")
    return node.text.strip()


def resolve_jars(*, cache: Path | None = None, log_path: Path | None = None) -> Path:
    """The ``libs`` directory with the broker's runtime jars, resolved by Maven once.

    A stamp holds the pom's hash: editing the pom re-resolves. Jars are synced into ``libs``
    (new ones copied, stale ones removed) rather than the directory swapped, because a broker
    already running from it keeps its classpath by path.
    """
    cache = cache or state_dir() / "cache"
    home = cache / f"kafka-{kafka_version()}"
    libs, stamp = home / "libs", home / "libs.sha256"
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()
    if libs.is_dir() and stamp.is_file() and stamp.read_text().strip() == digest:
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError("Maven (mvn) is required to fetch the Kafka broker: apt-get install maven")
    home.mkdir(parents=True, exist_ok=True)
    log_path = log_path or state_dir() / "logs" / "mvn.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=home) as tmp, log_path.open("ab") as out:
        cmd = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(POM),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={tmp}",
            "-DincludeScope=runtime",
        ]
        if subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False).returncode:
            raise StackError("mvn could not resolve the Kafka broker jars", log=log_path)
        libs.mkdir(exist_ok=True)
        fresh = {p.name for p in Path(tmp).glob("*.jar")}
        for name in fresh:
            if not (libs / name).exists():
                shutil.copy2(Path(tmp) / name, libs / name)
        for stale in libs.glob("*.jar"):
            if stale.name not in fresh:
                stale.unlink()
    stamp.write_text(digest + "\n")
    return libs


def java_command() -> str:
    java = shutil.which("java")
    if java is None:
        raise StackError(
            f"Java {MIN_JAVA}+ is required for the Kafka broker: apt-get install "
            "openjdk-17-jre-headless"
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    major = int(match.group(1)) if match else 0
    if major == 1 and match and match.group(2):  # "1.8.0" style
        major = int(match.group(2))
    if major < MIN_JAVA:
        raise StackError(f"Java {MIN_JAVA}+ is required for Kafka 4, found: {out.splitlines()[:1]}")
    return java


def new_cluster_id() -> str:
    """A KRaft cluster id: a UUID as 22 characters of base64url (what ``kafka-storage random-uuid``
    prints); ids starting with '-' are rejected because the tool would read them as an option."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


@dataclass(frozen=True, slots=True)
class Listener:
    """A client listener beside PLAINTEXT: the broker binds ``port`` and tells clients that
    connected to it to reach it at ``advertised_port`` - a proxy's port in the fault tests, so
    that clients never go around the proxy (metadata answers name the advertised address)."""

    name: str
    port: int
    advertised_port: int


SCRAM = "SCRAM-SHA-256"
AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"


@dataclass(frozen=True, slots=True)
class Sasl:
    """SCRAM-SHA-256 principals of a secured broker: a super user (topic creation, ACLs), the
    writer (the only principal that may produce to the events topic) and the consumer (the
    indexer, subscriptions and the API's reads)."""

    admin_password: str
    writer_password: str
    consumer_password: str
    admin: str = "admin"
    writer: str = "writer"
    consumer: str = "consumer"

    @classmethod
    def generate(cls) -> Sasl:
        return cls(*(secrets.token_urlsafe(18) for _ in range(3)))

    def client(self, who: str) -> dict[str, str]:
        """librdkafka settings that log in as ``who`` (admin, writer or consumer)."""
        user = {"admin": self.admin, "writer": self.writer, "consumer": self.consumer}[who]
        password = {
            "admin": self.admin_password,
            "writer": self.writer_password,
            "consumer": self.consumer_password,
        }[who]
        return {
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": SCRAM,
            "sasl.username": user,
            "sasl.password": password,
        }

    def scram_arguments(self) -> list[str]:
        """``kafka-storage format --add-scram`` arguments: the credentials exist from the start."""
        return [
            arg
            for user, password in (
                (self.admin, self.admin_password),
                (self.writer, self.writer_password),
                (self.consumer, self.consumer_password),
            )
            for arg in ("--add-scram", f"{SCRAM}=[name={user},password={password}]")
        ]


def _sasl_properties(port: int, controller_port: int, sasl: Sasl) -> dict[str, str]:
    """The secured listeners. Clients log in with SCRAM. The controller listener, which admin
    clients may reach directly (``bootstrap.controllers``, KIP-919) to create ACLs or change topic
    configurations, takes SASL/PLAIN with one static user, the admin, with the admin's password
    (a KRaft controller listener cannot use SCRAM: its credentials live in the metadata log the
    controller serves); the broker half of the node logs in to it so too. No principal is
    ANONYMOUS, so none but the admin is a super user."""
    scram = (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{sasl.admin}" password="{sasl.admin_password}";'
    )
    plain = (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'username="{sasl.admin}" password="{sasl.admin_password}" '
        f'user_{sasl.admin}="{sasl.admin_password}";'
    )
    return {
        "listeners": f"SASL_PLAINTEXT://{LOCALHOST}:{port},CONTROLLER://{LOCALHOST}:{controller_port}",
        "advertised.listeners": f"SASL_PLAINTEXT://{LOCALHOST}:{port}",
        "listener.security.protocol.map": "CONTROLLER:SASL_PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
        "inter.broker.listener.name": "SASL_PLAINTEXT",
        "sasl.enabled.mechanisms": SCRAM,
        "sasl.mechanism.inter.broker.protocol": SCRAM,
        f"listener.name.sasl_plaintext.{SCRAM.lower()}.sasl.jaas.config": scram,
        "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
        "sasl.mechanism.controller.protocol": "PLAIN",
        "listener.name.controller.plain.sasl.jaas.config": plain,
        "authorizer.class.name": AUTHORIZER,
        "super.users": f"User:{sasl.admin}",
        "allow.everyone.if.no.acl.found": "false",
    }


def server_properties(
    *,
    port: int,
    controller_port: int,
    data_dir: Path,
    node_id: int = 1,
    voters: str | None = None,
    replicas: int = 1,
    sasl: Sasl | None = None,
    listeners: tuple[Listener, ...] = (),
) -> str:
    """One KRaft combined node's configuration; ``voters`` (``id@host:port,...``) and
    ``replicas`` (of the internal topics; min ISR is ``replicas - 1``, at least 1) for a
    cluster of several nodes (:mod:`dev.kafka_cluster`); ``sasl``: a SCRAM client listener, a
    controller listener that takes only the admin, and ACLs (one node only); ``listeners``: more
    PLAINTEXT client listeners, each advertised at its own (proxy) port, while brokers replicate
    over the PLAINTEXT listener, advertised as itself."""
    names = [listener.name for listener in listeners]
    if {"PLAINTEXT", "CONTROLLER"} & set(names) or len(set(names)) != len(names):
        raise StackError(f"listener names must be unique and not PLAINTEXT/CONTROLLER: {names}")
    min_isr = str(max(1, replicas - 1))
    settings = {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        "controller.quorum.voters": voters or f"{node_id}@{LOCALHOST}:{controller_port}",
        "listeners": f"PLAINTEXT://{LOCALHOST}:{port},CONTROLLER://{LOCALHOST}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{LOCALHOST}:{port}",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(data_dir),
        # Internal topics cannot have more replicas than brokers.
        "offsets.topic.replication.factor": str(replicas),
        "transaction.state.log.replication.factor": str(replicas),
        "transaction.state.log.min.isr": min_isr,
        "share.coordinator.state.topic.replication.factor": str(replicas),
        "share.coordinator.state.topic.min.isr": min_isr,
        # Tests create many short-lived groups; waiting 3 s for more members only slows them.
        "group.initial.rebalance.delay.ms": "0",
        # The events topic is made by `kafkastore topic create` with its checked configuration
        # (docs/design.md section 3); a typo'd name must fail rather than create a default topic.
        "auto.create.topics.enable": "false",
        "num.partitions": "1",
    }
    if listeners:
        bound = [f"{x.name}://{LOCALHOST}:{x.port}" for x in listeners]
        advertised = [f"{x.name}://{LOCALHOST}:{x.advertised_port}" for x in listeners]
        settings["listeners"] = ",".join([settings["listeners"], *bound])
        settings["advertised.listeners"] = ",".join([settings["advertised.listeners"], *advertised])
        settings["listener.security.protocol.map"] += "".join(
            f",{x.name}:PLAINTEXT" for x in listeners
        )
    if sasl is not None:
        settings.update(_sasl_properties(port, controller_port, sasl))
    return "".join(f"{k}={v}\n" for k, v in settings.items())


def start(
    home: Path,
    *,
    port: int | None = None,
    log_path: Path | None = None,
    timeout: float = 90.0,
    libs: Path | None = None,
    sasl: Sasl | None = None,
) -> tuple[KafkaBroker, subprocess.Popen[bytes]]:
    """Start a broker whose config and data live in ``home``; return once it answers metadata.

    Storage is formatted on first use only, so the events of a dev stack survive restarts. The
    process gets its own session: a Ctrl-C in the terminal reaches ``kafkastore dev`` alone, which
    then stops services in order.
    """
    libs = libs or resolve_jars()
    java = java_command()
    port = port if port is not None else free_port()
    controller_port = free_port()
    data_dir = home / "data"
    home.mkdir(parents=True, exist_ok=True)
    config = home / "server.properties"
    config.touch(mode=0o600)  # a secured broker's holds the admin's password
    config.chmod(0o600)
    config.write_text(
        server_properties(port=port, controller_port=controller_port, data_dir=data_dir, sasl=sasl)
    )
    log_path = log_path or home / "kafka.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    classpath = str(libs / "*")
    if not (data_dir / "meta.properties").is_file():
        fmt = [
            java,
            "-cp",
            classpath,
            f"-Dlog4j2.configurationFile={LOG4J2_CONFIG}",
            "kafka.tools.StorageTool",
            "format",
            f"--cluster-id={new_cluster_id()}",
            "-c",
            str(config),
            *(sasl.scram_arguments() if sasl else []),
        ]
        with log_path.open("ab") as out:
            if subprocess.run(fmt, stdout=out, stderr=subprocess.STDOUT, check=False).returncode:
                raise StackError("formatting Kafka storage failed", log=log_path)
    cmd = [
        java,
        *HEAP,
        f"-Dlog4j2.configurationFile={LOG4J2_CONFIG}",
        f"-Dkafka.logs.dir={log_path.parent}",
        "-cp",
        classpath,
        "kafka.Kafka",
        str(config),
    ]
    with log_path.open("ab") as out:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=home,
            start_new_session=True,
        )
    broker = KafkaBroker(
        pid=proc.pid, port=port, controller_port=controller_port, home=home, log_path=log_path
    )
    try:
        wait_ready(
            broker.bootstrap,
            timeout=timeout,
            proc=proc,
            log_path=log_path,
            extra=sasl.client("admin") if sasl else None,
        )
    except BaseException:
        terminate(proc.pid, proc=proc, timeout=10.0)
        raise
    return broker, proc


def wait_ready(
    bootstrap: str,
    *,
    timeout: float,
    proc: subprocess.Popen[bytes] | None = None,
    log_path: Path | None = None,
    extra: dict[str, str] | None = None,
) -> None:
    """Return once a metadata request names at least one broker (``extra``: SASL login)."""
    host, _, port = bootstrap.rpartition(":")
    deadline = time.monotonic() + timeout
    # Wait for the socket first: librdkafka logs every refused connection to stderr.
    for _ in Backoff(initial=0.1, maximum=0.1).attempts(timeout=timeout):
        if port_accepts(int(port), host):
            break
        _check_running(proc, log_path)
    else:
        raise StackError(f"Kafka did not listen on {bootstrap} within {timeout:.0f}s", log=log_path)
    # Only the address: a local broker speaks PLAINTEXT, whatever KAFKASTORE_EXTRA_KAFKA says.
    settings = Settings(kafka=bootstrap, extra_kafka=extra or {})
    for _ in Backoff(initial=0.2, maximum=0.2).attempts(timeout=deadline - time.monotonic()):
        try:
            if check_reachable(settings, timeout=2.0):
                return
        except Unavailable as exc:  # while the broker finishes starting
            log.debug("metadata request failed: %s", exc.message)
        _check_running(proc, log_path)
    raise StackError(
        f"Kafka at {bootstrap} did not answer metadata within {timeout:.0f}s\n{tail(log_path)}",
        log=log_path,
    )


def _check_running(proc: subprocess.Popen[bytes] | None, log_path: Path | None) -> None:
    if proc is not None and proc.poll() is not None:
        raise StackError(f"the Kafka broker exited with {proc.returncode}", log=log_path)


def stop(pid: int, *, proc: subprocess.Popen[bytes] | None = None, timeout: float = 30.0) -> None:
    """SIGTERM: the broker's controlled shutdown flushes and closes its logs; SIGKILL after
    ``timeout`` (a single node has no one to hand leadership to, so this is quick)."""
    terminate(pid, proc=proc, timeout=timeout)


def main(argv: list[str] | None = None) -> int:
    """``python -m dev.kafka resolve`` (``make install``): fetch the broker jars once."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m dev.kafka")
    parser.add_argument("action", choices=["resolve"])
    parser.parse_args(argv)
    try:
        print(resolve_jars())
    except StackError as exc:
        print(f"dev.kafka: {exc.message}\n{tail(exc.log)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())


def grant_store_acls(settings: Settings, sasl: Sasl, *, topic: str, timeout: float = 30.0) -> None:
    """ACLs of the store on a secured broker (``settings`` log in as the admin): only the writer
    may produce to ``topic``; the consumer may read it and use any consumer group.

    Returns once the broker authorises with them (DescribeAcls answers from its authorizer):
    CreateAcls answers when the controller has committed them, the broker applies them a little
    later (up to half a second on a loaded machine), and a produce in between is refused."""
    from confluent_kafka.admin import (  # type: ignore[attr-defined]
        AclBinding,
        AclBindingFilter,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    def allow(who: str, kind: ResourceType, name: str, op: AclOperation) -> AclBinding:
        return AclBinding(
            kind,
            name,
            ResourcePatternType.LITERAL,
            f"User:{who}",
            "*",
            op,
            AclPermissionType.ALLOW,
        )

    bindings = [
        allow(sasl.writer, ResourceType.TOPIC, topic, AclOperation.WRITE),
        allow(sasl.writer, ResourceType.TOPIC, topic, AclOperation.DESCRIBE),
        allow(sasl.consumer, ResourceType.TOPIC, topic, AclOperation.READ),
        allow(sasl.consumer, ResourceType.TOPIC, topic, AclOperation.DESCRIBE),
        allow(sasl.consumer, ResourceType.TOPIC, topic, AclOperation.DESCRIBE_CONFIGS),
        allow(sasl.consumer, ResourceType.GROUP, "*", AclOperation.READ),
        allow(sasl.consumer, ResourceType.GROUP, "*", AclOperation.DESCRIBE),
    ]
    wildcard: Any = None  # what a filter's name, principal or host takes for "any"
    everything = AclBindingFilter(
        ResourceType.ANY,
        wildcard,
        ResourcePatternType.ANY,
        wildcard,
        wildcard,
        AclOperation.ANY,
        AclPermissionType.ANY,
    )
    client = admin(settings)  # referenced until the futures resolve
    with translated():
        for future in client.create_acls(bindings).values():
            future.result(timeout=timeout)
        for _ in Backoff(initial=0.02, maximum=0.2).attempts(timeout=timeout):
            if set(bindings) <= set(client.describe_acls(everything).result(timeout=timeout)):
                return
    raise StackError(f"the broker did not apply the store's ACLs within {timeout:.0f}s")
