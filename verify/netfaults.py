"""The network faults and the PostgreSQL failover (issue 13, item 4), as nemeses
(:class:`verify.nemesis.Nemesis`) over a proxied :class:`verify.network.Topology`.

- :class:`CutWriterKafka` - the network between the writer and every Kafka node cut *before*
  the batch is produced, *during* its acks (every message handed to the producer, reports
  pending) or *after* them (acks in, COMMIT not yet sent);
- :class:`CutWriterPostgres` - the network between the writer and PostgreSQL cut *before
  COMMIT* or *between COMMIT and its reply* (the COMMIT reaches the server, the answer never
  comes back);
- :class:`DegradeWriterLinks` - the writer's links to every Kafka node and to PostgreSQL
  degraded for the hold, under load: ``latency`` (with jitter), ``bandwidth`` or ``reset_peer``
  (TCP resets of some of the connections), one direction only where the mode says so;
- :class:`FailoverPostgres` - the primary SIGKILLed (postmaster and every backend), the
  synchronous standby promoted after a detection delay; the clients' multi-host URL finds it.

A cut's moment is one of the writer's protocol steps (:mod:`writer.faults`, in this process:
the workload's in-process writers), drawn at random, and the cut is made from inside that step,
so it lands exactly there in the batch that reached it while the other writers' batches are
wherever they are. How the link breaks is drawn at random too:

- ``disable``: the proxies disabled - connections closed at once, new ones refused;
- ``drop_replies`` / ``drop_requests``: a ``timeout`` toxic on one direction - bytes dropped,
  the connection kept open (Kafka: librdkafka's own timeouts must notice) or, for PostgreSQL,
  closed after :data:`PG_CLOSE_AFTER_MS` (libpq has no read timeout: a reply dropped for ever
  would hold the writer for ever, see docs/faults.md).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence

from dev import pg_standby
from dev.toxiproxy import Stream
from verify.nemesis import FaultContext
from verify.network import Topology
from writer import faults

logger = logging.getLogger("kafkastore.verify")

ARM_TIMEOUT = 10.0
"""How long a cut waits for a batch to reach its step before it is made anyway."""

PG_CLOSE_AFTER_MS = 1000
"""A PostgreSQL link whose bytes are dropped is closed this long after the toxic arrives."""

KAFKA_MOMENTS = {"before_acks": "locked", "during_acks": "produced", "after_acks": "acked"}
PG_MOMENTS = {"before_commit": "before_commit", "commit_reply": "commit"}


@contextlib.contextmanager
def _at_step(step: str, action: Callable[[], None], ctx: FaultContext) -> Iterator[None]:
    """Run ``action`` once, inside the first batch that reaches protocol step ``step``; wait at
    most :data:`ARM_TIMEOUT` for it (then act at once)."""
    fired = threading.Event()
    lock = threading.Lock()

    def hook(name: str) -> None:
        if name != step:
            return
        with lock:
            if fired.is_set():
                return
            try:
                action()
            finally:
                fired.set()

    with faults.injected(hook):
        if not fired.wait(ARM_TIMEOUT):
            ctx.note("no_batch_reached_step_within_s", ARM_TIMEOUT)
            with lock:
                if not fired.is_set():
                    action()
                    fired.set()
        yield


class _Cut:
    """A cut of one role's links to one kind of server (see the module docstring)."""

    name = "cut"
    hold: tuple[float, float] = (2.0, 14.0)
    """Both sides of the writer's delivery timeout (10 s): a short cut heals before the batch
    gives up, a long one outlasts it."""
    loses_acknowledged = False
    moments: dict[str, str] = {}
    """The moments a cut may be made at: name -> the writer's protocol step."""
    modes: Sequence[str] = ()

    def __init__(
        self, topology: Topology, *, moment: str | None = None, role: str = "writer"
    ) -> None:
        if moment is not None and moment not in self.moments:
            raise ValueError(f"{self.name}: moment {moment!r} is not one of {sorted(self.moments)}")
        self.topology = topology
        self.moment = moment
        """The moment to cut at (one of :attr:`moments`); None: drawn at random."""
        self.role = role
        if moment is not None:
            self.name = f"{self.name} {moment}"

    def modes_at(self, moment: str) -> Sequence[str]:
        """The ways the link may break at ``moment``."""
        del moment
        return self.modes

    def break_link(self, mode: str, moment: str) -> None:
        raise NotImplementedError

    def inject(self, ctx: FaultContext) -> None:
        moment = self.moment or ctx.rng.choice(sorted(self.moments))
        mode = ctx.rng.choice(list(self.modes_at(moment)))
        ctx.note("moment", moment)
        ctx.note("mode", mode)
        started = time.monotonic()
        with _at_step(self.moments[moment], lambda: self.break_link(mode, moment), ctx):
            pass
        ctx.note("armed_s", round(time.monotonic() - started, 3))

    def heal(self, ctx: FaultContext) -> None:
        del ctx
        self.topology.heal()


class CutWriterKafka(_Cut):
    """The writer cut from every Kafka node, before, during or after a batch's acks."""

    name = "writer-kafka-cut"
    moments = KAFKA_MOMENTS
    modes = ("disable", "drop_replies", "drop_requests")

    def break_link(self, mode: str, moment: str) -> None:
        del moment
        for proxy in self.topology.links[self.role].kafka.values():
            if mode == "disable":
                proxy.set_enabled(False)
            elif mode == "drop_replies":
                proxy.black_hole(stream="downstream")
            else:
                proxy.black_hole(stream="upstream")


class CutWriterPostgres(_Cut):
    """The writer cut from PostgreSQL before COMMIT, or between COMMIT and its reply."""

    name = "writer-postgres-cut"
    moments = PG_MOMENTS
    modes = ("disable", "drop")

    def modes_at(self, moment: str) -> Sequence[str]:
        # The step runs just before COMMIT is sent: disabling the proxy there would close the
        # connection before COMMIT, so between COMMIT and its reply only dropping the reply is
        # that cut.
        return ("drop",) if moment == "commit_reply" else self.modes

    def break_link(self, mode: str, moment: str) -> None:
        # Between COMMIT and its reply only the replies are dropped (the COMMIT arrives and
        # commits); before COMMIT the requests are (the server never sees it).
        stream: Stream = "downstream" if moment == "commit_reply" else "upstream"
        for proxy in self.topology.links[self.role].postgres:
            if mode == "disable":
                proxy.set_enabled(False)
            else:
                proxy.black_hole(stream=stream, close_after_ms=PG_CLOSE_AFTER_MS)


DEGRADE_MODES = ("latency", "bandwidth", "reset_peer")

RESET_TOXICITY = 0.5
"""The share of the writer's connections a ``reset_peer`` degradation resets (each connection,
and each new one, drawn apart): the others carry on, so batches fail at random steps while
appends keep being acknowledged."""


class DegradeWriterLinks:
    """The writer's links to every Kafka node and to PostgreSQL degraded for the hold, under
    load (toxics of :mod:`dev.toxiproxy`; ``upstream`` is the writer's requests, ``downstream``
    the servers' replies):

    - ``latency``: Kafka 100-300 ms with jitter of half that, both ways; PostgreSQL's replies
      only, 20-80 ms with jitter of half that;
    - ``bandwidth``: each connection's requests to Kafka limited to 1 or 2 KB/s (one way: its
      replies are not; below what the load sends it, compressed), each one's replies from
      PostgreSQL to 4 or 8 KB/s;
    - ``reset_peer``: a TCP RST on :data:`RESET_TOXICITY` of the connections - to Kafka as a
      request arrives (0-200 ms after), from PostgreSQL as a reply arrives (the statement ran,
      its answer never comes: when that is COMMIT's, the writer settles it through the marker).
    """

    name = "writer-links-degraded"
    hold: tuple[float, float] = (4.0, 8.0)
    loses_acknowledged = False

    def __init__(
        self, topology: Topology, *, mode: str | None = None, role: str = "writer"
    ) -> None:
        if mode is not None and mode not in DEGRADE_MODES:
            raise ValueError(f"{self.name}: mode {mode!r} is not one of {DEGRADE_MODES}")
        self.topology = topology
        self.mode = mode
        self.role = role
        if mode is not None:
            self.name = f"{self.name} {mode}"

    def inject(self, ctx: FaultContext) -> None:
        mode = self.mode or ctx.rng.choice(DEGRADE_MODES)
        ctx.note("mode", mode)
        links = self.topology.links[self.role]
        rng = ctx.rng
        if mode == "latency":
            kafka_ms, pg_ms = rng.randint(100, 300), rng.randint(20, 80)
            ctx.note("kafka_latency_ms", kafka_ms)
            ctx.note("postgres_reply_latency_ms", pg_ms)
            both: tuple[Stream, ...] = ("upstream", "downstream")
            for proxy in links.kafka.values():
                for stream in both:
                    proxy.latency(kafka_ms, jitter=kafka_ms // 2, stream=stream)
            for proxy in links.postgres:
                proxy.latency(pg_ms, jitter=pg_ms // 2, stream="downstream")
        elif mode == "bandwidth":
            kafka_rate, pg_rate = rng.choice((1, 2)), rng.choice((4, 8))
            ctx.note("kafka_request_kb_s", kafka_rate)
            ctx.note("postgres_reply_kb_s", pg_rate)
            for proxy in links.kafka.values():
                proxy.bandwidth(kafka_rate, stream="upstream")
            for proxy in links.postgres:
                proxy.bandwidth(pg_rate, stream="downstream")
        else:
            after_ms = rng.randint(0, 200)
            ctx.note("kafka_reset_after_ms", after_ms)
            ctx.note("toxicity", RESET_TOXICITY)
            for proxy in links.kafka.values():
                proxy.reset_peer(after_ms=after_ms, stream="upstream", toxicity=RESET_TOXICITY)
            for proxy in links.postgres:
                proxy.reset_peer(stream="downstream", toxicity=RESET_TOXICITY)

    def heal(self, ctx: FaultContext) -> None:
        del ctx
        self.topology.heal()


class FailoverPostgres:
    """SIGKILL the primary while writers run; promote the synchronous standby after the hold
    (a failover manager's detection time)."""

    name = "postgres-failover"
    hold: tuple[float, float] = (1.0, 3.0)
    loses_acknowledged = False

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self._killed_at = 0.0

    def inject(self, ctx: FaultContext) -> None:
        moment = ctx.rng.choice(["anywhere", "commit"])
        ctx.note("moment", moment)
        primary = self.topology.primary

        def kill() -> None:
            pg_standby.kill(primary)
            self._killed_at = time.monotonic()

        if moment == "commit":
            with _at_step("commit", kill, ctx):  # COMMITs in flight on the primary
                pass
        else:
            kill()
        ctx.note("killed_primary_port", primary.port)

    def heal(self, ctx: FaultContext) -> None:
        if self.topology.failed_over or not self._killed_at:
            return
        started = time.monotonic()
        pg_standby.promote(self.topology.standby)
        promoted = time.monotonic()
        self.topology.failed_over = True
        ctx.note("promote_s", round(promoted - started, 3))
        url = self.topology.database_url("writer")
        writable = pg_standby.wait_writable(url, timeout=60.0)
        ctx.note("writable_after_kill_s", round(promoted + writable - self._killed_at, 3))
