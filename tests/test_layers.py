"""The package's import graph: no cycles, and imports only point down the layers.

core (files, checkpoints, networks, envs, policy loading, rollout, results, the threat model)
<- attacks <- agents <- what drives them (config, training, bench, executors, reports, cli).
Every import counts, including the ones inside functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"robustbench_rl": "robustbench_rl", "attacks": "robustbench_rl.attacks",
            "agents": "robustbench_rl.agents", "reports": "robustbench_rl.reports"}
TOP = {"config", "training", "bench", "cells", "provenance", "suite", "cli", "cli_train", "cli_adversary", "cli_options",
       "summaries", "executors", "ray_executor", "tblog"}


def modules() -> dict[str, Path]:
    found = {}
    for folder, package in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = [p for p in path.relative_to(ROOT / folder).with_suffix("").parts if p != "__init__"]
            found[".".join([package, *parts])] = path
    return found


def layer(module: str) -> int:
    name = module.split(".")
    if name[1:2] == ["attacks"]:
        return 1
    if name[1:2] == ["agents"]:
        return 2
    if name[1:2] == ["reports"] or (len(name) == 2 and name[1] in TOP):
        return 3
    return 0


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("robustbench_rl"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                out.add(sub if sub in known else node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("robustbench_rl")}
    return {m for m in out if m in known}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, known) - {name} for name, path in known.items()}


def test_imports_point_down_the_layers():
    upward = [f"{m} -> {d}" for m, deps in sorted(graph().items()) for d in sorted(deps) if layer(d) > layer(m)]
    assert not upward, upward


def test_the_import_graph_has_no_cycle():
    edges = graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(edges[node]):
            if state.get(dep) == 1:
                return [*stack[stack.index(dep):], dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (cycle := visit(start)):
            raise AssertionError(" -> ".join(cycle))


def test_the_layers_are_what_the_checks_above_assume():
    names = set(modules())
    assert {"robustbench_rl.rollout", "robustbench_rl.policy", "robustbench_rl.threat"} <= names
    assert layer("robustbench_rl.rollout") == 0 and layer("robustbench_rl.attacks.pgd") == 1
    assert layer("robustbench_rl.agents.td3") == 2 and layer("robustbench_rl.bench") == 3
    assert all(f"robustbench_rl.{t}" in names for t in TOP)
