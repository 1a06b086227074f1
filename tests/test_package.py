"""The package's import structure: no import cycles (function-level imports included), and every
module imports on its own, first, in a fresh interpreter.

Cycles hidden in function-level imports (`models/load` <-> `models/vla`, `eval/harness` <->
`eval/libero` until they were opened) work until someone hoists an import; a cycle-free graph
keeps one owner per concept and lets a new capability land as a new module.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "prismatic"


def package_modules(root: Path = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (packages by their __init__)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> package modules it imports anywhere in its source (top level or inside functions).

    `from a.b import c` counts as importing `a.b.c` when that is a module, else `a.b`; imports under
    `if TYPE_CHECKING:` count too (they are cycles in waiting)."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                candidates = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                candidates = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
            else:
                continue
            for candidate in candidates:
                while candidate and candidate not in modules:
                    candidate = candidate.rpartition(".")[0]
                if candidate and candidate != name:
                    targets.add(candidate)
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycle_check_finds_a_cycle_through_function_level_imports(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.b import g\n\ndef f():\n    return g()\n")
    (pkg / "b.py").write_text("def g():\n    from pkg.a import f  # the hidden half of the cycle\n    return f\n")
    (pkg / "c.py").write_text("import pkg.a\n")
    assert cycles(import_graph(package_modules(pkg))) == [["pkg.a", "pkg.b"]]


def test_the_package_has_no_import_cycles():
    graph = import_graph(package_modules())
    assert len(graph) > 60 and "prismatic.models.vla" in graph["prismatic.models.load"]  # the graph is read
    found = cycles(graph)
    assert not found, (
        "import cycles (including imports inside functions): "
        + "; ".join(" <-> ".join(c) for c in found)
        + ". Move what both sides need into a module of its own (as models/layouts.py and eval/env.py do)."
    )


# Validating a training config (data mixture included), reading specs, loading a model and the VLM stages must not
# need TensorFlow (only the data pipeline does): these are imported first and TF must still be absent.
_NO_TENSORFLOW = ["prismatic.training.config", "prismatic.data.spec", "prismatic.data.locate",
                  "prismatic.models.load", "prismatic.eval", "prismatic.vlm.training", "prismatic.vlm.inference"]  # fmt: skip
_IMPORT_ALL = """
import importlib, json, sys, traceback
light, names = json.loads(sys.argv[1]), json.loads(sys.argv[2])
failures = {}
for name in light + names:
    if name == names[0] and "tensorflow" in sys.modules:
        failures["(tensorflow)"] = "imported by one of " + ", ".join(light)
    try:
        importlib.import_module(name)
    except Exception:
        failures[name] = traceback.format_exc(limit=4)
print(json.dumps(failures))
"""


@pytest.mark.slow
def test_every_module_imports_in_a_fresh_interpreter_and_light_ones_without_tensorflow():
    """With no cycle (above), import order cannot matter; this catches what the graph cannot: a
    module that fails to import at all, and TensorFlow creeping into config / spec / model loading."""
    names = [n for n in package_modules() if n not in _NO_TENSORFLOW]
    proc = subprocess.run(
        [sys.executable, "-c", _IMPORT_ALL, json.dumps(_NO_TENSORFLOW), json.dumps(names)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    failures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not failures, "\n\n".join(f"{name}:\n{tb}" for name, tb in failures.items())
