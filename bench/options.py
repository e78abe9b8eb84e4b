"""What one ``kafkastore bench`` run was asked for, parsed from its arguments by the CLI."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True, kw_only=True)
class BenchOptions:
    """The options of ``kafkastore bench`` (services come with the run's ``Settings``)."""

    quick: bool = False
    """A ~3-minute run (shorter warm-up and measurement per workload)."""
    output: Path | None = None
    """Also write the JSON results here."""
    only: tuple[str, ...] = ()
    """Run only these workloads; empty: every one."""
    scale: bool = False
    """The growth run (``--scale``): fill the store to ~5M events and measure on the way."""
    results_dir: Path | None = None
    """Where the results go (default ``bench/results``; the tests use a temporary one)."""
    services_given: bool = False
    """Kafka and PostgreSQL were both given (``--kafka`` and ``--database-url``): measure those,
    never a running dev stack's or one started for the run."""
