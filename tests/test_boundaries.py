"""STYLE.md rule 2: driver exceptions are translated at one boundary per driver.

Only ``kafkastore/pg.py`` (psycopg, psycopg_pool) and ``kafkastore/kafka.py`` (confluent-kafka)
may name a driver's exception class in an ``except`` clause; everything else catches ours.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("kafkastore", "writer", "indexer", "consumers", "dev", "bench", "verify")
DRIVERS = ("psycopg", "psycopg_pool", "confluent_kafka")
BOUNDARIES = {"kafkastore/pg.py", "kafkastore/kafka.py"}


def _driver_names(tree: ast.AST) -> set[str]:
    """Local names bound to a driver module or to something imported from one."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in DRIVERS:
                    names.add((alias.asname or alias.name).split(".")[0])
        elif (
            isinstance(node, ast.ImportFrom)
            and node.module
            and not node.level
            and node.module.split(".")[0] in DRIVERS
        ):
            names.update(alias.asname or alias.name for alias in node.names)
    return names


def _root(node: ast.expr) -> str | None:
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def caught_driver_exceptions(source: str) -> Iterator[tuple[int, str]]:
    """(line, expression) of every ``except`` clause that names a driver's exception."""
    tree = ast.parse(source)
    drivers = _driver_names(tree)
    for node in ast.walk(tree):
        if not isinstance(node, ast.ExceptHandler) or node.type is None:
            continue
        types = node.type.elts if isinstance(node.type, ast.Tuple) else [node.type]
        for expr in types:
            if _root(expr) in drivers:
                yield node.lineno, ast.unparse(expr)


def _sources() -> Iterator[Path]:
    for package in PACKAGES:
        yield from sorted((ROOT / package).rglob("*.py"))


def test_driver_exceptions_are_caught_only_at_the_two_boundaries() -> None:
    found = [
        f"{path.relative_to(ROOT).as_posix()}:{line}: except {expr}"
        for path in _sources()
        if path.relative_to(ROOT).as_posix() not in BOUNDARIES
        for line, expr in caught_driver_exceptions(path.read_text(encoding="utf-8"))
    ]

    assert found == []


@pytest.mark.parametrize(
    "source",
    [
        "import psycopg\ntry:\n    pass\nexcept psycopg.Error:\n    pass",
        "import psycopg.errors as x\ntry:\n    f()\nexcept (KeyError, x.DataError):\n    g()",
        "from confluent_kafka import KafkaException as E\ntry:\n    pass\nexcept E:\n    pass",
        "from psycopg_pool import PoolTimeout as T\ntry:\n    pass\nexcept T:\n    pass",
    ],
)
def test_the_checker_finds_each_way_of_naming_a_driver_exception(source: str) -> None:
    assert list(caught_driver_exceptions(source)) != []


def test_the_checker_allows_our_own_errors() -> None:
    source = (
        "import psycopg\nfrom kafkastore.errors import Unavailable\n"
        "try:\n    pass\nexcept (Unavailable, OSError):\n    pass"
    )

    assert list(caught_driver_exceptions(source)) == []
