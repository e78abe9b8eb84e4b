"""Every subcommand answers ``--help`` (docs/cli.md)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kafkastore.cli import subcommands


def test_the_cli_has_the_subcommands_of_the_api_contract() -> None:
    required = {"dev", "serve", "indexer", "migrate", "topic", "append", "read", "tail", "audit"}

    assert required <= subcommands()


@pytest.mark.parametrize("subcommand", sorted(subcommands()))
def test_subcommand_help_exits_zero_and_describes_it(subcommand: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kafkastore.cli", subcommand, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert f"kafkastore {subcommand}" in done.stdout
