"""Static group membership: a stable ``group.instance.id`` per live member, claimed in PostgreSQL.

Why: with Kafka's default (dynamic) membership a member that dies without leaving the group (a
SIGKILL, an OOM kill, a lost machine) keeps its partitions until its session times out
(``session.timeout.ms``, 45 s by default), so a restarted indexer or subscription waits those
45 s before it gets anything. A *static* member (KIP-345) that comes back with the same
``group.instance.id`` takes over its previous assignment at once, without a rebalance.

Which identity: ``<group>#<slot>``, where the slot is the lowest number whose PostgreSQL advisory
lock (session level, on the loop's own connection) this process could take. So:

- a restarted process (one per group) gets slot 0 again: its old identity, its partitions;
- two processes of a group (two indexers, a subscription run by several processes, the workers
  of one host or of several) hold slots 0 and 1: distinct identities, never the same one at once;
- a process killed with SIGKILL loses its PostgreSQL session at once (the kernel closes the
  socket), so its slot is free for the process that replaces it, on this host or another.

Two live processes cannot claim the same slot while PostgreSQL holds the first one's lock. If
they still end up with one id (a ``group.instance.id`` set by hand twice, or a lock lost with a
network partition), Kafka fences the older member: its consumer reports a fatal error, the loop
raises Unavailable, and its owner (the indexer's or the subscription's restart loop) starts a
new loop, which claims a free slot.

The price of static membership: a member that *stops* (SIGTERM, Ctrl-C) does not leave the group
either (librdkafka sends no LeaveGroup for static members), so when an instance is removed for
good, the others take over its partitions after ``session.timeout.ms``. A restart (the same
slot comes back) resumes at once. A ``group.instance.id`` in ``consumer_config`` or
``KAFKASTORE_EXTRA_KAFKA`` is used as given (no slot is claimed).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psycopg

from kafkastore import pg
from kafkastore.config import Settings
from kafkastore.errors import ConfigurationError

INSTANCE_ID = "group.instance.id"

MAX_SLOTS = 1024
"""More live members than this in one group is a configuration error (Kafka would not cope)."""

TRY_CLAIM = "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))"
"""Take the session-level advisory lock of one slot; false when another session holds it."""


def lock_name(group: str, slot: int) -> str:
    """The text whose hash is the advisory lock of ``slot`` in ``group``."""
    return f"kafkastore group member {group}#{slot}"


def instance_id(group: str, slot: int) -> str:
    """The ``group.instance.id`` of ``slot``."""
    return f"{group}#{slot}"


def claim_slot(conn: psycopg.Connection, group: str) -> int:
    """The lowest free slot of ``group``, locked for the life of ``conn``'s session."""
    for slot in range(MAX_SLOTS):
        with pg.translated():
            row = conn.execute(TRY_CLAIM, (lock_name(group, slot),)).fetchone()
        if row is not None and row[0]:
            return slot
    raise ConfigurationError(f"group {group!r} has {MAX_SLOTS} live members already")


def consumer_config(
    conn: psycopg.Connection, settings: Settings, group: str, config: Mapping[str, Any]
) -> dict[str, Any]:
    """``config`` with a ``group.instance.id`` claimed on ``conn`` (unless one is set)."""
    if config.get(INSTANCE_ID) or settings.extra_kafka.get(INSTANCE_ID):
        return dict(config)
    return {**config, INSTANCE_ID: instance_id(group, claim_slot(conn, group))}


def incremental(settings: Settings, config: Mapping[str, Any]) -> bool:
    """Whether assignments change incrementally (cooperative-sticky, or the KIP-848 protocol):
    the rebalance callbacks must then call ``incremental_assign``/``incremental_unassign``."""
    effective = {**settings.extra_kafka, **config}
    return (
        effective.get("partition.assignment.strategy") == "cooperative-sticky"
        or effective.get("group.protocol") == "consumer"
    )
