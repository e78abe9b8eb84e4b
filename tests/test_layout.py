"""The import rules of DESIGN.md section 11, checked on the source with ``ast``.

- Roles (``writer``, ``indexer``, ``consumers``) use the kernel through its submodules
  (``kafkastore.records``), never the package root (the facade, which imports the roles).
- ``writer`` and ``consumers`` import no other role; ``indexer`` may import ``consumers``.
- The kernel imports no role and none of ``dev``/``bench``/``tests``, except the composition
  modules: the CLI (``cli.py`` and its ``commands.py``), the HTTP app and the client facade.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
KERNEL = "kafkastore"
ROLES = {"writer", "indexer", "consumers"}
NOT_FOR_THE_KERNEL = ROLES | {"dev", "bench", "tests"}
ROLE_MAY_IMPORT = {"writer": set(), "consumers": set(), "indexer": {"consumers"}}
COMPOSITION = {
    "kafkastore/__init__.py",
    "kafkastore/cli.py",
    "kafkastore/commands.py",
    "kafkastore/http.py",
    "kafkastore/client.py",
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(source: str, module: str, *, is_package: bool = False) -> Iterator[str]:
    """Every module named by an import statement (anywhere, also inside functions) as absolute
    dotted names; ``from pkg import name`` yields ``pkg.name`` (a submodule or an attribute)."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            yield from (f"{base}.{alias.name}" for alias in node.names)


def violations(path: Path, source: str) -> list[str]:
    relative = path.relative_to(ROOT).as_posix()
    module = _module_name(path)
    top = module.split(".")[0]
    found: list[str] = []
    kernel_submodules = {p.stem for p in (ROOT / KERNEL).glob("*.py")} | {
        p.name for p in (ROOT / KERNEL).iterdir() if (p / "__init__.py").is_file()
    }
    for name in set(imports_of(source, module, is_package=path.name == "__init__.py")):
        target = name.split(".")[0]
        if top in ROLES:
            if name == KERNEL:
                found.append(f"{relative}: imports the kernel's root package ({name})")
            elif target == KERNEL and name.count(".") == 1:
                if name.split(".")[1] not in kernel_submodules:
                    found.append(f"{relative}: uses the facade name {name} (import a submodule)")
            elif target in ROLES and target != top and target not in ROLE_MAY_IMPORT[top]:
                found.append(f"{relative}: role {top} imports role {target} ({name})")
            elif target in NOT_FOR_THE_KERNEL - ROLES:
                found.append(f"{relative}: role {top} imports {target} ({name})")
        elif top == KERNEL and relative not in COMPOSITION and target in NOT_FOR_THE_KERNEL:
            found.append(f"{relative}: the kernel imports {target} ({name})")
    return sorted(found)


def _sources() -> Iterator[Path]:
    for package in [KERNEL, *sorted(ROLES)]:
        yield from sorted((ROOT / package).rglob("*.py"))


def test_every_module_follows_the_import_rules_of_the_design() -> None:
    found = [v for path in _sources() for v in violations(path, path.read_text())]

    assert found == []


@pytest.mark.parametrize(
    ("path", "source", "expected"),
    [
        ("writer/x.py", "import kafkastore", "imports the kernel's root package"),
        ("writer/x.py", "from kafkastore import EventStore", "facade name kafkastore.EventStore"),
        ("writer/x.py", "from indexer import queries", "role writer imports role indexer"),
        ("consumers/x.py", "def f():\n    import writer.batcher", "role consumers imports role"),
        ("kafkastore/codec.py", "from writer import protocol", "the kernel imports writer"),
        ("kafkastore/pg.py", "import dev.stack", "the kernel imports dev"),
    ],
)
def test_the_checker_reports_each_kind_of_violation(path: str, source: str, expected: str) -> None:
    found = violations(ROOT / path, source)

    assert any(expected in v for v in found), found


@pytest.mark.parametrize(
    ("path", "source"),
    [
        ("writer/x.py", "from kafkastore import records\nimport kafkastore.codec"),
        ("indexer/x.py", "from consumers import runtime\nfrom . import queries"),
        ("kafkastore/commands.py", "from writer import cli\nfrom dev import stack"),
        ("kafkastore/http.py", "from indexer import routes"),
    ],
)
def test_the_checker_allows_what_the_design_allows(path: str, source: str) -> None:
    assert violations(ROOT / path, source) == []


def test_only_the_config_module_reads_the_environment() -> None:
    readers = []
    root = Path(__file__).resolve().parents[1]
    for package in ("kafkastore", "writer", "indexer", "consumers", "dev", "bench"):
        for path in (root / package).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            if ("os.environ" in text or "os.getenv" in text or "getenv(" in text) and path != (
                root / "kafkastore" / "config.py"
            ):
                readers.append(str(path.relative_to(root)))
    assert readers == []
