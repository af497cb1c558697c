"""The layout is the architecture: imports only point down, never in a circle, and the engine SDK stays in engine/."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"

# Layers, lowest first; a module may import its own layer or a lower one. Every part of the
# package must be listed: a new module or package is placed here on purpose.
LAYERS: dict[str, int] = {
    # base: plain models, settings, paths
    "errors": 0, "config": 0, "models": 0, "scope": 0, "changeset": 0, "mounts": 0, "fswalk": 0, "policies": 0, "atomicio": 0,
    # services the pipeline uses
    "safety": 1, "engine": 1, "audit": 1, "changes": 1,
    # the pipeline and what stands beside it
    "executor": 2, "pipeline": 2, "live": 2, "files": 2, "browser": 2, "ops": 2, "doctor": 2, "alerts": 2,
    "sample": 2, "testing": 2, "client": 2,
    "scoperun": 2,  # the package's face: re-exports the executor
    # adapters: command line, agent tools, HTTP service
    "cli": 3, "tools": 3, "service": 3, "__main__": 3,
}
ENGINE_SDKS = {"docker", "requests"}
# Payloads that run inside containers, not part of the package's import graph.
PAYLOADS = {"_images", "_sample"}


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted((SRC / "scoperun").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if PAYLOADS & set(parts):
            continue
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imported(module: str, path: Path) -> Iterator[str]:
    """Every absolute module name `module` imports, at any depth (lazy and type-only imports count too)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            for alias in node.names:
                # `from pkg import mod` imports the submodule when there is one
                yield f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base


def _graph() -> dict[str, set[str]]:
    return {m: {t for t in _imported(m, p) if t in MODULES and t != m} for m, p in MODULES.items()}


def _group(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of `graph` as a path (first node repeated at the end), or [] when it has none."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return []

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return []


def test_every_module_has_a_layer() -> None:
    """Each module of src/scoperun belongs to a listed layer (a new one is placed on purpose)."""
    assert sorted({_group(m) for m in MODULES} - set(LAYERS)) == []


def test_no_import_runs_up_a_layer() -> None:
    """No module imports from a higher layer (cli/tools/service -> executor & co -> audit/changes/engine/safety -> base)."""
    upward = sorted(f"{m} -> {t}" for m, targets in _graph().items() for t in targets
                    if LAYERS.get(_group(t), 0) > LAYERS.get(_group(m), 0))
    assert upward == []


# Cycles that landed before this check and are still to break; the list may only shrink (and is empty:
# files.core, engine.docker and service.app import their helpers, which take what they need as a Protocol).
KNOWN_CYCLES_TO_BREAK: set[tuple[str, str]] = set()


def test_no_import_cycle_between_modules() -> None:
    """The module import graph has no cycle (lazy and type-only imports included)."""
    graph = _graph()
    for a, b in KNOWN_CYCLES_TO_BREAK:
        assert a in graph[b] and b in graph[a], \
            f"{a} <-> {b} is broken: remove it from KNOWN_CYCLES_TO_BREAK"
        graph[b].discard(a)
    assert _cycle(graph) == []


def test_no_import_cycle_between_packages() -> None:
    """The packages and top modules import each other without a cycle (e.g. audit and changes never both ways)."""
    packages: dict[str, set[str]] = {}
    for m, targets in _graph().items():
        packages.setdefault(_group(m), set()).update(_group(t) for t in targets if _group(t) != _group(m))
    # The package's face re-exports the executor (and errors, models, config); nothing below imports it.
    packages.pop("scoperun", None)
    assert _cycle(packages) == []


# Modules that still talk to the docker SDK directly. Empty: ops, doctor, images and change clean-up all
# go through the engine contract (Backend, EngineHousekeeping). The list may only shrink.
ENGINE_SDK_USERS_TO_MOVE: set[str] = set()


def test_engine_sdk_is_imported_only_in_engine() -> None:
    """docker (and requests) are imported only inside scoperun.engine."""
    users = {m for m, p in MODULES.items() if _group(m) != "engine"
             and any(name.split(".")[0] in ENGINE_SDKS for name in _imported(m, p))}
    assert users - ENGINE_SDK_USERS_TO_MOVE == set()
    assert ENGINE_SDK_USERS_TO_MOVE - users == set(), "remove moved modules from ENGINE_SDK_USERS_TO_MOVE"


def test_the_checks_see_a_cycle_and_an_upward_import() -> None:
    """The cycle finder and the layer check fire on a made-up graph (so a green run means something)."""
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) == []
    assert LAYERS[_group("scoperun.cli.main")] > LAYERS[_group("scoperun.executor")] > LAYERS[_group("scoperun.audit.log")]


@pytest.mark.parametrize("module", ["scoperun.audit.log", "scoperun.executor", "scoperun.cli.main"])
def test_the_import_reader_sees_real_imports(module: str) -> None:
    """The import reader finds the package's own imports in real modules (lazy ones included)."""
    assert _graph()[module]
