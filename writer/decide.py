"""Step 3 of the append protocol (docs/design.md section 2) as a pure function: no I/O at all.

Given the units of one batch in arrival order, the locked heads of their streams and where the
client-supplied event ids of the batch are already stored, :func:`decide` says which appends
are accepted, at which versions, in which order they are produced, which marker rows COMMIT
writes, and what every unit is answered. The rules, in the spirit of Message DB's
``write_message``:

- Units are decided one after another in arrival order; an accepted unit moves the heads the
  next unit sees, so several appends to one hot stream fit in one batch.
- An append whose ids are all stored, on its stream, at consecutive versions in its order, is a
  *repeat*: it is answered with the stored positions (``created=False``), whatever its expected
  version (section 5). Some of its ids stored and some not, or stored elsewhere:
  DuplicateEventId (``stored_elsewhere``). A repeat must be the same append byte for byte: an
  event whose payload digest (:func:`writer.prepare.payload_digest`) differs from the one its
  marker keeps is DuplicateEventId (``payload_differs``); markers written before digests were
  kept have none, and their repeats are judged by position alone.
- An append that repeats exactly (same stream, same ids in the same order, same payloads) an
  append accepted earlier in this batch is a *mirror* of it: a retry racing its original,
  answered with the original's result (``created=False``). Other payloads under its ids:
  DuplicateEventId (``payload_differs``); any other reuse of such ids: DuplicateEventId
  (``in_flight``).
- Otherwise the stream must not be deleted and the expected version must hold against the head
  (docs/http.md's four modes); the append gets the versions head + 1 ... head + n.
- A unit may instead be a *deletion* (docs/http.md "Stream lifecycle"), decided in the same arrival
  order under the same row lock, so an append and a delete of one stream never interleave: a
  tombstoned stream refuses it (StreamDeleted); else its expected version must hold. A soft
  delete sets ``truncate_before`` to head + 1 and marks the stream soft-deleted; an append after
  it (in this batch or a later one) recreates the stream and numbering continues. A hard delete
  tombstones the stream: every later append of this batch and of any other is StreamDeleted.
- On a soft-deleted stream ``no_stream`` holds and ``exists`` does not; an exact version is
  compared with the head, which a soft delete keeps.
- A unit fails whole: any error of one of its appends rejects all of them. The first
  DuplicateEventId or StreamDeleted wins; else an atomic unit reports every conflict
  (AppendConflicts), a single append its one WrongExpectedVersion.

The accepted appends of one stream are produced contiguously (arrival order kept within the
stream), so the stream's marker row is one slice of the batch's flat id and offset arrays.

Why this module is longer than ~400 lines: it is one decision. Appends, repeats, mirrors
and deletes of a batch are decided together, in arrival order, against the same heads; split
over modules, how those rules interact could no longer be read in one place. About a third of
it is the named value types the decision returns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from uuid import UUID

from kafkastore.errors import (
    AppendConflicts,
    DuplicateEventId,
    KafkaStoreError,
    StreamDeleted,
    WrongExpectedVersion,
)
from kafkastore.records import AppendResult, EventPosition, ExpectedVersion
from writer.prepare import PreparedAppend


@dataclass(frozen=True, slots=True)
class Unit:
    """What one caller submitted: one append, or several forming an atomic multi-stream append."""

    appends: tuple[PreparedAppend, ...]
    atomic: bool
    """True for ``append_many``: the unit's appends are all accepted or all rejected."""
    size: int
    """Bytes the unit holds in the writer's queue (backpressure)."""
    deletion: Deletion | None = None
    """A delete of one stream instead of appends (then ``appends`` is empty)."""


@dataclass(frozen=True, slots=True)
class Deletion:
    """``DELETE /streams/{stream_id}``: a soft delete, or a hard one (a tombstone)."""

    stream_id: str
    expected: ExpectedVersion
    hard: bool


@dataclass(frozen=True, slots=True)
class LifecycleRow:
    """What COMMIT writes to a deleted stream's head row (its final state in this batch)."""

    stream_id: str
    truncate_before: int | None
    """The new ``truncate_before`` (head + 1 of the soft delete); None to keep it."""
    soft_deleted: bool
    """Whether the stream ends the batch soft-deleted (False when an append recreated it)."""
    hard: bool
    """Whether the stream was tombstoned."""


@dataclass(frozen=True, slots=True)
class Head:
    """A stream's row as locked in step 2."""

    version: int
    """The stream's version: the number of its committed events (0 for a new stream)."""
    deleted: bool
    """Tombstoned (hard-deleted): no append passes."""
    soft_deleted: bool = False
    """Soft-deleted and not recreated since."""


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """Where a committed marker holds a client-supplied event id."""

    stream_id: str
    version: int
    partition: int | None
    offset: int | None
    digest: bytes | None = None
    """The event's payload digest as its marker keeps it; None for markers written before
    digests were kept."""


@dataclass(frozen=True, slots=True)
class Accepted:
    """An append that this batch produces and commits."""

    append: PreparedAppend
    from_version: int
    start: int
    """The index of its first event in the batch's produce order (the flat arrays)."""

    @property
    def to_version(self) -> int:
        """The version of its last event."""
        return self.from_version + len(self.append.events) - 1


@dataclass(frozen=True, slots=True)
class MarkerRow:
    """One ``appends`` row: a stream's accepted events of this batch, one contiguous slice."""

    stream_id: str
    from_version: int
    to_version: int
    start: int
    """The index of the slice's first event in produce order."""
    count: int
    """How many events the slice holds (``to_version - from_version + 1``)."""


@dataclass(frozen=True, slots=True)
class Created:
    """The append is new: answered with the positions its events get."""

    slot: int
    """Its index in :attr:`Decision.accepted`."""


@dataclass(frozen=True, slots=True)
class Mirrored:
    """The append repeats an append accepted earlier in this batch: answered with its result."""

    slot: int
    """The original's index in :attr:`Decision.accepted`."""


@dataclass(frozen=True, slots=True)
class Repeated:
    """The append repeats committed events: answered with where they are stored."""

    result: AppendResult


Answer = Created | Mirrored | Repeated


@dataclass(frozen=True, slots=True)
class Admitted:
    """A unit that succeeds if the batch commits: one answer per append, in order."""

    answers: tuple[Answer, ...]


@dataclass(frozen=True, slots=True)
class Rejected:
    """A unit that fails on its own, whatever happens to the batch."""

    error: KafkaStoreError


@dataclass(frozen=True, slots=True)
class Decision:
    """Everything the transaction does after step 3, and what it answers."""

    units: tuple[Admitted | Rejected, ...]
    """One per unit, in arrival order."""
    accepted: tuple[Accepted, ...]
    """The accepted appends in arrival order (what :class:`Created` and :class:`Mirrored` name)."""
    produce_order: tuple[Accepted, ...]
    """The accepted appends in produce order: grouped by stream, arrival order within one."""
    markers: tuple[MarkerRow, ...]
    """One per stream with accepted appends, in produce order."""
    heads: Mapping[str, int]
    """The new version of each stream this batch changes."""
    deletions: Mapping[str, LifecycleRow] = field(default_factory=dict)
    """The deleted streams' rows as COMMIT writes them (after the heads)."""

    @property
    def event_count(self) -> int:
        """How many messages the batch produces."""
        return sum(row.count for row in self.markers)


@dataclass(frozen=True, slots=True)
class Delivered:
    """What Kafka acknowledged for a batch's messages, in produce order."""

    write_id: UUID
    partitions: Sequence[int]
    offsets: Sequence[int]


Settled = list[AppendResult] | KafkaStoreError
"""A unit's answer: one result per append, or the error that rejected the whole unit."""


def expected_version_holds(
    expected: ExpectedVersion, current: int, *, soft_deleted: bool = False
) -> bool:
    """Whether a stream at version ``current`` satisfies ``expected`` (docs/http.md's four modes; a
    soft-deleted stream does not exist, but its numbering continues)."""
    if expected == "any":
        return True
    if expected == "no_stream":
        return current == 0 or soft_deleted
    if expected == "exists":
        return current >= 1 and not soft_deleted
    return current == expected


def decide(
    units: Sequence[Unit], heads: Mapping[str, Head], stored: Mapping[UUID, StoredEvent]
) -> Decision:
    """Decide a batch (see the module docstring). ``heads`` holds every stream of ``units``;
    ``stored`` the committed positions of (at least) the batch's client-supplied ids."""
    current = {stream: head.version for stream, head in heads.items()}
    deleted = {stream for stream, head in heads.items() if head.deleted}
    soft = {stream for stream, head in heads.items() if head.soft_deleted}
    lifecycle: dict[str, LifecycleRow] = {}
    chosen: list[tuple[PreparedAppend, int]] = []  # accepted (append, from_version), arrival order
    claimed: dict[UUID, int] = {}  # event id -> index in ``chosen`` of the append holding it
    changed: dict[str, int] = {}
    verdicts: list[Admitted | Rejected] = []
    for unit in units:
        if unit.deletion is not None:
            verdicts.append(_delete(unit.deletion, current, deleted, soft, lifecycle))
            continue
        tentative: dict[str, int] = {}  # heads as moved by this unit's earlier appends
        conflicts: list[WrongExpectedVersion] = []
        error: KafkaStoreError | None = None
        answers: list[Answer] = []
        taken: list[tuple[PreparedAppend, int]] = []
        for append in unit.appends:
            stream = append.stream_id
            head = tentative.get(stream, current[stream])
            if append.supplied_ids:
                try:
                    repeat = _repeat(append, stored)
                    mirror = _mirror(append, claimed, chosen)
                except DuplicateEventId as exc:
                    error = error or exc
                    continue
                if repeat is not None:
                    answers.append(Repeated(repeat))
                    continue
                if mirror is not None:
                    answers.append(Mirrored(mirror))
                    continue
            if stream in deleted:
                error = error or StreamDeleted(stream)
                continue
            is_soft = stream in soft and stream not in tentative
            if not expected_version_holds(append.expected, head, soft_deleted=is_soft):
                conflicts.append(WrongExpectedVersion(stream, append.expected, head))
                continue
            answers.append(Created(len(chosen) + len(taken)))
            taken.append((append, head + 1))
            tentative[stream] = head + len(append.events)
        if conflicts and error is None:
            error = AppendConflicts(conflicts) if unit.atomic else conflicts[0]
        if error is not None:
            verdicts.append(Rejected(error))
            continue
        for append, from_version in taken:
            for event in append.events:
                claimed[event.id] = len(chosen)
            chosen.append((append, from_version))
        current.update(tentative)
        changed.update(tentative)
        for stream in tentative:  # an append recreates a soft-deleted stream
            soft.discard(stream)
            if stream in lifecycle:
                lifecycle[stream] = replace(lifecycle[stream], soft_deleted=False)
        verdicts.append(Admitted(tuple(answers)))
    accepted, produce_order, markers = _layout(chosen)
    return Decision(tuple(verdicts), accepted, produce_order, markers, changed, lifecycle)


def _delete(
    deletion: Deletion,
    current: Mapping[str, int],
    deleted: set[str],
    soft: set[str],
    lifecycle: dict[str, LifecycleRow],
) -> Admitted | Rejected:
    """Decide one deletion against the heads as this batch has moved them so far."""
    stream = deletion.stream_id
    head = current[stream]
    if stream in deleted:
        return Rejected(StreamDeleted(stream))
    if not expected_version_holds(deletion.expected, head, soft_deleted=stream in soft):
        return Rejected(WrongExpectedVersion(stream, deletion.expected, head))
    if deletion.hard:
        deleted.add(stream)
        soft.discard(stream)
        earlier = lifecycle.get(stream)
        lifecycle[stream] = LifecycleRow(
            stream, earlier.truncate_before if earlier else None, False, True
        )
    else:
        soft.add(stream)
        lifecycle[stream] = LifecycleRow(stream, head + 1, True, False)
    return Admitted(())


def _layout(
    chosen: Sequence[tuple[PreparedAppend, int]],
) -> tuple[tuple[Accepted, ...], tuple[Accepted, ...], tuple[MarkerRow, ...]]:
    """Group the accepted appends by stream (first arrival first) and place them in the arrays."""
    by_stream: dict[str, list[int]] = {}
    for slot, (append, _) in enumerate(chosen):
        by_stream.setdefault(append.stream_id, []).append(slot)
    placed: dict[int, Accepted] = {}
    produce_order: list[Accepted] = []
    markers: list[MarkerRow] = []
    start = 0
    for stream, slots in by_stream.items():
        row_start = start
        for slot in slots:
            append, from_version = chosen[slot]
            placed[slot] = Accepted(append, from_version, start)
            produce_order.append(placed[slot])
            start += len(append.events)
        first, last = placed[slots[0]], placed[slots[-1]]
        markers.append(
            MarkerRow(stream, first.from_version, last.to_version, row_start, start - row_start)
        )
    accepted = tuple(placed[slot] for slot in range(len(chosen)))
    return accepted, tuple(produce_order), tuple(markers)


def _repeat(append: PreparedAppend, stored: Mapping[UUID, StoredEvent]) -> AppendResult | None:
    """The stored positions when this append's ids are all stored on its stream, consecutively.

    None when none of its ids is stored; DuplicateEventId when some are stored and some are not,
    or stored elsewhere (another stream, or versions out of this append's order), or stored with
    another payload digest.
    """
    hits = [stored.get(e.id) for e in append.events]
    present = [str(e.id) for e, hit in zip(append.events, hits, strict=True) if hit is not None]
    if not present:
        return None
    first = hits[0]
    if (
        len(present) == len(append.events)
        and first is not None
        and all(
            hit is not None
            and hit.stream_id == append.stream_id
            and hit.version == first.version + i
            for i, hit in enumerate(hits)
        )
    ):
        differing = [
            str(e.id)
            for e, hit in zip(append.events, hits, strict=True)
            if hit is not None and hit.digest is not None and hit.digest != e.digest
        ]
        if differing:
            raise DuplicateEventId(differing, DuplicateEventId.PAYLOAD_DIFFERS)
        return AppendResult(
            stream_id=append.stream_id,
            from_version=first.version,
            to_version=first.version + len(hits) - 1,
            events=tuple(
                EventPosition(
                    id=event.id,
                    version=hit.version,
                    partition=hit.partition if hit.partition is not None else -1,
                    offset=hit.offset if hit.offset is not None else -1,
                )
                for event, hit in zip(append.events, hits, strict=True)
                if hit is not None
            ),
            created=False,
        )
    raise DuplicateEventId(present)


def _mirror(
    append: PreparedAppend,
    claimed: Mapping[UUID, int],
    chosen: Sequence[tuple[PreparedAppend, int]],
) -> int | None:
    """The slot of the earlier accepted append of this batch that this one repeats exactly.

    None when none of its ids was claimed; DuplicateEventId for any other reuse of them.
    """
    owners = [claimed.get(e.id) for e in append.events]
    present = [str(e.id) for e, o in zip(append.events, owners, strict=True) if o is not None]
    if not present:
        return None
    slot = owners[0]
    if slot is not None and all(o == slot for o in owners):
        original, _ = chosen[slot]
        if original.stream_id == append.stream_id and [e.id for e in original.events] == [
            e.id for e in append.events
        ]:
            differing = [
                str(e.id)
                for e, o in zip(append.events, original.events, strict=True)
                if e.digest != o.digest
            ]
            if differing:
                raise DuplicateEventId(differing, DuplicateEventId.PAYLOAD_DIFFERS)
            return slot
    raise DuplicateEventId(present, DuplicateEventId.IN_FLIGHT)


def settle(decision: Decision, delivered: Delivered | None) -> list[Settled]:
    """Every unit's answer once the batch committed (``delivered``: its acks), or once it turned
    out to have nothing to produce (``None``: only repeats and rejections)."""
    out: list[Settled] = []
    for verdict in decision.units:
        if isinstance(verdict, Rejected):
            out.append(verdict.error)
            continue
        results = []
        for answer in verdict.answers:
            if isinstance(answer, Repeated):
                results.append(answer.result)
                continue
            assert delivered is not None, "an accepted append needs its acks"
            result = _created(decision.accepted[answer.slot], delivered)
            results.append(
                result if isinstance(answer, Created) else replace(result, created=False)
            )
        out.append(results)
    return out


def fail(decision: Decision | None, count: int, error: KafkaStoreError) -> list[Settled]:
    """Every unit's answer when the batch failed with ``error``: the units the decision rejected
    keep their own error; all others (repeats included) get ``error``."""
    if decision is None:
        return [error] * count
    return [v.error if isinstance(v, Rejected) else error for v in decision.units]


def _created(accepted: Accepted, delivered: Delivered) -> AppendResult:
    append, start = accepted.append, accepted.start
    return AppendResult(
        stream_id=append.stream_id,
        from_version=accepted.from_version,
        to_version=accepted.to_version,
        events=tuple(
            EventPosition(
                id=event.id,
                version=accepted.from_version + i,
                partition=delivered.partitions[start + i],
                offset=delivered.offsets[start + i],
            )
            for i, event in enumerate(append.events)
        ),
        created=True,
        write_id=delivered.write_id,
    )
