"""Which partitions of the topic the indexer's consumer group owns, seen from another process.

The HTTP API (``kafkastore serve``) does not run the indexer; ``/readyz`` asks Kafka instead
(``DescribeConsumerGroups`` on ``settings.indexer_group``). A group whose members own fewer than
all of the topic's partitions (a rebalance, a member waiting for a dead one's session to time
out) means reads are not advancing for the rest: ``/readyz`` answers 503 with that reason. A
group with no member at all (no indexer started yet, or a write-only deployment) is reported in
the body but does not fail readiness: the API's own dependencies are up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kafkastore import kafka
from kafkastore.config import Settings
from kafkastore.errors import Unavailable


@dataclass(frozen=True, slots=True)
class Ownership:
    """The indexer group's hold on the topic."""

    group: str
    state: str
    """The group's state as Kafka names it (``STABLE``, ``PREPARING_REBALANCE``, ``EMPTY``...)."""
    members: int
    owned_partitions: int
    """Partitions of the topic assigned to some member."""
    partitions: int
    """Partitions of the topic."""

    @property
    def complete(self) -> bool:
        """Every partition is owned by a member (or there is no member to own any)."""
        return self.members == 0 or self.owned_partitions >= self.partitions

    def problem(self) -> str | None:
        """Why reads stall, or None."""
        if self.complete:
            return None
        return (
            f"indexer group {self.group!r} ({self.state.lower()}, {self.members} member(s)) owns "
            f"{self.owned_partitions} of {self.partitions} partitions: reads of the others do "
            "not advance"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "state": self.state,
            "members": self.members,
            "owned_partitions": self.owned_partitions,
            "partitions": self.partitions,
        }


def describe(settings: Settings, *, timeout: float = 2.0) -> Ownership:
    """The indexer group's ownership of ``settings.topic`` (raises Unavailable)."""
    client = kafka.admin(settings)
    group = settings.indexer_group
    try:
        with kafka.translated():
            metadata = client.list_topics(settings.topic, timeout=timeout)
            described = client.describe_consumer_groups([group], request_timeout=timeout)
            description = described[group].result(timeout=timeout)
    except TimeoutError:
        raise Unavailable(f"Kafka did not describe group {group!r} in {timeout}s") from None
    topic = metadata.topics.get(settings.topic)
    partitions = len(topic.partitions) if topic is not None and topic.error is None else 0
    owned: set[int] = set()
    for member in description.members:
        assignment = member.assignment
        for tp in assignment.topic_partitions if assignment is not None else ():
            if tp.topic == settings.topic:
                owned.add(tp.partition)
    state = getattr(description.state, "name", str(description.state))
    return Ownership(
        group=group,
        state=state,
        members=len(description.members),
        owned_partitions=len(owned),
        partitions=partitions,
    )
