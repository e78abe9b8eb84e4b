"""Live subscriptions over HTTP (Server-Sent Events) through a real ``kafkastore serve``."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from consumers import sse_tail
from indexer import scavenge
from kafkastore import schema
from kafkastore.client import EventStore
from kafkastore.config import Settings
from kafkastore.records import NewEvent
from tests.indexer.sse_client import events, subscribe
from tests.support import ServiceProcess, unique
from tests.support.databases import temporary_database
from tests.support.serving import serve_process, serving
from tests.support.topics import module_settings
from tests.support.wire import ManualWriter


@pytest.fixture(scope="module")
def store_settings(kafka_bootstrap: str, database_url: str) -> Iterator[Settings]:
    """One topic and one indexer for this module; every test uses its own streams."""
    yield from module_settings(kafka_bootstrap, database_url)


def _serve(settings: Settings, logs_dir: Path, name: str, *args: str) -> tuple[ServiceProcess, str]:
    proc, url = serve_process(settings, logs_dir / f"sse-{name}-{settings.topic}.log", *args)
    return proc.start(), url


@pytest.fixture(scope="module")
def stack(store_settings: Settings, logs_dir: Path) -> Iterator[str]:
    """An indexer and an API with the default settings; the API's base URL."""
    with serving(
        store_settings,
        logs_dir / f"sse-api-{store_settings.topic}.log",
        indexer_log=logs_dir / f"sse-indexer-{store_settings.topic}.log",
    ) as url:
        yield url


def append(url: str, stream: str, *types: str, data: Any = None) -> dict[str, Any]:
    body = {"events": [{"type": t, "data": data if data is not None else {"t": t}} for t in types]}
    response = httpx.post(f"{url}/streams/{stream}", json=body, timeout=30)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def category_positions(url: str, category: str) -> list[int]:
    response = httpx.get(f"{url}/categories/{category}", params={"limit": 10000}, timeout=30)
    return [e["global_position"] for e in response.json()["events"]]


def test_a_category_subscription_catches_up_then_receives_live_events(stack: str) -> None:
    category = unique("Cart").replace("-", "")
    first = append(stack, f"{category}-1", "A", "B", "C")
    with subscribe(f"{stack}/subscribe/categories/{category}") as feed:
        caught_up = events(feed, 3)
        append(stack, f"{category}-2", "D", "E")
        live = events(feed, 2)
    assert [m.event["type"] for m in caught_up + live] == ["A", "B", "C", "D", "E"]
    assert [m.event["id"] for m in caught_up] == [e["id"] for e in first["events"]]
    positions = [int(m.id or 0) for m in caught_up + live]
    assert positions == [m.event["global_position"] for m in caught_up + live]
    assert positions == category_positions(stack, category)


def test_a_stream_subscription_resumed_with_last_event_id_gives_exactly_the_rest(
    stack: str,
) -> None:
    stream = unique("Order")
    append(stack, stream, *(f"E{i}" for i in range(1, 8)))
    with subscribe(f"{stack}/subscribe/streams/{stream}") as feed:
        seen = events(feed, 3)
    assert [m.id for m in seen] == ["1", "2", "3"]
    headers = {"Last-Event-ID": seen[-1].id or ""}
    with subscribe(f"{stack}/subscribe/streams/{stream}", headers=headers) as feed:
        rest = events(feed, 4)
        append(stack, stream, "E8")
        (live,) = events(feed, 1)
    assert [m.id for m in rest] == ["4", "5", "6", "7"]
    assert [m.event["version"] for m in rest] == [4, 5, 6, 7]
    assert (live.id, live.event["type"]) == ("8", "E8")


def test_an_all_subscription_with_a_type_filter_sends_only_that_type(stack: str) -> None:
    wanted = unique("Wanted").replace("-", "")
    stream = unique("Mixed")
    append(stack, stream, "Other", wanted, "Other", wanted)
    with subscribe(f"{stack}/subscribe/all?type={wanted}") as feed:
        got = events(feed, 2)
    assert [m.event["type"] for m in got] == [wanted, wanted]
    assert [m.event["version"] for m in got] == [2, 4]


def test_a_phantom_produced_straight_to_the_topic_never_appears(
    stack: str, store_settings: Settings
) -> None:
    category = unique("Ghost").replace("-", "")
    with subscribe(f"{stack}/subscribe/categories/{category}") as feed:
        with ManualWriter(store_settings) as w:
            w.phantom_committed_xid(f"{category}-1", [("Phantom", {})])
            w.phantom_aborted(f"{category}-2", [("Phantom", {})])
        append(stack, f"{category}-3", "Real")
        (real,) = events(feed, 1)
        append(stack, f"{category}-3", "Second")
        (second,) = events(feed, 1)
    assert (real.event["type"], second.event["type"]) == ("Real", "Second")
    assert int(second.id or 0) > int(real.id or 0)


def test_twenty_subscribers_see_every_position_of_eight_appenders_once_in_order(
    stack: str,
) -> None:
    category = unique("Race").replace("-", "")
    appenders, per_appender, subscribers = 8, 10, 20
    total = appenders * per_appender
    seen: list[list[int]] = [[] for _ in range(subscribers)]
    ready = threading.Barrier(subscribers + 1)
    errors: list[BaseException] = []

    def follow(i: int) -> None:
        try:
            with subscribe(f"{stack}/subscribe/categories/{category}", timeout=60) as feed:
                ready.wait(30)
                seen[i] = [int(m.id or 0) for m in events(feed, total)]
        except BaseException as exc:
            errors.append(exc)

    def write(i: int) -> None:
        for n in range(per_appender):
            append(stack, f"{category}-{i}", f"N{n}")

    followers = [threading.Thread(target=follow, args=(i,)) for i in range(subscribers)]
    for t in followers:
        t.start()
    ready.wait(30)
    writers = [threading.Thread(target=write, args=(i,)) for i in range(appenders)]
    for t in writers:
        t.start()
    for t in writers + followers:
        t.join(120)
    assert not errors, errors
    expected = category_positions(stack, category)
    assert len(expected) == total
    for positions in seen:
        assert positions == expected  # every position once, in order, nothing else


def test_an_idle_subscription_receives_heartbeat_comments(
    store_settings: Settings, stack: str, logs_dir: Path
) -> None:
    assert Settings().sse_heartbeat <= 15.0
    api, url = _serve(store_settings.replace(sse_heartbeat=1.0), logs_dir, "heartbeat")
    try:
        started = time.monotonic()
        with subscribe(f"{url}/subscribe/streams/{unique('Idle')}") as feed:
            comments = []
            for message in feed:
                if message.comment is not None:
                    comments.append((message.comment, time.monotonic() - started))
                    if len(comments) == 2:
                        break
        assert [c for c, _ in comments] == ["heartbeat", "heartbeat"]
        assert comments[-1][1] < 5.0
    finally:
        api.stop()


def test_subscribers_beyond_the_limit_are_answered_503_with_retry_after(
    store_settings: Settings, stack: str, logs_dir: Path
) -> None:
    api, url = _serve(store_settings.replace(sse_max_subscribers=2), logs_dir, "limit")
    try:
        stream = unique("Limited")
        with (
            subscribe(f"{url}/subscribe/streams/{stream}"),
            subscribe(f"{url}/subscribe/streams/{stream}"),
        ):
            response = httpx.get(f"{url}/subscribe/streams/{stream}", timeout=10)
            assert response.status_code == 503
            assert response.json()["error"] == "unavailable"
            assert int(response.headers["Retry-After"]) >= 1
        with subscribe(f"{url}/subscribe/streams/{stream}") as feed:
            append(url, stream, "AfterTheOthersLeft")
            (event,) = events(feed, 1)
        assert event.event["type"] == "AfterTheOthersLeft"
    finally:
        api.stop()


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_client_that_stops_reading_is_cut_off_others_go_on_and_memory_stays_bounded(
    store_settings: Settings, stack: str, logs_dir: Path
) -> None:
    # Pages of 10 of these 200 KB events (the default 50 makes a page in flight ~10 MB, held
    # two or three times over while it is encoded: 31-45 MiB of transient growth in loaded CI
    # runs, too close to what an unbounded buffer would hold). Users with large events set it so.
    api, url = _serve(store_settings.replace(sse_page_events=10), logs_dir, "slow")
    stalled: socket.socket | None = None
    try:
        stream = unique("Big")
        host, port = url.removeprefix("http://").split(":")
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect((host, int(port)))
        stalled.sendall(f"GET /subscribe/streams/{stream} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert b"200 OK" in stalled.recv(1024)
        # Two subscribers of the same feed that do read: the stalled one must not stall them.
        fast: list[list[int]] = [[], []]
        ready = threading.Barrier(3)

        def follow(i: int) -> None:
            with subscribe(f"{url}/subscribe/streams/{stream}", timeout=120) as feed:
                ready.wait(30)
                fast[i] = [int(m.id or 0) for m in events(feed, 300)]

        readers = [threading.Thread(target=follow, args=(i,)) for i in range(2)]
        for t in readers:
            t.start()
        ready.wait(30)
        assert api.pid is not None
        before = _rss_kib(api.pid)
        blob = "x" * 200_000
        # 60 MB of events for a client that reads none of them, appended from this process so
        # that the server's memory is only what the subscriptions hold.
        started = time.monotonic()
        with EventStore(store_settings).open() as store:
            for _ in range(30):
                store.append(stream, [NewEvent(type="Big", data={"blob": blob})] * 10)
        for t in readers:
            t.join(120)
        took = time.monotonic() - started
        assert fast == [list(range(1, 301))] * 2  # everything, in order, while one stalls
        # ... and before the stalled client was cut off (sse_send_timeout after it stalled):
        # the shared reader never waited for it.
        assert "too slow" not in api.log(200), f"the readers took {took:.1f} s"
        deadline = time.monotonic() + store_settings.sse_send_timeout + 30
        while "too slow" not in api.log(200) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert "too slow" in api.log(200)
        growth_mib = (_rss_kib(api.pid) - before) / 1024
        # Bounded: three mailboxes of at most 4 MiB (indexer.sse_hub.MAILBOX_BYTES), a page in
        # flight (2 MB here) and the allocator's slack. Buffering what the stalled client never
        # read would hold the 57 MiB appended.
        assert growth_mib < 30, f"the server grew by {growth_mib:.0f} MiB"
    finally:
        if stalled is not None:
            stalled.close()  # also when an assertion failed: no socket left to the collector
        api.stop()


def test_server_shutdown_ends_subscriptions_cleanly(
    store_settings: Settings, stack: str, logs_dir: Path
) -> None:
    api, url = _serve(store_settings, logs_dir, "shutdown")
    stream = unique("Closing")
    append(url, stream, "A")
    with subscribe(f"{url}/subscribe/streams/{stream}") as feed:
        events(feed, 1)
        started = time.monotonic()
        stopper = threading.Thread(target=api.stop)
        stopper.start()
        rest = list(feed)  # ends without an error when the server closes the response
        took = time.monotonic() - started
    stopper.join(30)
    assert [m for m in rest if m.data is not None] == []
    assert took < 5.0
    assert "Finished server process" in api.log()


def test_subscriptions_work_through_several_worker_processes(
    store_settings: Settings, stack: str, logs_dir: Path
) -> None:
    api, url = _serve(store_settings, logs_dir, "workers", "--workers", "2")
    try:
        stream = unique("Workers")
        feeds = []
        with (
            subscribe(f"{url}/subscribe/streams/{stream}") as a,
            subscribe(f"{url}/subscribe/streams/{stream}") as b,
        ):
            append(url, stream, "One", "Two")
            feeds = [events(a, 2), events(b, 2)]
        assert [[m.id for m in f] for f in feeds] == [["1", "2"], ["1", "2"]]
    finally:
        api.stop()


def test_openapi_describes_the_subscription_routes(stack: str) -> None:
    spec = httpx.get(f"{stack}/openapi.json", timeout=10).json()
    for path in (
        "/subscribe/all",
        "/subscribe/categories/{category}",
        "/subscribe/streams/{stream_id}",
    ):
        get = spec["paths"][path]["get"]
        assert "text/event-stream" in get["responses"]["200"]["content"]
        assert "Retry-After" in get["responses"]["503"]["headers"]


def _tail_lines(url: str, count: int, *args: str, then: Any = None) -> list[str]:
    """Run ``kafkastore tail --api`` and return its first ``count`` lines."""
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "kafkastore.cli", "tail", "--api", url, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        if then is not None:
            time.sleep(2.0)  # let it find the end of $all and connect
            then()
        assert proc.stdout is not None
        return [proc.stdout.readline().rstrip("\n") for _ in range(count)]
    finally:
        proc.terminate()
        proc.wait(15)
        if proc.stdout is not None:
            proc.stdout.close()


def test_tail_with_api_follows_a_category_from_the_beginning(stack: str) -> None:
    category = unique("Tail").replace("-", "")
    append(stack, f"{category}-1", "A", "B")
    lines = _tail_lines(
        stack,
        3,
        "--category",
        category,
        "--from-beginning",
        then=lambda: append(stack, f"{category}-1", "C"),
    )
    assert [line.split()[1:4] for line in lines] == [
        [f"{category}-1", "v1", "A"],
        [f"{category}-1", "v2", "B"],
        [f"{category}-1", "v3", "C"],
    ]
    assert lines[0].endswith('{"t":"A"}')


def _first_line_after_the_end(url: str, stream: str, *args: str) -> list[str]:
    """The fields of the first line of ``kafkastore tail --api url *args`` (started at the end)
    while events of type "New" are appended to ``stream``."""
    appended = threading.Event()
    done = threading.Event()

    def keep_appending() -> None:
        # The tail finds the end of $all, then subscribes: on a loaded machine that may take
        # longer than any fixed pause, so a "New" event comes every 2 s until one is printed.
        while not done.is_set():
            append(url, stream, "New")
            appended.set()
            done.wait(2.0)

    writer = threading.Thread(target=keep_appending)
    try:
        lines = _tail_lines(url, 1, *args, then=lambda: (writer.start(), None))
    finally:
        done.set()
        if writer.is_alive():
            writer.join(30)
    assert appended.is_set()
    return lines[0].split()


def test_tail_with_api_starts_at_the_end_of_all(stack: str) -> None:
    stream = unique("TailEnd")
    append(stack, stream, "Old", "New")  # v2 is a "New" from before the tail started
    httpx.get(f"{stack}/streams/{stream}", params={"min_version": 2}, timeout=30)  # indexed
    name, version, kind = _first_line_after_the_end(stack, stream, "--type", "New")[1:4]
    assert (name, kind) == (stream, "New")
    assert int(version.removeprefix("v")) >= 3  # not v2: it started at the end of $all


@pytest.fixture(scope="module")
def own_index(
    kafka_bootstrap: str, database_url: str, logs_dir: Path
) -> Iterator[tuple[Settings, str]]:
    """A database of its own (positions from 1, no background scavenger), an indexer and an
    API: settings and the API's URL."""
    with temporary_database(database_url) as url:
        schema.migrate(url)
        for settings in module_settings(kafka_bootstrap, url, scavenge_interval=0.0):
            with serving(settings, logs_dir / f"sse-own-{settings.topic}.log") as api:
                yield settings, api


def test_tail_with_api_starts_at_the_end_despite_hidden_and_scavenged_positions(
    own_index: tuple[Settings, str],
) -> None:
    settings, url = own_index
    category = unique("Holes").replace("-", "")
    append(url, f"{category}-kept", "Kept")  # position 1
    append(url, f"{category}-gone", "G1", "G2", "G3")  # 2-4: deleted, then scavenged
    append(url, f"{category}-old", "Old1", "Old2", "Old3")  # 5-7: readable, before the end
    append(url, f"{category}-dropped", "D1", "D2")  # 8-9: tombstoned, still in the index
    for stream, version in (("gone", 3), ("dropped", 2)):
        httpx.get(f"{url}/streams/{category}-{stream}", params={"min_version": version}, timeout=30)
    with EventStore(settings) as store:
        store.delete_stream(f"{category}-gone")
        assert scavenge.scavenge(settings).rows == 3
        store.delete_stream(f"{category}-dropped", hard=True)
    readable = httpx.get(f"{url}/all", params={"limit": 100}, timeout=30).json()["events"]
    assert [e["global_position"] for e in readable] == [1, 5, 6, 7]
    # The end is past the head (9), whatever holes positions have ...
    assert sse_tail.end_position(url) == 10
    assert sse_tail.end_position(url, "", (category,)) == 10
    # ... so the tail shows none of the old events: "Old1" at 5 comes after a hole at 2.
    fields = _first_line_after_the_end(url, f"{category}-new")
    assert fields[1:4] == [f"{category}-new", "v1", "New"]


def test_tail_with_api_reopens_a_dropped_feed_after_its_last_event(
    store_settings: Settings, stack: str, logs_dir: Path
) -> None:
    import subprocess
    import sys

    api, url = _serve(store_settings, logs_dir, "tail-restart")
    category = unique("Resume").replace("-", "")
    stream = f"{category}-1"
    append(url, stream, "A", "B")
    tail = subprocess.Popen(
        [sys.executable, "-m", "kafkastore.cli", "tail", "--api", url, "--category", category,
         "--from-beginning"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip
    restarted: ServiceProcess | None = None
    assert tail.stdout is not None
    try:
        lines = [tail.stdout.readline() for _ in range(2)]
        api.stop()  # the server ends the feed and goes away
        append(stack, stream, "C")  # through the other API, while this one is down
        restarted = ServiceProcess(
            "serve",
            *api.argv[4:],  # the same port
            env=api.env,
            log_path=logs_dir / f"sse-tail-restarted-{store_settings.topic}.log",
            ready_url=f"{url}/readyz",
        ).start()
        lines.append(tail.stdout.readline())  # C: caught up after Last-Event-ID (B)
        append(url, stream, "D")
        lines.append(tail.stdout.readline())  # D: live again
    finally:
        tail.terminate()
        tail.wait(15)
        tail.stdout.close()
        api.stop()
        if restarted is not None:
            restarted.stop()
    assert [line.split()[1:4] for line in lines] == [
        [stream, f"v{n}", kind] for n, kind in enumerate("ABCD", 1)
    ]  # nothing repeated, nothing skipped


def _sse_reads(url: str) -> float:
    """``kafkastore_sse_reads_total`` of the API at ``url``."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    (line,) = [x for x in text.splitlines() if x.startswith("kafkastore_sse_reads_total ")]
    return float(line.split()[1])


def test_the_feeds_of_quiet_streams_cost_no_read_when_another_stream_is_written(
    own_index: tuple[Settings, str],
) -> None:
    _settings, url = own_index
    streams = [f"{unique('Calm').replace('-', '')}-{i}" for i in range(20)]
    for stream in streams:
        append(url, stream, "Before")
    got: list[list[str]] = [[] for _ in streams]
    errors: list[BaseException] = []

    def follow(i: int) -> None:
        try:
            with subscribe(f"{url}/subscribe/streams/{streams[i]}", timeout=60) as feed:
                for message in feed:
                    if message.data is not None:
                        got[i].append(message.event["type"])
                        if len(got[i]) == 2:
                            return
        except BaseException as exc:
            errors.append(exc)

    followers = [threading.Thread(target=follow, args=(i,)) for i in range(len(streams))]
    for t in followers:
        t.start()
    deadline = time.monotonic() + 60
    while not all(got) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # each caught up and joined its reader at the head
    before = _sse_reads(url)
    append(url, streams[0], "After")
    while len(got[0]) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # any other reader woken by the commit would have read by now
    assert _sse_reads(url) - before == 1  # the written stream's reader; not the 19 others
    for stream in streams[1:]:
        append(url, stream, "After")
    for t in followers:
        t.join(60)
    assert not errors, errors
    assert got == [["Before", "After"]] * len(streams)
