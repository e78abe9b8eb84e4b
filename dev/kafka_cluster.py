"""Several KRaft combined nodes (broker + controller each) on this machine: the replicated Kafka
users run (three nodes, the events topic at RF=3 with ``min.insync.replicas=2``).

Each node lives in ``home/node-<id>/`` (its ``server.properties`` and log directory), all
formatted with one cluster id and voting in one controller quorum; heaps are small
(``-Xmx256m``: three nodes take ~400 MiB each under load). The internal topics get RF=3 and
min ISR 2 too, so the loss of one node is what a user's cluster sees. Nodes can be killed and
restarted one by one (:meth:`KafkaCluster.kill`, :meth:`KafkaCluster.restart`) for fault tests.

``listeners`` gives each node more client listeners, each advertised at a port of the caller's
choice (:class:`dev.kafka.Listener`): the fault tests put a toxiproxy proxy in front of each and
advertise the proxy, per client role (the writer's, the readers'), while the nodes replicate over
their own PLAINTEXT listener, which no fault touches.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from dev import kafka
from dev.process import LOCALHOST, StackError, free_port, terminate

HEAP = ("-Xmx256m", "-Xms128m")
# The log cleaner allocates its dedupe buffer on the heap when the node starts, 128 MiB by
# default: with a 256 MiB heap that sometimes ends a node at start with OutOfMemoryError. Only
# the internal topics are compacted here (the events topic never is), so 16 MiB is plenty.
SMALL_HEAP_PROPERTIES = f"log.cleaner.dedupe.buffer.size={16 * 1024 * 1024}\n"


@dataclass(slots=True)
class Node:
    """One node of the cluster (its process may be down)."""

    node_id: int
    port: int
    controller_port: int
    home: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    listeners: tuple[kafka.Listener, ...] = ()
    """Client listeners beside PLAINTEXT (advertised at other ports)."""

    @property
    def bootstrap(self) -> str:
        return f"{LOCALHOST}:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass(slots=True)
class KafkaCluster:
    """Nodes started by :func:`start`; :meth:`stop` stops every one still running."""

    home: Path
    nodes: list[Node] = field(default_factory=list)
    libs: Path | None = None

    @property
    def bootstrap(self) -> str:
        return ",".join(n.bootstrap for n in self.nodes)

    def bootstrap_of(self, listener: str) -> str:
        """The advertised addresses of client listener ``listener`` on every node."""
        return ",".join(
            f"{LOCALHOST}:{x.advertised_port}"
            for n in self.nodes
            for x in n.listeners
            if x.name == listener
        )

    def node(self, node_id: int) -> Node:
        return next(n for n in self.nodes if n.node_id == node_id)

    def kill(self, node_id: int) -> None:
        """SIGKILL one node (no controlled shutdown: what a crash or an OOM kill does)."""
        node = self.node(node_id)
        if node.proc is not None and node.running:
            node.proc.send_signal(signal.SIGKILL)
            node.proc.wait(30)

    def restart(self, node_id: int, *, timeout: float = 90.0) -> None:
        """Start a node that was killed or stopped again, on the same ports and data."""
        node = self.node(node_id)
        if node.running:
            return
        node.proc = _launch(node, self._libs())
        kafka.wait_ready(node.bootstrap, timeout=timeout, proc=node.proc, log_path=node.log_path)

    def stop(self) -> None:
        """SIGTERM every running node at once (one by one, the last ones would wait for a
        controller quorum that is already gone), SIGKILL after 30 s."""
        running = [n.proc for n in self.nodes if n.proc is not None and n.running]
        with ThreadPoolExecutor(max(1, len(running))) as pool:
            for done in [pool.submit(terminate, p.pid, proc=p, timeout=30.0) for p in running]:
                done.result()

    def _libs(self) -> Path:
        if self.libs is None:
            self.libs = kafka.resolve_jars()
        return self.libs


def start(
    home: Path,
    *,
    nodes: int = 3,
    timeout: float = 120.0,
    libs: Path | None = None,
    listeners: Callable[[int], Sequence[kafka.Listener]] | None = None,
) -> KafkaCluster:
    """Format (first use only) and start ``nodes`` combined nodes; return once each answers.
    ``listeners(node_id)``: that node's extra client listeners (called before it starts)."""
    cluster = KafkaCluster(home=home, libs=libs or kafka.resolve_jars())
    ports = [(free_port(), free_port()) for _ in range(nodes)]
    voters = ",".join(f"{i + 1}@{LOCALHOST}:{cport}" for i, (_p, cport) in enumerate(ports))
    cluster_id = kafka.new_cluster_id()
    for i, (port, cport) in enumerate(ports):
        node_home = home / f"node-{i + 1}"
        node_home.mkdir(parents=True, exist_ok=True)
        extra = tuple(listeners(i + 1)) if listeners is not None else ()
        node = Node(i + 1, port, cport, node_home, node_home / "kafka.log", listeners=extra)
        (node_home / "server.properties").write_text(
            kafka.server_properties(
                port=port,
                controller_port=cport,
                data_dir=node_home / "data",
                node_id=node.node_id,
                voters=voters,
                replicas=min(3, nodes),
                listeners=extra,
            )
            + SMALL_HEAP_PROPERTIES
        )
        _format(node, cluster_id, cluster._libs())
        cluster.nodes.append(node)
    try:
        # All at once: a quorum of controllers is needed before any of them answers.
        for node in cluster.nodes:
            node.proc = _launch(node, cluster._libs())
        with ThreadPoolExecutor(nodes) as pool:
            waits = [
                pool.submit(
                    kafka.wait_ready,
                    n.bootstrap,
                    timeout=timeout,
                    proc=n.proc,
                    log_path=n.log_path,
                )
                for n in cluster.nodes
            ]
            for w in waits:
                w.result()
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _format(node: Node, cluster_id: str, libs: Path) -> None:
    if (node.home / "data" / "meta.properties").is_file():
        return
    cmd = [
        kafka.java_command(),
        "-cp",
        str(libs / "*"),
        f"-Dlog4j2.configurationFile={kafka.LOG4J2_CONFIG}",
        "kafka.tools.StorageTool",
        "format",
        f"--cluster-id={cluster_id}",
        "-c",
        str(node.home / "server.properties"),
    ]
    with node.log_path.open("ab") as out:
        if subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False).returncode:
            raise StackError(f"formatting Kafka node {node.node_id} failed", log=node.log_path)


def _launch(node: Node, libs: Path) -> subprocess.Popen[bytes]:
    cmd = [
        kafka.java_command(),
        *HEAP,
        f"-Dlog4j2.configurationFile={kafka.LOG4J2_CONFIG}",
        f"-Dkafka.logs.dir={node.home}",
        "-cp",
        str(libs / "*"),
        "kafka.Kafka",
        str(node.home / "server.properties"),
    ]
    with node.log_path.open("ab") as out:
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=node.home,
            start_new_session=True,
        )
