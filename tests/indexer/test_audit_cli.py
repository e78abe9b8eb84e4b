"""``kafkastore audit`` and ``kafkastore read`` against a store of their own (own database)."""

from __future__ import annotations

import io
from collections.abc import Callable

import orjson
import psycopg

from indexer import audit, cli
from kafkastore.config import Settings
from tests.indexer.helpers import running_indexer, wait_for_count
from tests.support import unique
from tests.support.wire import ManualWriter


def test_audit_passes_on_a_healthy_store_and_names_what_is_wrong_on_a_tampered_one(
    make_settings: Callable[..., Settings], own_database: str
) -> None:
    settings = make_settings(database_url=own_database)
    a, b = unique("Audit"), unique("Audit")
    with ManualWriter(settings) as w:
        w.append(a, [("Opened", {"n": 1}), ("Noted", {"n": 2})])
        w.phantom_aborted(b, [("Ghost", {})])
        w.phantom_committed_xid(b, [("Ghost", {})])
        w.append(b, [("Opened", {})])
        w.append(a, [("Closed", {})])
    with running_indexer(settings) as ix:
        assert wait_for_count(own_database, [a, b], 4, indexer=ix) == 4
    healthy = io.StringIO()
    assert audit.run(settings, timeout=60, out=healthy) == 0, healthy.getvalue()
    assert "OK" in healthy.getvalue()

    with psycopg.connect(own_database) as conn:
        conn.execute(
            "UPDATE events SET event_id = gen_random_uuid() WHERE stream_id = %s AND version = 2",
            (a,),
        )
    tampered = io.StringIO()
    assert audit.run(settings, timeout=60, out=tampered) == 1
    report = tampered.getvalue()
    assert "FAIL index row without a marker: 1" in report
    assert "FAIL marker event missing from the index: 1" in report
    assert f"{a} v2" in report


def test_read_command_prints_one_json_line_per_event(settings: Settings) -> None:
    stream = unique("Cli")
    with ManualWriter(settings) as w:
        w.append(stream, [("A", {"n": 1}), ("B", {"n": 2}), ("C", {"n": 3})])
    with running_indexer(settings) as ix:
        assert wait_for_count(settings.database_url, [stream], 3, indexer=ix) == 3
    out = io.StringIO()
    options = cli.ReadOptions(stream_id=stream, limit=2, backward=True)
    assert cli.read(options, settings, out) == 0
    lines = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert [(e["version"], e["type"], e["data"]) for e in lines] == [
        (3, "C", {"n": 3}),
        (2, "B", {"n": 2}),
    ]
