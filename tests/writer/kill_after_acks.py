"""Subprocess for the fault tests: append, and SIGKILL ourselves at a step of the protocol.

Usage: python -m tests.writer.kill_after_acks STEP STREAM EVENT_ID... (settings from env)
"""

from __future__ import annotations

import os
import signal
import sys
import uuid

from kafkastore.client import EventStore
from kafkastore.config import Settings
from kafkastore.records import NewEvent
from writer import faults


def main() -> None:
    step, stream, *ids = sys.argv[1:]

    def die(at: str) -> None:
        if at == step:
            os.kill(os.getpid(), signal.SIGKILL)

    with faults.injected(die), EventStore(Settings.from_env()) as store:
        store.append(
            stream,
            [NewEvent(type="Doomed", data={"i": i}, id=uuid.UUID(e)) for i, e in enumerate(ids)],
        )
    sys.exit(3)  # not reached when the kill works


if __name__ == "__main__":
    main()
