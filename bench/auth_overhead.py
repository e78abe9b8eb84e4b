"""What auth costs an append: the same HTTP append workload against ``kafkastore serve`` with
auth off and with auth on, in one run (``python -m bench.auth_overhead [--seconds S]``).

One run's database and topic (:func:`bench.environment.prepare`: the checkout's dev stack, else
one started for the run), two API processes on them — ``KAFKASTORE_AUTH=off`` and ``on`` (an
admin token from the run's database) — and, in alternating rounds (off, on, off, on), 8
keep-alive connections each appending 10 ~200-byte events per request to streams of their
own for ``--seconds``. Prints events/s and latency per round and the on/off ratio of the
totals; the rounds alternate so that the machine's other load falls on both alike.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import time
import uuid
from urllib.parse import urlsplit

import orjson

from bench.environment import SERVICE_READY_TIMEOUT, prepare
from bench.httpclient import Connection
from bench.payload import EVENT_TYPE, event_data
from dev import services
from dev.process import LOCALHOST, free_port, terminate
from kafkastore import authstore
from kafkastore.config import Settings

CONNECTIONS = 8
EVENTS_PER_APPEND = 10


async def _round(url: str, seconds: float, token: str | None) -> tuple[int, list[float]]:
    """Events appended and each request's latency (seconds) in ``seconds`` of load."""
    parts = urlsplit(url)
    headers = {"authorization": f"Bearer {token}"} if token else {}
    seq = itertools.count()
    latencies: list[float] = []
    appended = 0
    deadline = time.monotonic() + seconds

    async def producer(n: int) -> None:
        nonlocal appended
        conn = Connection(parts.hostname or LOCALHOST, parts.port or 80, headers=headers)
        stream = f"auth-bench-{uuid.uuid4().hex[:8]}-{n}"
        try:
            while time.monotonic() < deadline:
                body = orjson.dumps(
                    {
                        "events": [
                            {"type": EVENT_TYPE, "data": event_data(next(seq))}
                            for _ in range(EVENTS_PER_APPEND)
                        ]
                    }
                )
                started = time.monotonic()
                answer = await conn.request("POST", f"/streams/{stream}", body)
                if answer.status != 201:
                    raise RuntimeError(f"HTTP {answer.status}: {answer.body[:200]!r}")
                latencies.append(time.monotonic() - started)
                appended += EVENTS_PER_APPEND
        finally:
            await conn.close()

    await asyncio.gather(*(producer(n) for n in range(CONNECTIONS)))
    return appended, latencies


def _ms(values: list[float], q: float) -> float:
    return 1000 * statistics.quantiles(values, n=100)[int(q) - 1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds per round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per mode (alternating)")
    args = parser.parse_args()
    run_id = f"auth{uuid.uuid4().hex[:8]}"
    env = prepare(Settings.from_env(), run_id, services_given=False)
    secured = None
    try:
        assert env.api_url and env.api is not None
        authstore.add_user(env.settings.database_url, "bench-admin", ("admin",))
        _, token = authstore.create_token(env.settings.database_url, "bench-admin")
        port = free_port()
        secured = services.start(
            "api-auth",
            "serve",
            ["--host", LOCALHOST, "--port", str(port)],
            env=env.service_env(KAFKASTORE_AUTH="on"),
            log_path=env.logs / "api-auth.log",
        )
        secured_url = f"http://{LOCALHOST}:{port}"
        services.wait_http_ok(
            f"{secured_url}/readyz", timeout=SERVICE_READY_TIMEOUT, service=secured
        )
        modes = {"off": (env.api_url, None), "on": (secured_url, token)}
        asyncio.run(_round(env.api_url, 3.0, None))  # warm-up, both
        asyncio.run(_round(secured_url, 3.0, token))
        totals: dict[str, list[float]] = {"off": [], "on": []}
        events: dict[str, int] = {"off": 0, "on": 0}
        print(f"{CONNECTIONS} connections, {EVENTS_PER_APPEND}-event appends, {args.seconds}s")
        for _ in range(args.rounds):
            for mode, (url, key) in modes.items():
                appended, latencies = asyncio.run(_round(url, args.seconds, key))
                events[mode] += appended
                totals[mode] += latencies
                print(
                    f"auth {mode:3}: {appended / args.seconds:8.0f} events/s, "
                    f"p50 {_ms(latencies, 50):5.1f} ms, p99 {_ms(latencies, 99):5.1f} ms",
                    flush=True,
                )
        seconds = args.seconds * args.rounds
        rate = {mode: events[mode] / seconds for mode in modes}
        for mode in modes:
            print(
                f"total auth {mode}: {rate[mode]:.0f} events/s, p50 {_ms(totals[mode], 50):.1f}"
                f" ms, p99 {_ms(totals[mode], 99):.1f} ms"
            )
        print(f"auth on / auth off: {rate['on'] / rate['off']:.3f}")
    finally:
        if secured is not None:
            terminate(secured.pid, proc=secured.proc, timeout=20.0)
        env.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
