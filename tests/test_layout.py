"""The layout's rules that an import checker cannot see (docs/architecture.md).

import-linter (``lint-imports``, run by scripts/test.sh) holds the layers: the core imports
no door, doors do not import each other, the client imports no Django. This file holds
the rest: no private name (``_x``) crosses a module boundary, and the code cites the
repository's own documents, never a contract outside it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("arcsite", "coordination", "relay", "dashboard", "mcpserver", "gateway")


def sources(*extra: str) -> list[Path]:
    return sorted(
        path
        for package in (*PACKAGES, *extra)
        for path in (ROOT / package).rglob("*.py")
        if "migrations" not in path.parts
    )


def is_project_module(dotted: str) -> bool:
    parts = dotted.split(".")
    if parts[0] not in PACKAGES:
        return False
    base = ROOT.joinpath(*parts)
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def crossings(path: Path) -> list[str]:
    """Private names this file takes from other project modules: ``from m import _x`` and ``m._x``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    modules: set[str] = set()  # local names bound to project modules
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                if is_project_module(f"{node.module}.{alias.name}"):
                    modules.add(alias.asname or alias.name)
                elif is_project_module(node.module) and private(alias.name):
                    found.append(f"line {node.lineno}: from {node.module} import {alias.name}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname and is_project_module(alias.name):
                    modules.add(alias.asname)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
            and private(node.attr)
        ):
            found.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
    return found


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_private_name_crosses_a_module_boundary(path):
    assert crossings(path) == []


def test_the_checker_sees_a_private_name_taken_from_another_module(tmp_path):
    # The rule above can fail: a file that takes a private helper from the core is caught.
    sample = tmp_path / "probe.py"
    sample.write_text(
        "from coordination.core.services import rooms\n"
        "from coordination.core.parsing import _nothing\n"
        "rooms._known_rooms.clear()\n",
        encoding="utf-8",
    )
    assert crossings(sample) == [
        "line 2: from coordination.core.parsing import _nothing",
        "line 3: rooms._known_rooms",
    ]


# Spelled in pieces, so that this file does not match itself.
OUTSIDE = re.compile("|".join([r"\bSP" + r"EC\b", r"\.\./sha" + "red", "reference/arc-" + "protocol", "Arc v1 " + "§"]))


@pytest.mark.parametrize("path", sources("tests", "scripts"), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_code_cites_the_repositorys_own_documents(path):
    lines = [
        f"line {n}: {line.strip()}"
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert lines == [], "cite docs/ instead"


def test_every_document_the_code_cites_exists():
    cited = set()
    for path in sources("tests", "scripts"):
        cited |= set(re.findall(r"docs/[a-z-]+\.md", path.read_text(encoding="utf-8")))
    missing = sorted(doc for doc in cited if not (ROOT / doc).exists())
    assert cited
    assert missing == []
