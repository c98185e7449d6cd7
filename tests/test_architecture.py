"""The import graph of ``src/geoml_hub`` and ``processes/`` (installed as ``geoml_hub.processes``):
no cycle, and imports only in the allowed directions (issue 13 item 2).

The graph is built with :mod:`ast` from every ``import`` and ``from ... import`` statement, at
module level and inside functions, with relative imports resolved; ``from package import name``
counts as an import of ``package.name`` when that is a module. No module is imported, so this
runs in a second and needs no optional dependency.

Layers and the directions enforced (``docs/architecture.md`` draws them):

- **core**: the modules directly in ``geoml_hub/`` (``balancing``, ``training``, ``scene``,
  ``params``, ...) except the tools and ``client``: they import no other layer;
- **web** (``geoml_hub.web``): what the WPS, the map and the hub share; it imports the core only;
- **wps** (``geoml_hub.wps``): the core, web and the registry; inside it the OGC layer
  (``wps.ogc``) imports neither the job system's upper part (dispatcher, worker, Kubernetes
  backend), nor the HTTP app, nor the registry; the job table (``wps.jobs.store``) imports no
  other ``wps`` module; the settings import neither the job system's upper part nor the HTTP app;
- **processes** (``geoml_hub.processes``, the registry and the process modules): the OGC layer
  (``geoml_hub.wps.ogc``) and the registry's own modules only; the core reaches them through
  ``wps.ogc.operations`` (the operations and their parameter classes);
- **map** and **hub**: the core, web and themselves; never the WPS, the registry or each other;
- **client**: the core only (it talks to the WPS over HTTP);
- **tools**: ``cli`` (the entry point of every layer) and the package ``geoml_hub.tools``, the
  generators of checked-in files (``chartschema``, ``chartdoc``, ``paramdoc``, which read the
  registry, the profile schema and the parameter declarations): anything.

Imports inside functions are allowed where they keep a heavy or optional library off a light
path (:data:`LAZY_LIBRARIES`, each with its reason); any other function-level import carries a
comment saying why (on its line, or above it in its block of imports).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ((ROOT / "src" / "geoml_hub", "geoml_hub"), (ROOT / "processes", "geoml_hub.processes"))

#: Libraries a function may import without a comment: why each is kept off module level.
LAZY_LIBRARIES = {
    "torch": "seconds to load and gigabytes; only training and inference need it",
    "rasterio": "GDAL: loaded when a raster is read, not by the WPS's request path",
    "sklearn": "scikit-learn: balancing, the tree model families and model selection",
    "skops": "safe (de)serialisation of the tree model families only",
    "threadpoolctl": "one OpenMP thread around the tree models' fit and predict only",
    "scipy": "extraction's region labelling only",
    "matplotlib": "plots only, with the Agg backend chosen at the call",
    "pycm": "quality control only",
    "kubernetes": "the client of the Kubernetes Job backend, only with backend = kubernetes",
    "kubespawner": "the 'kubernetes' extra, only for GeomlKubeSpawner",
    "jupyterhub": "only with auth = jupyterhub, and in the hub",
    "nativeauthenticator": "the hub's optional authenticator",
    "tornado": "inside the hub or the Jupyter server only",
    "gunicorn": "only when serving with gunicorn",
    "werkzeug.serving": "only when serving with werkzeug",
    "owslib": "the client's WPS parsing (the client is being reworked, issue 13 item 3)",
    "tqdm": "the client's progress bars in notebooks",
}
#: Modules whose function-level imports are not checked (their own rework is under way).
UNCHECKED_LAZY = ("geoml_hub.client",)

Edge = Tuple[str, str, bool, int]  # importer, imported, inside a function, line


def _modules() -> Dict[str, Tuple[Path, bool]]:
    out = {}
    for base, package in SOURCES:
        for path in base.rglob("*.py"):
            parts = [package, *path.relative_to(base).with_suffix("").parts]
            if parts[-1] == "__init__":
                out[".".join(parts[:-1])] = (path, True)
            else:
                out[".".join(parts)] = (path, False)
    return out


MODULES = _modules()


def _imports(name: str, path: Path, is_package: bool):
    """``(node, [imported names], inside a function)`` of every import statement of a module."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    inner: Set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            inner.update(id(n) for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom)))
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield node, [a.name for a in node.names], id(node) in inner
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                parts = parts[:len(parts) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            yield node, [base] + [f"{base}.{a.name}" for a in node.names], id(node) in inner


def _imported(targets: List[str], node) -> List[str]:
    """The modules an import statement depends on: ``import a.b.c`` on ``a.b.c`` (its parents are
    imported too, but only the module named counts); ``from p import m, n`` on the submodules
    ``p.m`` and ``p.n``, and on ``p`` itself only for a name that is not a submodule (``from .
    import sibling`` in a package's module reads no name of the package's ``__init__``)."""
    if isinstance(node, ast.Import):
        return targets
    base, names = targets[0], targets[1:]
    out = [t for t in names if t in MODULES]
    if len(out) < len(names):
        out.append(base)
    return out


def _graph() -> List[Edge]:
    edges = []
    for name, (path, is_package) in MODULES.items():
        for node, targets, inside in _imports(name, path, is_package):
            for target in _imported(targets, node):
                if target in MODULES and target != name:
                    edges.append((name, target, inside, node.lineno))
    return edges


EDGES = _graph()


def _cycles(edges: List[Edge]) -> List[List[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    graph: Dict[str, Set[str]] = {}
    for a, b, _, _ in edges:
        graph.setdefault(a, set()).add(b)
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found = []

    def visit(v):
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

    for v in sorted(MODULES):
        if v not in index:
            visit(v)
    return found


#: the entry point and the package of generators of checked-in files (docs tables, the chart's schema)
TOOLS = ("cli", "tools")


def layer(module: str) -> str:
    """The layer of a module: core, tools, client, web, wps, processes, map or hub."""
    parts = module.split(".")
    if len(parts) == 1:
        return "core"  # geoml_hub/__init__.py
    if parts[1] in TOOLS:
        return "tools"
    if parts[1] in ("web", "wps", "processes", "map", "hub", "client"):
        return parts[1]
    return "core"


#: The layers each layer may import (besides itself).
ALLOWED = {
    "core": set(),
    "web": {"core"},
    "wps": {"core", "web", "processes"},
    "processes": {"wps"},
    "map": {"core", "web"},
    "hub": {"core", "web"},
    "client": {"core"},
    "tools": {"core", "web", "wps", "processes", "map", "hub", "client"},
}


def _show(edges) -> str:
    return "\n".join(f"  {a} -> {b} ({'in a function, ' if inside else ''}{MODULES[a][0].relative_to(ROOT)}:{line})"
                     for a, b, inside, line in edges)


def test_the_graph_is_built_from_both_trees():
    assert "geoml_hub.wps.ogc.service" in MODULES and "geoml_hub.processes.train_model" in MODULES
    assert ("geoml_hub.processes.train_model", "geoml_hub.wps.ogc.operations") in {(a, b) for a, b, _, _ in EDGES}
    # relative imports are resolved, function-level ones counted
    assert any(a == "geoml_hub.cli" and b.startswith("geoml_hub.hub") and inside for a, b, inside, _ in EDGES)


def test_no_import_cycle():
    cycles = _cycles(EDGES)
    assert not cycles, "import cycles (module-level and function-level imports):\n" + "\n".join(
        " <-> ".join(c) for c in cycles)


def test_no_cycle_is_missed():
    fake = [("a", "b", False, 1), ("b", "c", True, 1), ("c", "a", False, 1)]
    global MODULES
    saved = MODULES
    MODULES = dict(saved, a=None, b=None, c=None)
    try:
        assert _cycles(fake) == [["a", "b", "c"]]
    finally:
        MODULES = saved


def test_layers_import_in_the_allowed_directions():
    wrong = [e for e in EDGES if layer(e[1]) != layer(e[0]) and layer(e[1]) not in ALLOWED[layer(e[0])]]
    assert not wrong, "imports against the layering (see this module's docstring):\n" + _show(wrong)


def test_processes_import_only_the_ogc_layer():
    wrong = [e for e in EDGES if layer(e[0]) == "processes" and layer(e[1]) != "processes"
             and not e[1].startswith("geoml_hub.wps.ogc")]
    assert not wrong, "processes/ imports only geoml_hub.wps.ogc and the registry's modules:\n" + _show(wrong)


#: Inside wps: what the OGC layer and the job table may not import.
WPS_FORBIDDEN = {
    "geoml_hub.wps.ogc": ("geoml_hub.wps.http", "geoml_hub.wps.jobs.dispatcher", "geoml_hub.wps.jobs.worker",
                          "geoml_hub.wps.jobs.kubernetes", "geoml_hub.processes"),
    "geoml_hub.wps.jobs.store": ("geoml_hub.wps", "geoml_hub.processes"),
    "geoml_hub.wps.settings": ("geoml_hub.wps.http", "geoml_hub.wps.jobs.dispatcher", "geoml_hub.wps.jobs.worker",
                               "geoml_hub.wps.jobs.kubernetes", "geoml_hub.processes"),
}


def test_inside_the_wps_the_ogc_layer_is_below_jobs_and_http():
    wrong = [e for e in EDGES for owner, banned in WPS_FORBIDDEN.items()
             if (e[0] == owner or e[0].startswith(owner + "."))
             and any(e[1] == b or e[1].startswith(b + ".") for b in banned)]
    assert not wrong, "\n" + _show(wrong)


def _commented(lines: List[str], node) -> bool:
    """A comment on the import's lines, or above it in its block of imports."""
    if any("#" in line for line in lines[node.lineno - 1:node.end_lineno]):
        return True
    i = node.lineno - 2
    while i >= 0:
        text = lines[i].strip()
        if not text.startswith(("#", "import ", "from ")):
            return False
        if "#" in text:
            return True
        i -= 1
    return False


def _lazy_imports():
    for name, (path, is_package) in sorted(MODULES.items()):
        lines = path.read_text(encoding="utf-8").splitlines()
        for node, targets, inside in _imports(name, path, is_package):
            if inside:
                yield name, path, node, targets[0], _commented(lines, node)


def test_function_level_imports_say_why():
    wrong = []
    for name, path, node, target, commented in _lazy_imports():
        if commented or name.startswith(UNCHECKED_LAZY):
            continue
        if any(target == lib or target.startswith(lib + ".") for lib in LAZY_LIBRARIES):
            continue
        wrong.append(f"  {path.relative_to(ROOT)}:{node.lineno}: {target}")
    assert not wrong, ("imports inside functions without a reason: move them to module level, or comment why "
                       "(LAZY_LIBRARIES lists the heavy libraries):\n" + "\n".join(wrong))


@pytest.mark.parametrize("module", ["geoml_hub.wps.settings", "geoml_hub.wps.service", "geoml_hub.wps.jobs",
                                    "geoml_hub.wps.worker", "geoml_hub.wps.dispatcher", "geoml_hub.wps.k8s"])
def test_old_module_paths_still_exist(module):
    """The chart, the images and users' code name these (deprecated aliases where moved)."""
    assert module in MODULES


def test_no_test_module_imports_another():
    """Shared fixtures live in conftest.py and helpers in support modules (helpers, wps_server,
    hubtools, pg, kube_standin), so each test module can be read, moved or run on its own."""
    tests = Path(__file__).resolve().parent
    wrong = []
    for path in sorted(tests.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            wrong += [f"{path.relative_to(tests)}:{node.lineno} imports {n}" for n in names
                      if n.split(".")[0].startswith("test_")]
    assert not wrong, "\n".join(wrong)
