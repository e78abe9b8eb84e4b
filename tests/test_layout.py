"""The import rules of docs/design.md section 11, checked on the source with ``ast``.

- Roles (``writer``, ``indexer``, ``consumers``) use the kernel through its submodules
  (``kafkastore.records``), never the package root (the facade, which imports the roles).
- ``writer`` and ``consumers`` import no other role; ``indexer`` may import ``consumers``.
- The tools (``dev``, ``bench``, ``verify``) use the kernel through its submodules too, and may
  import the roles; ``bench`` and ``verify`` may import ``dev``, ``dev`` imports neither, and
  ``bench`` and ``verify`` do not import each other.
- The kernel imports no role and none of ``dev``/``bench``/``tests``, except the composition
  modules: the CLI's ``commands.py`` (the one module that runs the tools), the HTTP
  app and the client facade (roles only).
- No import cycle spans two top-level packages (imports inside functions count: they run too).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
KERNEL = "kafkastore"
ROLES = {"writer", "indexer", "consumers"}
TOOLS = {"dev", "bench", "verify"}
PACKAGES = {KERNEL, *ROLES, *TOOLS}
NOT_FOR_THE_KERNEL = ROLES | TOOLS | {"tests"}
ROLE_MAY_IMPORT = {"writer": set(), "consumers": set(), "indexer": {"consumers"}}
TOOL_MAY_IMPORT = {"dev": ROLES, "bench": ROLES | {"dev"}, "verify": ROLES | {"dev"}}
# Kernel modules that compose the roles, and what else each may import.
COMPOSITION = {
    "kafkastore/__init__.py": ROLES,
    "kafkastore/commands.py": ROLES | TOOLS,
    "kafkastore/http.py": ROLES,
    "kafkastore/client.py": ROLES,
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


def _kernel_submodules() -> set[str]:
    return {p.stem for p in (ROOT / KERNEL).glob("*.py")} | {
        p.name for p in (ROOT / KERNEL).iterdir() if (p / "__init__.py").is_file()
    }


def violations(path: Path, source: str) -> list[str]:
    relative = path.relative_to(ROOT).as_posix()
    module = _module_name(path)
    top = module.split(".")[0]
    found: list[str] = []
    kernel_submodules = _kernel_submodules()
    for name in set(imports_of(source, module, is_package=path.name == "__init__.py")):
        target = name.split(".")[0]
        if top in ROLES | TOOLS:
            kind = "role" if top in ROLES else "tool"
            may_import = ROLE_MAY_IMPORT[top] if top in ROLES else TOOL_MAY_IMPORT[top]
            if name == KERNEL:
                found.append(f"{relative}: imports the kernel's root package ({name})")
            elif target == KERNEL and name.count(".") == 1:
                if name.split(".")[1] not in kernel_submodules:
                    found.append(f"{relative}: uses the facade name {name} (import a submodule)")
            elif target in PACKAGES - {KERNEL, top} and target not in may_import:
                what = f"role {target}" if target in ROLES else target
                found.append(f"{relative}: {kind} {top} imports {what} ({name})")
            elif target == "tests":
                found.append(f"{relative}: {kind} {top} imports tests ({name})")
        elif top == KERNEL and target in NOT_FOR_THE_KERNEL - COMPOSITION.get(relative, set()):
            found.append(f"{relative}: the kernel imports {target} ({name})")
    return sorted(found)


def import_graph(sources: dict[str, str]) -> dict[str, set[str]]:
    """Module -> the modules it imports, among ``sources`` (module name -> source text).

    ``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else to ``pkg``.
    """
    graph: dict[str, set[str]] = {}
    for module, source in sources.items():
        is_package = module in {m.rpartition(".")[0] for m in sources}
        edges: set[str] = set()
        for name in imports_of(source, module, is_package=is_package):
            target = name
            while target and target not in sources:
                target = target.rpartition(".")[0]
            if target and target != module:
                edges.add(target)
        graph[module] = edges
    return graph


def cycles_between_packages(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles (strongly connected sets of modules) that span two top-level packages."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm; the graph is small enough to recurse
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len({m.split(".")[0] for m in component}) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def _sources() -> Iterator[Path]:
    for package in sorted(PACKAGES):
        yield from sorted((ROOT / package).rglob("*.py"))


def test_every_module_follows_the_import_rules_of_the_design() -> None:
    found = [v for path in _sources() for v in violations(path, path.read_text())]

    assert found == []


def test_no_import_cycle_spans_two_packages() -> None:
    graph = import_graph({_module_name(p): p.read_text() for p in _sources()})

    assert cycles_between_packages(graph) == []


def test_the_cycle_check_finds_a_cycle_through_a_function_level_import() -> None:
    graph = import_graph(
        {
            "kafkastore.cli": "def main():\n    from kafkastore import commands",
            "kafkastore.commands": "def cmd_dev():\n    from dev import stack",
            "dev.stack": "from dev import services",
            "dev.services": "from kafkastore.cli import subcommands",
            "dev.process": "from kafkastore.config import Settings",
            "kafkastore.config": "import os",
        }
    )

    assert cycles_between_packages(graph) == [
        ["dev.services", "dev.stack", "kafkastore.cli", "kafkastore.commands"]
    ]


@pytest.mark.parametrize(
    ("path", "source", "expected"),
    [
        ("writer/x.py", "import kafkastore", "imports the kernel's root package"),
        ("writer/x.py", "from kafkastore import EventStore", "facade name kafkastore.EventStore"),
        ("writer/x.py", "from indexer import queries", "role writer imports role indexer"),
        ("consumers/x.py", "def f():\n    import writer.batcher", "role consumers imports role"),
        ("kafkastore/codec.py", "from writer import protocol", "the kernel imports writer"),
        ("kafkastore/pg.py", "import dev.stack", "the kernel imports dev"),
        ("kafkastore/cli.py", "from dev import command", "the kernel imports dev"),
        ("kafkastore/http.py", "from bench import main", "the kernel imports bench"),
        ("dev/stack.py", "from bench import environment", "tool dev imports bench"),
        ("dev/stack.py", "import kafkastore", "imports the kernel's root package"),
        ("bench/main.py", "from kafkastore import EventStore", "facade name kafkastore.Event"),
        ("bench/main.py", "from tests.support import unique", "tool bench imports tests"),
        ("verify/x.py", "from bench import stats", "tool verify imports bench"),
        ("dev/stack.py", "from verify import checker", "tool dev imports verify"),
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
        ("kafkastore/commands.py", "from bench import main"),
        ("bench/environment.py", "from dev import command\nfrom kafkastore import pg"),
        ("dev/stack.py", "from kafkastore import schema\nfrom kafkastore.manifest import Manifest"),
    ],
)
def test_the_checker_allows_what_the_design_allows(path: str, source: str) -> None:
    assert violations(ROOT / path, source) == []


def test_only_the_config_module_reads_the_environment() -> None:
    readers = []
    root = Path(__file__).resolve().parents[1]
    for package in ("kafkastore", "writer", "indexer", "consumers", "dev", "bench", "verify"):
        for path in (root / package).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            if ("os.environ" in text or "os.getenv" in text or "getenv(" in text) and path != (
                root / "kafkastore" / "config.py"
            ):
                readers.append(str(path.relative_to(root)))
    assert readers == []


LONG = 420
"""STYLE.md: modules stay small; one past ~400 lines says why at its top."""


def test_a_module_past_400_lines_says_why_at_its_top() -> None:
    unexplained = []
    for package in [KERNEL, *sorted(ROLES), *sorted(TOOLS)]:
        for path in sorted((ROOT / package).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            if text.count("\n") <= LONG:
                continue
            docstring = ast.get_docstring(ast.parse(text)) or ""
            if "longer than ~400 lines" not in docstring:
                unexplained.append(path.relative_to(ROOT).as_posix())
    assert unexplained == []
