"""Step 3 of the append protocol (writer.decide) against a sequential model, without I/O.

The model below is written from the rules (docs/design.md sections 2 and 5, docs/http.md's expected
versions), not from the implementation: it applies the units of a batch one after another to a
store that knows every committed event id's stream and version. Hypothesis draws a committed
history and a batch of single and atomic appends with the four expected-version modes and
reused event ids: exact repeats of committed appends, runs of committed events, repeats of an
append earlier in the batch, ids moved to another stream, and partial overlaps - each now and
then with another payload under a reused id. Some committed markers keep payload digests and
some are older than digests (None): only a kept digest can tell a changed payload.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from uuid import UUID

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kafkastore.errors import (
    AppendConflicts,
    DuplicateEventId,
    KafkaStoreError,
    StreamDeleted,
    WrongExpectedVersion,
)
from kafkastore.records import AppendResult, EventPosition, ExpectedVersion
from writer.decide import (
    Decision,
    Deletion,
    Delivered,
    Head,
    StoredEvent,
    Unit,
    decide,
    expected_version_holds,
    fail,
    settle,
)
from writer.prepare import PreparedAppend, PreparedEvent

STREAMS = ("Order-1", "Order-2", "Cart-1", "Cart-2")
PARTITION = {stream: i % 3 for i, stream in enumerate(STREAMS)}


ORIGINAL = b"{}"
CHANGED = b'{"changed":true}'


def event(event_id: UUID, payload: bytes = ORIGINAL) -> PreparedEvent:
    return PreparedEvent(event_id, "Happened", payload, "application/json", None, None)


DIGEST = event(uuid.uuid4()).digest  # what every committed event of a History was


def append(
    stream: str,
    ids: Sequence[UUID],
    expected: ExpectedVersion = "any",
    *,
    supplied: bool = True,
    changed: Sequence[UUID] = (),
) -> PreparedAppend:
    events = tuple(event(i, CHANGED if i in changed else ORIGINAL) for i in ids)
    return PreparedAppend(stream, expected, events, supplied, 2 * len(ids))


def unit(*appends: PreparedAppend, atomic: bool = False) -> Unit:
    return Unit(tuple(appends), atomic, sum(a.size for a in appends))


# -- the sequential model --------------------------------------------------------------------


@dataclass
class History:
    """The committed store before the batch: heads, and where each event id is stored."""

    versions: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STREAMS, 0))
    deleted: set[str] = field(default_factory=set)
    soft: set[str] = field(default_factory=set)
    where: dict[UUID, tuple[str, int]] = field(default_factory=dict)
    offsets: dict[UUID, int] = field(default_factory=dict)
    appends: list[tuple[str, tuple[UUID, ...]]] = field(default_factory=list)
    digests: dict[UUID, bytes | None] = field(default_factory=dict)
    """The digest each committed id's marker keeps (None: a marker older than digests)."""

    def commit(self, stream: str, ids: Sequence[UUID], *, legacy: bool = False) -> None:
        for i in ids:
            self.versions[stream] += 1
            self.where[i] = (stream, self.versions[stream])
            self.offsets[i] = len(self.offsets)
            self.digests[i] = None if legacy else DIGEST
        self.appends.append((stream, tuple(ids)))

    def heads(self) -> dict[str, Head]:
        return {s: Head(v, s in self.deleted, s in self.soft) for s, v in self.versions.items()}

    def stored(self) -> dict[UUID, StoredEvent]:
        return {
            i: StoredEvent(s, v, PARTITION[s], self.offsets[i], self.digests[i])
            for i, (s, v) in self.where.items()
        }


@dataclass(frozen=True)
class New:
    stream: str
    from_version: int
    ids: tuple[UUID, ...]


@dataclass(frozen=True)
class Again:
    """A repeat of committed events: their stored positions."""

    stream: str
    positions: tuple[tuple[UUID, int], ...]


@dataclass(frozen=True)
class Same:
    """A repeat of the append ``(unit, append)`` of this batch."""

    unit: int
    append: int


Expected = list[New | Again | Same] | tuple[str, object]


def holds(expected: ExpectedVersion, version: int, soft: bool = False) -> bool:
    match expected:
        case "any":
            return True
        case "no_stream":
            return version == 0 or soft  # a soft-deleted stream does not exist
        case "exists":
            return version > 0 and not soft
        case int(n):
            return version == n
    raise AssertionError(expected)


def model(
    history: History, units: Sequence[Unit]
) -> tuple[list[Expected], dict[str, int], dict[str, tuple[int | None, bool, bool]]]:
    """Apply the units one by one; what each is answered, the heads afterwards, and the final
    (truncate_before, soft-deleted, tombstoned) of every stream a deletion changed."""
    versions = dict(history.versions)
    deleted = set(history.deleted)
    soft = set(history.soft)
    lifecycle: dict[str, tuple[int | None, bool, bool]] = {}
    in_batch: dict[UUID, tuple[int, int]] = {}  # id -> (unit, append) accepted in this batch
    batch: dict[tuple[int, int], tuple[str, tuple[UUID, ...]]] = {}
    payloads: dict[UUID, bytes] = {}  # id -> payload digest of the append accepted in the batch
    answers: list[Expected] = []
    for u, submitted in enumerate(units):
        if submitted.deletion is not None:
            d = submitted.deletion
            if d.stream_id in deleted:
                answers.append(("deleted", d.stream_id))
            elif not holds(d.expected, versions[d.stream_id], d.stream_id in soft):
                answers.append(("conflict", (d.stream_id, d.expected, versions[d.stream_id])))
            elif d.hard:
                deleted.add(d.stream_id)
                soft.discard(d.stream_id)
                lifecycle[d.stream_id] = (lifecycle.get(d.stream_id, (None,))[0], False, True)
                answers.append([])
            else:
                soft.add(d.stream_id)
                lifecycle[d.stream_id] = (versions[d.stream_id] + 1, True, False)
                answers.append([])
            continue
        local = dict(versions)
        touched: set[str] = set()
        digests: dict[UUID, bytes] = {}
        error: tuple[str, object] | None = None
        conflicts: list[tuple[str, object, int]] = []
        out: list[New | Again | Same] = []
        for app in submitted.appends:
            ids = tuple(e.id for e in app.events)
            old = [i for i in ids if i in history.where]
            new = [i for i in ids if i in in_batch]
            if app.supplied_ids and old:
                spots = [history.where[i] for i in ids if i in history.where]
                first = spots[0][1]
                if len(old) == len(ids) and spots == [
                    (app.stream_id, first + k) for k in range(len(ids))
                ]:
                    # Same positions: the same append only if every kept digest matches.
                    other = [
                        str(e.id)
                        for e in app.events
                        if history.digests[e.id] not in (None, e.digest)
                    ]
                    if other:
                        error = error or ("duplicate", (other, "payload_differs"))
                        continue
                    out.append(
                        Again(app.stream_id, tuple(zip(ids, (v for _, v in spots), strict=True)))
                    )
                else:
                    error = error or ("duplicate", ([str(i) for i in old], "stored_elsewhere"))
                continue
            if app.supplied_ids and new:
                owner = in_batch[new[0]]
                if len(new) == len(ids) and batch[owner] == (app.stream_id, ids):
                    other = [str(e.id) for e in app.events if payloads[e.id] != e.digest]
                    if other:
                        error = error or ("duplicate", (other, "payload_differs"))
                        continue
                    out.append(Same(*owner))
                else:
                    error = error or ("duplicate", ([str(i) for i in new], "in_flight"))
                continue
            if app.stream_id in deleted:
                error = error or ("deleted", app.stream_id)
                continue
            is_soft = app.stream_id in soft and app.stream_id not in touched
            if not holds(app.expected, local[app.stream_id], is_soft):
                conflicts.append((app.stream_id, app.expected, local[app.stream_id]))
                continue
            out.append(New(app.stream_id, local[app.stream_id] + 1, ids))
            local[app.stream_id] += len(ids)
            touched.add(app.stream_id)
            digests.update({e.id: e.digest for e in app.events})
        if error is None and conflicts:
            error = ("conflicts", conflicts) if submitted.atomic else ("conflict", conflicts[0])
        if error is not None:
            answers.append(error)
            continue
        versions = local
        for stream in touched:  # an append recreates a soft-deleted stream
            soft.discard(stream)
            if stream in lifecycle:
                lifecycle[stream] = (lifecycle[stream][0], False, lifecycle[stream][2])
        payloads.update(digests)
        for a, answer in enumerate(out):
            if isinstance(answer, New):
                batch[(u, a)] = (answer.stream, answer.ids)
                in_batch.update(dict.fromkeys(answer.ids, (u, a)))
        answers.append(out)
    changed = {s: v for s, v in versions.items() if v != history.versions[s]}
    return answers, changed, lifecycle


# -- drawing batches -----------------------------------------------------------------------


@st.composite
def committed(draw: st.DrawFn) -> History:
    history = History()
    for stream in STREAMS:
        for _ in range(draw(st.integers(0, 3))):
            history.commit(
                stream,
                [uuid.uuid4() for _ in range(draw(st.integers(1, 3)))],
                legacy=draw(st.booleans()),
            )
    history.deleted = set(draw(st.lists(st.sampled_from(STREAMS), max_size=1)))
    history.soft = set(draw(st.lists(st.sampled_from(STREAMS), max_size=2))) - history.deleted
    return history


EXPECTED = st.one_of(
    st.sampled_from(["any", "any", "no_stream", "exists"]), st.integers(min_value=1, max_value=8)
)


def draw_append(
    draw: st.DrawFn, history: History, earlier: list[PreparedAppend], used: set[UUID]
) -> PreparedAppend:
    stream = draw(st.sampled_from(STREAMS))
    expected = draw(EXPECTED)
    fresh = [uuid.uuid4() for _ in range(draw(st.integers(1, 3)))]
    kind = draw(
        st.sampled_from(
            ["fresh"] * 4
            + ["batch"] * 2
            + ["old", "run", "shuffled", "moved", "moved_batch", "partial"]
        )
    )
    ids: list[UUID] = fresh
    if kind in ("old", "moved") and history.appends:
        source, old = draw(st.sampled_from(history.appends))
        stream, ids = source, list(old)
    elif kind == "run" and history.where:
        # Consecutive committed events of one stream, maybe across two of its appends.
        source = draw(st.sampled_from(sorted({s for s, _ in history.where.values()})))
        line = sorted((v, i) for i, (s, v) in history.where.items() if s == source)
        lo = draw(st.integers(0, len(line) - 1))
        hi = draw(st.integers(lo + 1, len(line)))
        stream, ids = source, [i for _, i in line[lo:hi]]
    elif kind == "shuffled" and history.where:
        # Committed events of one stream, not at consecutive versions in this order.
        source = draw(st.sampled_from(sorted({s for s, _ in history.where.values()})))
        line = [i for i, (s, _) in sorted(history.where.items(), key=lambda x: x[1]) if s == source]
        stream, ids = source, draw(st.lists(st.sampled_from(line), min_size=1, unique=True))
    elif kind in ("batch", "moved_batch") and earlier:
        original = draw(st.sampled_from(earlier))
        stream, ids = original.stream_id, [e.id for e in original.events]
    elif kind == "partial" and (earlier or history.appends):
        # Some ids of a committed or an earlier append, in any order, with a new one.
        pool = [ids for _, ids in history.appends] + [[e.id for e in a.events] for a in earlier]
        some = list(draw(st.sampled_from(pool)))
        ids = draw(st.permutations([*some[: draw(st.integers(1, len(some)))], fresh[0]]))
    if kind.startswith("moved"):
        stream = draw(st.sampled_from(STREAMS))
    if used & set(ids):
        ids = fresh  # the ids of one unit are unique (writer.prepare checks it)
    used.update(ids)
    supplied = ids is not fresh or draw(st.booleans())
    # Now and then a reused id comes back with another payload.
    changed = draw(st.lists(st.sampled_from(ids), max_size=1)) if ids is not fresh else []
    return append(stream, ids, expected, supplied=supplied, changed=changed)


@st.composite
def batches(draw: st.DrawFn) -> tuple[History, list[Unit]]:
    history = draw(committed())
    earlier: list[PreparedAppend] = []
    units = []
    for _ in range(draw(st.integers(1, 8))):
        if draw(st.integers(0, 5)) == 0:  # a soft or hard delete among the appends
            deletion = Deletion(draw(st.sampled_from(STREAMS)), draw(EXPECTED), draw(st.booleans()))
            units.append(Unit((), False, 0, deletion))
            continue
        atomic = draw(st.booleans())
        used: set[UUID] = set()
        appends = [
            draw_append(draw, history, earlier, used)
            for _ in range(draw(st.integers(1, 3)) if atomic else 1)
        ]
        earlier.extend(appends)
        units.append(unit(*appends, atomic=atomic))
    return history, units


def deliver(decision: Decision) -> Delivered:
    """Acks as Kafka would give them: one partition per stream, offsets in produce order."""
    partitions, offsets = [], []
    next_offset = dict.fromkeys(range(3), 1000)
    for accepted in decision.produce_order:
        partition = PARTITION[accepted.append.stream_id]
        for _ in accepted.append.events:
            partitions.append(partition)
            offsets.append(next_offset[partition])
            next_offset[partition] += 1
    return Delivered(uuid.uuid4(), partitions, offsets)


def described(error: KafkaStoreError) -> tuple[str, object]:
    if isinstance(error, DuplicateEventId):
        return ("duplicate", (list(error.event_ids), error.reason))
    if isinstance(error, StreamDeleted):
        return ("deleted", error.stream_id)
    if isinstance(error, AppendConflicts):
        return ("conflicts", [(c.stream_id, c.expected, c.current) for c in error.conflicts])
    assert isinstance(error, WrongExpectedVersion), error
    return ("conflict", (error.stream_id, error.expected, error.current))


# -- the properties ------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(batches())
def test_the_decision_answers_every_unit_as_the_sequential_model_does(
    batch: tuple[History, list[Unit]],
) -> None:
    history, units = batch
    decision = decide(units, history.heads(), history.stored())
    delivered = deliver(decision)
    answers = settle(decision, delivered)
    expected, heads, lifecycle = model(history, units)

    assert len(answers) == len(units)
    for got, want in zip(answers, expected, strict=True):
        if isinstance(want, tuple):
            assert isinstance(got, KafkaStoreError) and described(got) == want
            continue
        assert isinstance(got, list) and len(got) == len(want)
        for result, answer in zip(got, want, strict=True):
            if isinstance(answer, New):
                assert result.created and result.write_id == delivered.write_id
                assert (result.stream_id, result.from_version) == (
                    answer.stream,
                    answer.from_version,
                )
                assert result.to_version == answer.from_version + len(answer.ids) - 1
                assert [(e.id, e.version) for e in result.events] == [
                    (i, answer.from_version + k) for k, i in enumerate(answer.ids)
                ]
                assert {e.partition for e in result.events} == {PARTITION[answer.stream]}
            elif isinstance(answer, Again):
                # A repeat of committed events answers where they are stored.
                assert not result.created and result.stream_id == answer.stream
                assert result.events == tuple(
                    EventPosition(i, v, PARTITION[answer.stream], history.offsets[i])
                    for i, v in answer.positions
                )
            else:
                # A repeat of an append of this batch answers that append's result.
                original = answers[answer.unit]
                assert isinstance(original, list)
                assert result == AppendResult(
                    **{**_fields(original[answer.append]), "created": False}
                )
    assert dict(decision.heads) == heads
    assert {
        s: (r.truncate_before, r.soft_deleted, r.hard) for s, r in decision.deletions.items()
    } == lifecycle


@settings(max_examples=400, deadline=None)
@given(batches())
def test_accepted_versions_are_contiguous_per_stream_and_the_markers_cover_them(
    batch: tuple[History, list[Unit]],
) -> None:
    history, units = batch
    decision = decide(units, history.heads(), history.stored())
    answers = settle(decision, deliver(decision))
    created = [r for got in answers if isinstance(got, list) for r in got if r.created]

    flat = [e.id for a in decision.produce_order for e in a.append.events]
    assert decision.event_count == len(flat) == sum(len(r.events) for r in created)
    for stream in STREAMS:
        mine = sorted((r for r in created if r.stream_id == stream), key=lambda r: r.from_version)
        versions = [e.version for r in mine for e in r.events]
        start = history.versions[stream] + 1
        assert versions == list(range(start, start + len(versions)))
        offsets = [e.offset for r in mine for e in r.events]
        assert offsets == sorted(offsets)  # Kafka order is version order
        rows = [m for m in decision.markers if m.stream_id == stream]
        if not mine:
            assert rows == [] and stream not in decision.heads
            continue
        (row,) = rows
        assert (row.from_version, row.to_version) == (start, versions[-1])
        assert decision.heads[stream] == versions[-1]
        assert flat[row.start : row.start + row.count] == [e.id for r in mine for e in r.events]


@settings(max_examples=200, deadline=None)
@given(batches())
def test_a_rejected_unit_has_nothing_produced_and_a_failed_batch_keeps_the_rejections(
    batch: tuple[History, list[Unit]],
) -> None:
    history, units = batch
    decision = decide(units, history.heads(), history.stored())
    produced = [a.append for a in decision.produce_order]
    answers = settle(decision, deliver(decision))
    for submitted, got in zip(units, answers, strict=True):
        mine = [a for a in produced if any(a is b for b in submitted.appends)]
        if submitted.deletion is not None:
            assert mine == [] and (got == [] or isinstance(got, KafkaStoreError))
            continue
        if isinstance(got, KafkaStoreError):
            assert mine == []  # an atomic unit fails whole
        else:
            made = [r for r in got if r.created]
            assert sorted(r.events[0].id for r in made) == sorted(a.events[0].id for a in mine)
    down = KafkaStoreError("the batch failed")
    for got, failed in zip(answers, fail(decision, len(units), down), strict=True):
        assert failed is (down if isinstance(got, list) else got)


def _fields(result: AppendResult) -> dict[str, object]:
    return {name: getattr(result, name) for name in AppendResult.__dataclass_fields__}


# -- examples ------------------------------------------------------------------------------


def test_an_atomic_append_with_one_conflict_fails_whole_and_reports_every_conflict() -> None:
    history = History()
    history.commit("Order-1", [uuid.uuid4()])
    units = [
        unit(
            append("Order-1", [uuid.uuid4()], 1),
            append("Order-2", [uuid.uuid4()], "exists"),
            append("Cart-1", [uuid.uuid4()], 5),
            atomic=True,
        )
    ]
    decision = decide(units, history.heads(), history.stored())
    (answer,) = settle(decision, None)
    assert isinstance(answer, AppendConflicts)
    assert [(c.stream_id, c.current) for c in answer.conflicts] == [("Order-2", 0), ("Cart-1", 0)]
    assert decision.produce_order == () and dict(decision.heads) == {}


def test_a_retry_racing_its_original_in_one_batch_gets_the_original_result() -> None:
    ids = [uuid.uuid4(), uuid.uuid4()]
    units = [unit(append("Order-1", ids, "no_stream")), unit(append("Order-1", ids, "no_stream"))]
    decision = decide(units, History().heads(), {})
    first, second = settle(decision, deliver(decision))
    assert isinstance(first, list) and isinstance(second, list)
    assert first[0].created and not second[0].created
    assert first[0].events == second[0].events and first[0].write_id == second[0].write_id
    assert decision.event_count == 2


def test_appends_to_one_stream_in_one_batch_get_consecutive_versions_in_arrival_order() -> None:
    units = [unit(append("Order-1", [uuid.uuid4()], "no_stream")) for _ in range(2)]
    units += [unit(append("Order-1", [uuid.uuid4(), uuid.uuid4()], 1))]
    decision = decide(units, History().heads(), {})
    answers = settle(decision, deliver(decision))
    assert isinstance(answers[1], WrongExpectedVersion) and answers[1].current == 1
    assert [(r.from_version, r.to_version) for a in answers if isinstance(a, list) for r in a] == [
        (1, 1),
        (2, 3),
    ]


@pytest.mark.parametrize(
    ("expected", "current", "holds_"),
    [
        *itertools.product(["any"], [0, 3], [True]),
        ("no_stream", 0, True),
        ("no_stream", 1, False),
        ("exists", 0, False),
        ("exists", 2, True),
        (2, 2, True),
        (2, 3, False),
    ],
)
def test_the_four_expected_version_modes(
    expected: ExpectedVersion, current: int, holds_: bool
) -> None:
    assert expected_version_holds(expected, current) is holds_


def test_an_append_after_a_soft_delete_in_one_batch_recreates_the_stream_numbering_on() -> None:
    history = History()
    history.commit("Order-1", [uuid.uuid4(), uuid.uuid4()])
    units = [
        Unit((), False, 0, Deletion("Order-1", 2, hard=False)),
        unit(append("Order-1", [uuid.uuid4()], "no_stream")),
        Unit((), False, 0, Deletion("Order-2", "any", hard=True)),
        unit(append("Order-2", [uuid.uuid4()])),
    ]
    decision = decide(units, history.heads(), history.stored())
    deleted, recreated, tombstoned, refused = settle(decision, deliver(decision))
    assert deleted == [] and tombstoned == []
    assert isinstance(recreated, list) and recreated[0].from_version == 3
    assert isinstance(refused, StreamDeleted)
    assert decision.deletions["Order-1"].truncate_before == 3
    assert not decision.deletions["Order-1"].soft_deleted
    assert decision.deletions["Order-2"].hard


def test_a_committed_id_resent_with_another_payload_is_refused_as_a_different_payload() -> None:
    history = History()
    ids = [uuid.uuid4(), uuid.uuid4()]
    history.commit("Order-1", ids)
    units = [unit(append("Order-1", ids, changed=[ids[1]]))]
    (answer,) = settle(decide(units, history.heads(), history.stored()), None)
    assert isinstance(answer, DuplicateEventId)
    assert (answer.event_ids, answer.reason) == ((str(ids[1]),), "payload_differs")
    assert "different payload" in answer.message


def test_a_repeat_of_a_marker_older_than_digests_is_judged_by_position_alone() -> None:
    history = History()
    ids = [uuid.uuid4()]
    history.commit("Order-1", ids, legacy=True)
    units = [unit(append("Order-1", ids, changed=ids))]
    (answer,) = settle(decide(units, history.heads(), history.stored()), None)
    assert isinstance(answer, list) and not answer[0].created
    assert answer[0].from_version == 1


def test_a_retry_racing_its_original_with_another_payload_is_refused() -> None:
    ids = [uuid.uuid4()]
    units = [unit(append("Order-1", ids)), unit(append("Order-1", ids, changed=ids))]
    decision = decide(units, History().heads(), {})
    first, second = settle(decision, deliver(decision))
    assert isinstance(first, list) and first[0].created
    assert isinstance(second, DuplicateEventId) and second.reason == "payload_differs"


def test_ids_held_by_another_append_of_the_batch_say_so() -> None:
    ids = [uuid.uuid4(), uuid.uuid4()]
    units = [unit(append("Order-1", ids)), unit(append("Order-2", ids[:1]))]
    decision = decide(units, History().heads(), {})
    _, second = settle(decision, deliver(decision))
    assert isinstance(second, DuplicateEventId) and second.reason == "in_flight"
    assert "being committed right now" in second.message


def test_the_payload_digest_tells_type_data_metadata_and_content_type_apart() -> None:
    from writer.prepare import payload_digest

    base = ("T", "application/json", b"{}", None)
    variants = [
        ("U", "application/json", b"{}", None),
        ("T", "text/plain", b"{}", None),
        ("T", "application/json", b"[]", None),
        ("T", "application/json", b"{}", b'{"a":1}'),
        ("T", "application/json", b"", b"{}"),  # the same bytes framed differently
    ]
    assert payload_digest(*base) == payload_digest(*base)
    assert len({payload_digest(*v) for v in [base, *variants]}) == 1 + len(variants)
