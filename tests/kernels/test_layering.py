"""The layers of ARCHITECTURE.md hold: jaxlib_kernels < tasks < flows, and no module imports itself round a cycle.

The kernels are below the stages: importing any module of ``jaxlib_kernels`` (templates and their submodules
included) in a fresh interpreter loads none of ``prefect``, ``ray``, ``tasks`` or ``flows``, and no import of them
is written anywhere in ``jaxlib_kernels`` (module level or inside a function). The import graph of ``flows``,
``tasks`` and ``jaxlib_kernels`` (module-level and function-level imports, read from the source) has no cycle.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("flows", "tasks", "jaxlib_kernels")
ABOVE_THE_KERNELS = ("prefect", "ray", "tasks", "flows")



def _modules(package: str) -> dict[str, Path]:
    """``{dotted name: file}`` of every module of a package folder (``__init__`` as the package's own name)."""
    out = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if "__pycache__" in parts:
            continue
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(path: Path, name: str, modules=()) -> list[tuple[str, int]]:
    """Every module an ``import`` in ``path`` loads by name (anywhere in the file), with its line: ``import a.b``
    gives ``a.b``; ``from a import b`` gives ``a.b`` when that is one of ``modules``, else ``a``; relative imports
    are resolved against the module's package; ``importlib.import_module("a.b")`` gives ``a.b``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            out += [(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base, node.lineno) for a in node.names]
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and (getattr(node.func, "attr", None) == "import_module" or getattr(node.func, "id", None) in
                   ("__import__", "import_module"))):
            out.append((node.args[0].value, node.lineno))
    return out


def test_no_kernel_module_imports_the_stages_flows_prefect_or_ray_in_its_source():
    bad, everything = {}, _project()
    for name, path in _modules("jaxlib_kernels").items():
        rel = str(path.relative_to(ROOT))
        for target, line in _imports(path, name, everything):
            if target.split(".")[0] in ABOVE_THE_KERNELS and (rel, line) not in bad:
                bad[rel, line] = target
    bad = [f"{rel}:{line} imports {target}" for (rel, line), target in bad.items()]
    assert not bad, "jaxlib_kernels must stay below the stages:\n" + "\n".join(bad)


CHILD = """
import importlib, json, sys
names, blame = json.loads(sys.argv[1]), {}
above = tuple(json.loads(sys.argv[2]))
def loaded():
    return {m for m in sys.modules if m.split(".")[0] in above}
for name in names:
    before = loaded()
    importlib.import_module(name)
    for m in sorted(loaded() - before):
        blame.setdefault(name, []).append(m)
print(json.dumps({"blame": blame, "loaded": sorted(loaded())}))
"""


def test_importing_every_kernel_module_in_a_fresh_interpreter_loads_none_of_them():
    names = sorted(_modules("jaxlib_kernels"))
    assert "jaxlib_kernels.optimisers.evollm" in names and "jaxlib_kernels.templates.lpo.figures" in names
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(names), json.dumps(ABOVE_THE_KERNELS)],
                          cwd=ROOT, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["loaded"] == [], f"importing jaxlib_kernels loaded {out['loaded']}; first loaded by {out['blame']}"


def _project() -> dict[str, Path]:
    return {name: path for package in PACKAGES for name, path in _modules(package).items()}


def _graph() -> tuple[dict[str, set[str]], dict[tuple[str, str], str]]:
    modules = _project()
    graph, where = {name: set() for name in modules}, {}
    for name, path in modules.items():
        for target, line in _imports(path, name, modules):
            if target in modules and target != name:
                graph[name].add(target)
                where.setdefault((name, target), f"{path.relative_to(ROOT)}:{line}")
    return graph, where


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    m = stack.pop()
                    on.discard(m)
                    component.add(m)
                    if m == node:
                        break
                if len(component) > 1:
                    out.append(component)
    return out


def _path(graph, where, component: set[str]) -> str:
    """One cycle through the component, edge by edge with the line of each import."""
    start = min(component)
    prev, queue = {start: None}, [start]
    while queue:  # breadth-first from start back to start inside the component
        node = queue.pop(0)
        for child in sorted(graph[node] & component):
            if child == start:
                edges, cur = [(node, start)], node
                while prev[cur] is not None:
                    edges.append((prev[cur], cur))
                    cur = prev[cur]
                return "\n".join(f"  {a} -> {b} ({where[a, b]})" for a, b in reversed(edges))
            if child not in prev:
                prev[child] = node
                queue.append(child)
    return f"  {sorted(component)}"


def test_the_project_has_no_import_cycle():
    graph, where = _graph()
    assert "tasks.aggregation" in graph and "jaxlib_kernels.discovery" in graph
    cycles = _cycles(graph)
    report = "\n\n".join(_path(graph, where, c) for c in cycles)
    assert not cycles, f"{len(cycles)} import cycle(s):\n{report}"


def test_the_cycle_finder_finds_a_cycle_and_its_path():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [{"a", "b", "c"}]
    where = {(x, y): f"{x}.py:1" for x, ys in graph.items() for y in ys}
    assert _path(graph, where, {"a", "b", "c"}).splitlines() == ["  a -> b (a.py:1)", "  b -> c (b.py:1)",
                                                                  "  c -> a (c.py:1)"]


# Where a template may be named outside its own folders: the registry (its lines) and the command line (its defaults
# and flag help). Everything else asks the contract (Template.discovery, Template.meta, ...).
MAY_NAME_TEMPLATES = {"jaxlib_kernels/templates/__init__.py", "flows/cli.py"}
# a name that is also something else: the drift language's DPO-form baseline is called "dpo" (lpo's, marl's)
NOT_A_TEMPLATE = {("jaxlib_kernels/search/drift.py", "dpo")}


def _template_names() -> set[str]:
    tree = ast.parse((ROOT / "jaxlib_kernels/templates/__init__.py").read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Registry" and len(node.args) > 1:
            names |= {k.value for k in node.args[1].keys if isinstance(k, ast.Constant)}
    return names


def template_mentions(path: Path, names: set[str]) -> list[str]:
    """String constants that are a template's name, and imports of a template's package, in one module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and node.value in names:
            found.append(f"{node.lineno}: {node.value!r}")
        elif isinstance(node, ast.ImportFrom) and node.module:
            parts = node.module.split(".")
            hit = parts[:2] == ["jaxlib_kernels", "templates"] and (
                (len(parts) > 2 and parts[2] in names) or any(a.name in names for a in node.names))
            if hit:
                found.append(f"{node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Import):
            found += [f"{node.lineno}: import {a.name}" for a in node.names
                      if a.name.split(".")[:2] == ["jaxlib_kernels", "templates"] and len(a.name.split(".")) > 2
                      and a.name.split(".")[2] in names]
    return found


def test_no_generic_module_names_a_template():
    names = _template_names()
    assert {"lpo", "hades", "dpo", "bbo", "marl"} <= names
    bad = []
    for path in _project().values():
        rel = path.relative_to(ROOT).as_posix()
        parts = rel.split("/")
        if rel in MAY_NAME_TEMPLATES or (parts[:2] == ["jaxlib_kernels", "templates"] and len(parts) > 3):
            continue  # a template's own folder
        bad += [f"{rel}:{m}" for m in template_mentions(path, names - {n for r, n in NOT_A_TEMPLATE if r == rel})]
    assert not bad, "generic modules must ask the template contract, not name a template:\n" + "\n".join(bad)


def test_the_template_name_check_sees_a_string_and_an_import(tmp_path):
    mod = tmp_path / "m.py"
    mod.write_text('from jaxlib_kernels.templates import lpo\nif x == "hades":\n    pass\ns = "lpo-like text"\n')
    assert template_mentions(mod, {"lpo", "hades"}) == ["1: from jaxlib_kernels.templates import ...", "2: 'hades'"]
