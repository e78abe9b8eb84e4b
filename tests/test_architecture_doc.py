"""ARCHITECTURE.md names files and functions; each must exist, so the map stays true."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "ARCHITECTURE.md"
# `path/module.py` followed by one or more `Name` / `Class.method` references.
REFERENCE = re.compile(r"`([a-z_]+/[a-z_/]+\.py)`((?:\s*[,/]?\s*`[A-Za-z_][\w.]*`)*)")


def references() -> list[tuple[str, str]]:
    found = []
    for match in REFERENCE.finditer(DOC.read_text(encoding="utf-8")):
        path, names = match.groups()
        found.append((path, ""))
        found.extend((path, name) for name in re.findall(r"`([A-Za-z_][\w.]*)`", names))
    return found


def test_the_architecture_map_names_only_files_and_functions_that_exist() -> None:
    missing = []
    for path, name in references():
        source = ROOT / path
        if not source.is_file():
            missing.append(path)
            continue
        text = source.read_text(encoding="utf-8")
        for part in name.split(".") if name else []:
            defined = rf"^\s*(?:async\s+)?(?:def|class)\s+{part}\b|^{part}\s*[:=]"
            if not re.search(defined, text, re.M):
                missing.append(f"{path}: {name}")
    assert references(), "the pattern found no references: the test would pass vacuously"
    assert missing == []
