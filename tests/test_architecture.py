"""The package's shape: imports run one way (cli -> pipeline -> analysis -> data, report
reads only run results), no import cycle, no module over the size limit, a public API.
That no import changes matplotlib's backend is tests/report/test_isolation.py."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import cogsae
from tests.helpers import REPO

PACKAGE = REPO / "cogsae"
MAX_LINES = 600

# Layers, lowest first: a module may import its own layer and the layers below it.
LAYERS: dict[str, int] = {
    "data": 0,  # inputs: stimuli, model, activations, corpora, SAEs, files
    "analysis": 1,  # statistics and unit-level tools on those inputs
    "pipeline": 2,  # the run: config, stages, results
    "report": 2,  # reads a run's results.json only (checked separately)
    "cli": 3,
    "api": 4,  # cogsae/__init__.py
}
ANALYSIS = ("cogsae.analysis", "cogsae.judges", "cogsae.inspect", "cogsae.interventions")


def layer(module: str) -> str:
    """The layer of a cogsae module (dotted name)."""
    if module == "cogsae":
        return "api"
    if module == "cogsae.__main__":
        return "cli"
    for prefix, name in (
        ("cogsae.cli", "cli"),
        ("cogsae.report", "report"),
        ("cogsae.pipeline", "pipeline"),
        *((p, "analysis") for p in ANALYSIS),
    ):
        if module == prefix or module.startswith(prefix + "."):
            return name
    return "data"


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def cogsae_imports(path: Path) -> set[str]:
    """Every cogsae module ``path`` imports, at module level or inside functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("cogsae"))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cogsae"):
            base = node.module or ""
            for alias in node.names:  # `from cogsae import x` may name a submodule
                sub = f"{base}.{alias.name}"
                found.add(sub if _is_module(sub) else base)
    return found


def _is_module(name: str) -> bool:
    path = REPO.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def import_graph() -> dict[str, set[str]]:
    """Module -> the cogsae modules it imports (self-imports dropped)."""
    graph = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        graph[name] = {m for m in cogsae_imports(path) if m != name}
    return graph


def test_imports_run_one_way() -> None:
    upward = [
        f"{a} ({layer(a)}) imports {b} ({layer(b)})"
        for a, targets in import_graph().items()
        for b in targets
        if LAYERS[layer(b)] > LAYERS[layer(a)] or {layer(a), layer(b)} == {"pipeline", "report"}
    ]
    assert not upward, "\n".join(upward)


def test_report_reads_only_run_results() -> None:
    allowed = {"data"}
    wrong = [
        f"{a} imports {b}"
        for a, targets in import_graph().items()
        if layer(a) == "report"
        for b in targets
        if layer(b) not in allowed | {"report"}
    ]
    assert not wrong, "\n".join(wrong)  # at run time: tests/report/test_isolation.py


def test_no_import_cycle() -> None:
    """No cycle between modules, counting the parent package a submodule import runs."""
    graph = import_graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle = [*stack[stack.index(nxt) :], nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state and layer(node) != "api":
            visit(node)


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: module_name(p))
def test_module_size(path: Path) -> None:
    n_lines = len(path.read_text(encoding="utf-8").splitlines())
    assert n_lines <= MAX_LINES, f"{path.name}: {n_lines} lines"


def test_public_api() -> None:
    for name in cogsae.__all__:
        assert getattr(cogsae, name) is not None, name
    expected = {"load_stimuli", "load_model", "extract_activations", "Activations"}
    expected |= {"load_sae", "SAE", "RunConfig", "run", "categorical_rsa"}
    expected |= {"discriminative_rsa", "univariate_contrast"}
    assert expected <= set(cogsae.__all__)
