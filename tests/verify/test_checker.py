"""The checker on hand-made histories: a clean one passes, and each kind of violation is found."""

from __future__ import annotations

from pathlib import Path

import pytest

from verify.checker import BETWEEN, KINDS, check
from verify.history import Entry, Recorder


class History:
    """A hand-made history: appends with their outcomes, then the final observations."""

    def __init__(self) -> None:
        self.rec = Recorder()
        self.rec.now = self._clock  # type: ignore[method-assign]
        self.t = 0.0

    def _clock(self) -> float:
        self.t += 0.01
        return self.t

    def append(
        self,
        stream: str,
        ids: list[str],
        outcome: str = "ok",
        *,
        from_version: int = 1,
        created: bool = True,
        retry_of: int | None = None,
    ) -> int:
        op = self.rec.invoke(
            "w1", stream, "any", [(i, n) for n, i in enumerate(ids, 1)], retry_of=retry_of
        )
        if outcome == "ok":
            self.rec.ok(
                op,
                from_version=from_version,
                to_version=from_version + len(ids) - 1,
                created=created,
            )
        elif outcome == "fail":
            self.rec.fail(op, "Unavailable")
        elif outcome == "unknown":
            self.rec.unknown(op, "OutcomeUnknown")
        return op

    def reads(
        self, streams: dict[str, list[str]], *, all_order: list[tuple[str, str]] | None = None
    ) -> None:
        """Final stream reads (ids in version order) and ``$all`` (in ``all_order`` or stream
        by stream), a tail that saw all of it, deliveries and the projection that match."""
        for stream, ids in streams.items():
            self.rec.observe("stream", stream=stream, events=[[v, i] for v, i in enum(ids)])
        order = all_order or [(s, i) for s, ids in streams.items() for i in ids]
        version = {i: v for ids in streams.values() for v, i in enum(ids)}
        rows = [[p, s, version[i], i] for p, (s, i) in enumerate(order, 1)]
        self.rec.observe("all", events=rows)
        self.rec.observe("tail", process="tail", events=rows)
        self.rec.observe("delivered", process="sub", events=[[s, v, i] for _p, s, v, i in rows])

    def entries(self) -> list[Entry]:
        return self.rec.entries()


def enum(ids: list[str]) -> list[tuple[int, str]]:
    return list(enumerate(ids, 1))


def kinds(entries: list[Entry]) -> set[str]:
    return {v.kind for v in check(entries).violations}


def test_a_clean_history_passes_and_counts_what_it_saw() -> None:
    h = History()
    h.append("A-1", ["a1", "a2"])
    h.append("A-1", ["a3"], from_version=3)
    h.append("B-1", ["b1"], "fail")
    h.append("C-1", ["c1"])
    h.reads({"A-1": ["a1", "a2", "a3"], "C-1": ["c1"]})

    verdict = check(h.entries())

    assert verdict.ok, verdict.summary()
    assert verdict.counts["acknowledged_events"] == 4
    assert verdict.counts["all_read"] == 4
    assert [p.name for p in verdict.phases] == [BETWEEN]
    assert verdict.phases[0].acknowledged == 3
    assert verdict.phases[0].failed == 1


def test_an_acknowledged_event_missing_from_the_reads_is_lost() -> None:
    h = History()
    h.append("A-1", ["a1", "a2"])
    h.reads({"A-1": ["a1"]})

    assert kinds(h.entries()) == {"lost"}


def test_an_event_of_a_failed_append_read_anywhere_is_a_phantom() -> None:
    h = History()
    h.append("A-1", ["a1"])
    h.append("A-1", ["x1"], "fail")
    h.reads({"A-1": ["a1", "x1"]})

    found = check(h.entries()).violations

    assert {v.kind for v in found} == {"phantom"}
    assert all(v.event == "x1" for v in found)


def test_an_event_no_operation_carried_is_a_phantom() -> None:
    h = History()
    h.append("A-1", ["a1"])
    h.reads({"A-1": ["a1", "zz"]})

    assert kinds(h.entries()) == {"phantom"}


def test_an_event_read_twice_is_a_duplicate() -> None:
    h = History()
    h.append("A-1", ["a1"])
    h.rec.observe("stream", stream="A-1", events=[[1, "a1"], [2, "a1"]])

    assert kinds(h.entries()) == {"duplicate", "wrong_version"}  # the copy is at v2


def test_an_event_read_at_another_version_than_acknowledged_is_wrong() -> None:
    h = History()
    h.append("A-1", ["a1"], "unknown")
    h.append("A-1", ["a2"], from_version=1)
    h.reads({"A-1": ["a1", "a2"]})

    assert kinds(h.entries()) == {"wrong_version"}


def test_an_unknown_outcome_partly_visible_is_caught() -> None:
    h = History()
    h.append("A-1", ["a1", "a2", "a3"], "unknown")
    h.reads({"A-1": ["a1", "a2"]})

    assert kinds(h.entries()) == {"partial"}


def test_an_unknown_outcome_visible_whole_or_not_at_all_is_fine_and_settles() -> None:
    h = History()
    first = h.append("A-1", ["a1", "a2"], "unknown")
    h.append("A-1", ["a1", "a2"], created=False, retry_of=first)
    lost = h.append("B-1", ["b1"], "unknown")
    h.append("B-1", ["b1"], "fail", retry_of=lost)
    h.append("C-1", ["c1"], "unknown")  # never retried: the reads alone decide
    h.reads({"A-1": ["a1", "a2"], "C-1": ["c1"]})

    verdict = check(h.entries())

    assert verdict.ok, verdict.summary()
    assert verdict.phases[0].unknown == 3
    assert verdict.phases[0].settled == {"committed": 1, "absent": 1, "unsettled": 1}


def test_a_retry_that_writes_again_what_the_first_attempt_wrote_is_a_duplicate() -> None:
    h = History()
    first = h.append("A-1", ["a1"], "unknown")
    h.append("A-1", ["a1"], from_version=2, retry_of=first)  # not answered as a repeat
    h.rec.observe("stream", stream="A-1", events=[[1, "a1"], [2, "a1"]])

    assert "duplicate" in kinds(h.entries())


def test_a_retry_answered_created_after_the_tail_read_the_first_attempt_is_caught() -> None:
    h = History()
    first = h.append("A-1", ["a1"], "unknown")
    h.rec.observe("tail", process="early", events=[[1, "A-1", 1, "a1"]])  # it did commit
    h.append("A-1", ["a1"], created=True, retry_of=first)  # ...yet "written anew"
    h.reads({"A-1": ["a1"]})

    found = check(h.entries()).violations

    assert {v.kind for v in found} == {"idempotency"}
    assert "the tail read a1" in found[0].detail


def test_an_append_answered_created_for_ids_acknowledged_before_is_caught() -> None:
    h = History()
    h.append("A-1", ["a1"])
    h.append("A-1", ["a1"], created=True)  # a repeat must say created false
    h.reads({"A-1": ["a1"]})

    assert kinds(h.entries()) == {"idempotency"}


def test_a_repeat_of_ids_no_earlier_append_could_have_committed_is_caught() -> None:
    h = History()
    failed = h.append("A-1", ["a1"], "fail")  # definite: nothing written
    h.append("A-1", ["a1"], created=False, retry_of=failed)
    h.append("B-1", ["b1"], created=False)  # the first append of its ids
    h.reads({"A-1": ["a1"], "B-1": ["b1"]})

    found = check(h.entries()).violations

    assert [v.kind for v in found] == ["idempotency", "idempotency"]
    assert {v.event for v in found} == {"a1", "b1"}


def test_a_retry_that_writes_anew_what_a_wal_losing_crash_took_is_fine() -> None:
    h = History()
    h.rec.nemesis("wal-loss", "inject", loses_acknowledged=True)
    first = h.append("A-1", ["a1"], "unknown")
    h.rec.observe("tail", process="early", events=[[1, "A-1", 1, "a1"]])
    h.rec.nemesis("wal-loss", "heal")  # the crash took a1's commit
    h.append("A-1", ["a1"], created=True, retry_of=first)
    h.rec.nemesis("wal-loss", "end")
    h.reads({"A-1": ["a1"]})

    verdict = check(h.entries())

    assert verdict.ok, verdict.summary()


def test_an_op_in_flight_when_a_fault_began_counts_under_that_fault() -> None:
    h = History()
    h.rec.nemesis("none", "inject")
    h.rec.nemesis("none", "heal")
    h.rec.nemesis("none", "end")
    op = h.rec.invoke("w1", "A-1", "any", [("a1", 1)])  # invoked between faults...
    h.rec.nemesis("cut", "inject")
    h.rec.unknown(op, "OutcomeUnknown")  # ...its reply lost to the cut
    h.rec.nemesis("cut", "heal")
    h.rec.nemesis("cut", "end")
    before = h.append("A-1", ["a0"], "unknown")  # invoked and settled after every fault
    h.append("A-1", ["a0"], created=False, retry_of=before)
    h.reads({"A-1": ["a1", "a0"]})

    by_name = {p.name: p for p in check(h.entries()).phases}

    assert by_name["cut"].unknown == 1
    assert by_name["none"].unknown == 0
    assert by_name[BETWEEN].unknown == 1


def test_a_hole_in_a_stream_is_a_version_gap() -> None:
    h = History()
    h.append("A-1", ["a1"])
    h.append("A-1", ["a3"], from_version=3)
    h.rec.observe("stream", stream="A-1", events=[[1, "a1"], [3, "a3"]])

    assert kinds(h.entries()) == {"version_gap"}


def test_a_hole_in_all_is_a_gap_and_a_stream_out_of_order_in_all_is_caught() -> None:
    h = History()
    h.append("A-1", ["a1", "a2"])
    h.reads({"A-1": ["a1", "a2"]}, all_order=[("A-1", "a2"), ("A-1", "a1")])
    assert kinds(h.entries()) == {"order"}

    h = History()
    h.append("A-1", ["a1", "a2"])
    h.rec.observe("stream", stream="A-1", events=[[1, "a1"], [2, "a2"]])
    h.rec.observe("all", events=[[1, "A-1", 1, "a1"], [3, "A-1", 2, "a2"]])
    assert kinds(h.entries()) == {"all_gap"}


def test_a_tailing_reader_that_jumps_a_position_is_caught() -> None:
    h = History()
    h.append("A-1", ["a1", "a2", "a3"])
    h.reads({"A-1": ["a1", "a2", "a3"]})
    h.rec.observe("tail", process="tail2", events=[[1, "A-1", 1, "a1"]])
    h.rec.observe("tail", process="tail2", events=[[3, "A-1", 3, "a3"]])

    assert kinds(h.entries()) == {"tail_skip"}


def test_a_tail_that_saw_another_event_at_a_position_is_caught() -> None:
    h = History()
    h.append("A-1", ["a1"])
    h.append("B-1", ["b1"])
    h.reads({"A-1": ["a1"], "B-1": ["b1"]})
    h.rec.observe("tail", process="tail2", events=[[1, "B-1", 1, "b1"]])

    assert kinds(h.entries()) == {"tail_mismatch"}


def test_a_subscription_that_misses_repeats_or_reorders_is_caught() -> None:
    h = History()
    h.append("A-1", ["a1", "a2"])
    h.reads({"A-1": ["a1", "a2"]})
    h.rec.observe("delivered", process="sub", events=[["A-1", 2, "a2"], ["A-1", 1, "a1"]])
    assert kinds(h.entries()) == {"order"}

    h.rec.observe("delivered", process="sub", events=[["A-1", 1, "a1"], ["A-1", 1, "a1"]])
    assert kinds(h.entries()) == {"duplicate", "lost"}


def test_a_projection_that_differs_from_the_model_is_caught() -> None:
    h = History()
    h.append("A-1", ["a1", "a2"])  # n = 1, 2
    h.reads({"A-1": ["a1", "a2"]})
    h.rec.observe("projection", process="proj", state={"A-1": [2, 3, 2]})
    assert check(h.entries()).ok

    h.rec.observe("projection", process="proj", state={"A-1": [2, 4, 2]})
    assert kinds(h.entries()) == {"projection"}


def test_loss_during_a_fault_that_allows_it_by_setting_is_reported_apart() -> None:
    h = History()
    h.rec.nemesis("wal-loss", "inject", loses_acknowledged=True)
    h.append("A-1", ["a1"])
    h.rec.nemesis("wal-loss", "heal")
    h.rec.nemesis("wal-loss", "end")
    h.append("A-1", ["a2"], from_version=1)
    h.reads({"A-1": ["a2"]})

    verdict = check(h.entries())

    assert verdict.ok, verdict.summary()
    assert verdict.counts["lost_by_setting"] == 1
    wal = next(p for p in verdict.phases if p.name == "wal-loss")
    assert (wal.lost, wal.lost_by_setting, wal.acknowledged) == (0, 1, 1)


def test_the_projection_model_leaves_out_what_a_fault_lost_by_setting() -> None:
    h = History()
    h.rec.nemesis("wal-loss", "inject", loses_acknowledged=True)
    h.append("A-1", ["a1"])  # n = 1, lost with the WAL
    h.rec.nemesis("wal-loss", "heal")
    h.rec.nemesis("wal-loss", "end")
    h.append("A-1", ["a2", "a3"], from_version=1)  # n = 1, 2: reuses version 1
    h.reads({"A-1": ["a2", "a3"]})
    h.rec.observe("projection", process="proj", state={"A-1": [2, 3, 2]})

    assert check(h.entries()).ok, check(h.entries()).summary()


def _reissued_history(held_offset: int) -> History:
    """A crash lost a1's commit and handed its xid 7 out again to the append of a2; the final
    $all holds the message at ``held_offset`` of partition 0 (a1's copy is at 10, a2's at 12)."""
    h = History()
    h.rec.nemesis("wal-loss", "inject", loses_acknowledged=True)
    h.append("A-1", ["a1"])  # acknowledged, its WAL lost with the crash
    h.rec.nemesis("wal-loss", "heal")
    h.append("A-1", ["a2"], from_version=1)
    h.rec.observe(
        "reissued",
        fault="wal-loss",
        messages=[[7, "w-old", "a1", 0, 10, "before"], [7, "w-new", "a2", 0, 12, "after"]],
    )
    h.rec.nemesis("wal-loss", "end")
    event = {10: "a1", 12: "a2"}[held_offset]
    h.rec.observe("stream", stream="A-1", events=[[1, event]])
    h.rec.observe("all", events=[[1, "A-1", 1, event, 0, held_offset]])
    return h


def test_the_message_of_a_transaction_whose_xid_was_handed_out_again_is_never_real() -> None:
    verdict = check(_reissued_history(held_offset=12).entries())  # the index took a2: right
    assert verdict.ok, verdict.summary()
    assert verdict.counts["xids_reissued"] == 1
    assert verdict.counts["reissued_read_after"] == 1
    assert verdict.counts["reissued_read_before"] == 0

    # An index that took a1's message for real (a verdict by xid: xid 7 did commit, as a2's).
    verdict = check(_reissued_history(held_offset=10).entries())
    phantoms = [v for v in verdict.violations if v.kind == "phantom"]
    assert len(phantoms) == 1 and "handed out again" in phantoms[0].detail
    assert verdict.counts["reissued_read_before"] == 1


def test_loss_of_what_was_acknowledged_before_such_a_fault_is_a_violation() -> None:
    h = History()
    h.append("A-1", ["a0"])  # durable: acknowledged before the setting was relaxed
    h.rec.nemesis("wal-loss", "inject", loses_acknowledged=True)
    h.append("A-1", ["a1"], from_version=2)
    h.rec.nemesis("wal-loss", "heal")
    h.rec.nemesis("wal-loss", "end")
    h.reads({"A-1": []})

    verdict = check(h.entries())

    assert {v.event for v in verdict.violations if v.kind == "lost"} == {"a0"}
    assert verdict.counts["lost_by_setting"] == 1


def test_loss_during_an_ordinary_fault_is_attributed_to_it() -> None:
    h = History()
    h.rec.nemesis("kill", "inject")
    h.append("A-1", ["a1"])
    h.rec.nemesis("kill", "heal")
    h.rec.nemesis("kill", "end")
    h.reads({"A-1": []})

    verdict = check(h.entries())

    kill = next(p for p in verdict.phases if p.name == "kill")
    assert kill.lost >= 1
    assert not verdict.ok


def test_recovery_times_come_from_the_failures_and_the_tail() -> None:
    h = History()
    h.rec.nemesis("kill", "inject")  # t = 0.01
    h.append("A-1", ["a1"], "fail")  # t 0.02-0.03
    h.t = 2.0
    h.append("A-1", ["a2"])  # acknowledged at 2.02
    h.rec.nemesis("kill", "heal")
    h.rec.nemesis("kill", "end")
    h.t = 4.0
    h.reads({"A-1": ["a2"]})  # the tail sees a2 at 4.01: 2 s after its ack

    kill = next(p for p in check(h.entries()).phases if p.name == "kill")

    assert kill.writes_recovered_s == pytest.approx(2.01, abs=0.01)
    assert kill.reads_recovered_s == pytest.approx(4.0, abs=0.05)
    assert kill.max_read_lag_s == pytest.approx(2.0, abs=0.05)


def test_delivery_recovery_comes_from_the_projections_delivery_times() -> None:
    h = History()
    h.rec.nemesis("rebalance", "inject")  # t = 0.01
    h.append("A-1", ["a1"])  # acknowledged at 0.03
    h.t = 1.0
    h.append("A-1", ["a2"], from_version=2)  # acknowledged at 1.02
    h.rec.nemesis("rebalance", "heal")
    h.rec.nemesis("rebalance", "end")
    h.reads({"A-1": ["a1", "a2"]})
    # a1 delivered at once, a2 only 6 s after its acknowledgement (a partition held meanwhile)
    delivered = [["A-1", 1, "a1", 0.2], ["A-1", 2, "a2", 7.02]]
    h.rec.observe("delivered", process="sub", events=delivered)

    verdict = check(h.entries())
    row = next(p for p in verdict.phases if p.name == "rebalance")

    assert verdict.ok, verdict.summary()
    assert row.deliveries_recovered_s == pytest.approx(7.01, abs=0.01)
    assert row.max_delivery_lag_s == pytest.approx(6.0, abs=0.01)


def test_deliveries_without_times_leave_the_delivery_figures_out() -> None:
    h = History()
    h.rec.nemesis("kill", "inject")
    h.append("A-1", ["a1"])
    h.rec.nemesis("kill", "end")
    h.reads({"A-1": ["a1"]})  # deliveries as [stream, version, id]

    row = next(p for p in check(h.entries()).phases if p.name == "kill")

    assert row.deliveries_recovered_s is None and row.max_delivery_lag_s is None


def test_every_kind_of_violation_has_a_test_here() -> None:
    source = Path(__file__).read_text(encoding="utf-8")
    assert [k for k in KINDS if f'"{k}"' not in source] == []


def test_a_history_written_as_json_lines_is_checked_the_same_when_loaded(tmp_path: Path) -> None:
    from verify.history import load

    path = tmp_path / "history.jsonl"
    rec = Recorder(path)
    op = rec.invoke("w1", "A-1", "no_stream", [("a1", 5)])
    rec.ok(op, from_version=1, to_version=1, created=True)
    lost = rec.invoke("w1", "A-1", 1, [("a2", 6)])
    rec.ok(lost, from_version=2, to_version=2, created=True)
    rec.observe("stream", stream="A-1", events=[[1, "a1"]])
    rec.close()

    loaded = load(path)

    assert loaded == rec.entries()
    assert {v.kind for v in check(loaded).violations} == {"lost"}
