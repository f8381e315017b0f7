"""Imports run only downward, and nowhere in a loop (imports inside functions included).

The floors, from the ground up (docs/architecture.md explains each):

0. ground: the wire protocol, the kit-side rules, the descriptors, the site file, the runtime
   folders and every default path;
1. kits: twins, firmware bundles, the broker, the kit processes;
2. services and libraries, each on its own: the lab service, the grader, the client library;
3. the course helpers that notebooks import, and the courses' installer;
4. top: the hub wiring, the LTI tool, the dashboards and the `smartlab` command.

A module may import its own floor and the floors below; on floor 2 a part imports no other part
of that floor (they talk over MQTT and HTTP, not through imports).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = (
    "site_config",
    "hardware_kits",
    "lab_service",
    "grader",
    "labs",
    "coursework",
    "courses",
    "hub_config",
)
# Module prefix -> floor; the longest prefix that matches a module decides.
FLOORS = {
    "site_config": 0,
    "hardware_kits.protocol": 0,
    "hardware_kits.kitcore": 0,
    "hardware_kits.descriptor": 0,
    "hardware_kits": 1,
    "lab_service": 2,
    "grader": 2,
    "labs.client": 2,
    "coursework": 3,
    "courses": 3,
    "hub_config": 4,
    "labs": 4,
}
SEPARATE_PARTS_FLOOR = 2


def floor_of(module: str) -> tuple[int, str]:
    """(floor, the prefix that placed it)."""
    best = max((p for p in FLOORS if module == p or module.startswith(p + ".")), key=len)
    return FLOORS[best], best


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "firmware" in path.parts or "source" in path.parts:
                continue  # MicroPython files of the board, and courses' notebook helpers
            found[module_name(path)] = path
    return found


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """Every project module `path` imports, at the top or inside a function."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    tree = ast.parse(path.read_text(), str(path))
    typing_only = {
        id(n)
        for block in ast.walk(tree)
        if isinstance(block, ast.If)
        and ast.unparse(block.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
        for stmt in block.body
        for n in ast.walk(stmt)
    }
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue  # annotations only: never imported when the program runs
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names]
            if any(t not in known for t in targets):
                targets.append(base)  # names defined in the module (or package) itself
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(path, name, set(modules)) for name, path in modules.items()}


def violations(graph: dict[str, set[str]]) -> list[str]:
    wrong = []
    for importer, targets in sorted(graph.items()):
        high, own = floor_of(importer)
        for target in sorted(targets):
            low, other = floor_of(target)
            if low > high:
                wrong.append(f"{importer} (floor {high}) imports {target} (floor {low})")
            elif low == high == SEPARATE_PARTS_FLOOR and own != other:
                wrong.append(f"{importer} imports {target}: separate parts of floor {low}")
    return wrong


def loops(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_module_has_a_floor(graph: dict[str, set[str]]) -> None:
    assert len(graph) > 80
    for module in graph:
        floor_of(module)  # raises ValueError for a module outside every floor


def test_imports_run_only_downward(graph: dict[str, set[str]]) -> None:
    assert violations(graph) == []


def test_no_import_loops(graph: dict[str, set[str]]) -> None:
    assert loops(graph) == []


def test_the_rules_catch_an_upward_import_a_loop_and_a_sideways_one() -> None:
    graph = {
        "hardware_kits.protocol": {"labs.client"},
        "labs.client": {"hardware_kits.mqtt"},
        "hardware_kits.mqtt": {"hardware_kits.protocol"},
        "grader.app": {"lab_service.api"},
    }
    assert violations(graph) == [
        "grader.app imports lab_service.api: separate parts of floor 2",
        "hardware_kits.protocol (floor 0) imports labs.client (floor 2)",
    ]
    assert loops(graph) == [["hardware_kits.mqtt", "hardware_kits.protocol", "labs.client"]]
