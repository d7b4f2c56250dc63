"""Dependencies run one way (docs/architecture.md): no import cycle between the packages
of cimc, none between its modules, and the passes are imported only by the driver.

Every import in a file counts, wherever it stands: at module level, inside a function
(deferred), or under `if TYPE_CHECKING:`. The sources are read with `ast`, not imported,
and the folders passes/, isa/ and targets/ are named as they install: cimc.passes,
cimc.isa, cimc.targets."""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parent.parent
# Import name -> source folder, as pyproject.toml's [tool.setuptools.package-dir] maps them.
SOURCES = {
    "cimc": ROOT / "cimc",
    "cimc.passes": ROOT / "passes",
    "cimc.isa": ROOT / "isa",
    "cimc.targets": ROOT / "targets",
}
# The driver: the only modules that may import cimc.passes (and cimc.cli.*).
DRIVERS = ("cimc.pass_manager", "cimc.pipeline", "cimc.api", "cimc.cli")
# The table of docs/architecture.md, lowest first: a package imports only packages of
# earlier rows.
LAYERS = [
    ("cimc.diagnostics",),
    ("cimc.outputs", "cimc.options", "cimc.pipeline"),
    ("cimc.ir", "cimc.targets", "cimc.isa"),
    ("cimc.reference", "cimc.pass_base", "cimc.tensor_io"),
    ("cimc.dialect", "cimc.isa.simulator"),
    ("cimc.frontend", "cimc.analysis"),
    ("cimc.placement", "cimc.codegen"),
    ("cimc.emit",),
    ("cimc.passes", "cimc.host"),
    ("cimc.pass_manager",),
    ("cimc.api",),
    ("cimc.sweep",),
    ("cimc.cli", "cimc"),
    ("cimc.__main__",),
]


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    is_package: bool


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module
    line: int
    text: str  # the import statement as written

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.text}"


def _modules() -> dict[str, Module]:
    modules: dict[str, Module] = {}
    for name, folder in SOURCES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts.pop()
            full = ".".join([name, *parts])
            modules[full] = Module(full, path, is_package)
    return modules


def _resolve(name: str, modules: dict[str, Module]) -> str | None:
    """The module that `import name` runs last: name, or its longest known prefix."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: Module, modules: dict[str, Module]) -> list[Import]:
    text = module.path.read_text()
    tree = ast.parse(text, str(module.path))
    lines = text.splitlines()
    found: list[Import] = []
    package = module.name if module.is_package else module.name.rpartition(".")[0]
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from package import module` imports the module; `from m import name`, m.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                       for alias in node.names]
        else:
            continue
        statement = " ".join(line.strip() for line in
                             lines[node.lineno - 1:(node.end_lineno or node.lineno)])
        for target in dict.fromkeys(targets):
            ours = target == "cimc" or target.startswith("cimc.")
            resolved = _resolve(target, modules) if ours else None
            if resolved is not None and resolved != module.name:
                found.append(Import(module.name, resolved, node.lineno, statement))
    return found


def _package(name: str, modules: dict[str, Module]) -> str:
    """The package a module belongs to: its innermost package below cimc (cimc.ir,
    cimc.isa.simulator, ...); a module directly in cimc/ (cimc.api) stands for itself. A
    pass with helpers is a package (cimc.passes.lower): it belongs to cimc.passes."""
    if name.startswith("cimc.passes."):
        return "cimc.passes"
    if modules[name].is_package and name != "cimc":
        return name
    parent = name.rpartition(".")[0]
    return name if parent in ("", "cimc") else parent


MODULES = _modules()
IMPORTS = [imp for module in MODULES.values() for imp in _imports(module, MODULES)]


def _graph(node_of: Callable[[str], str], imports: list[Import] = IMPORTS) -> nx.DiGraph:
    graph = nx.DiGraph()
    graph.add_nodes_from({node_of(name) for name in MODULES})
    for imp in imports:
        source, target = node_of(imp.source), node_of(imp.target)
        if source != target:
            if not graph.has_edge(source, target):
                graph.add_edge(source, target, imports=[])
            graph.edges[source, target]["imports"].append(imp)
    return graph


def _cycles(graph: nx.DiGraph) -> list[str]:
    """One cycle per strongly connected component, as a chain of names and the import
    lines that make each link."""
    reports = []
    for component in nx.strongly_connected_components(graph):
        if len(component) < 2:
            continue
        cycle = nx.find_cycle(graph.subgraph(component))
        chain = " -> ".join([cycle[0][0], *(target for _, target in cycle)])
        lines = [f"    {imp}" for source, target in cycle
                 for imp in graph.edges[source, target]["imports"]]
        members = ", ".join(sorted(component))
        reports.append("\n".join([chain, *lines, f"  (the whole cycle group: {members})"]))
    return sorted(reports)


def test_the_sources_are_found() -> None:
    # A walk that found nothing would pass every test below.
    assert {"cimc.api", "cimc.ir.module", "cimc.passes.lower", "cimc.isa.table",
            "cimc.isa.simulator.machine", "cimc.targets.loader"} <= set(MODULES)
    assert any(imp.source == "cimc.passes.lower" and imp.target == "cimc.ir.module"
               for imp in IMPORTS)


def test_a_deferred_or_type_checking_import_makes_a_cycle(tmp_path: Path) -> None:
    # The checks below must see the imports that hide a cycle from Python.
    (tmp_path / "a.py").write_text("def f():\n    from cimc.b import g\n")
    (tmp_path / "b.py").write_text("from typing import TYPE_CHECKING\n\n"
                                   "if TYPE_CHECKING:\n    from cimc import a\n")
    modules = {f"cimc.{n}": Module(f"cimc.{n}", tmp_path / f"{n}.py", False) for n in "ab"}
    imports = [imp for module in modules.values() for imp in _imports(module, modules)]
    assert [str(imp) for imp in imports] == ["cimc.a:2: from cimc.b import g",
                                             "cimc.b:4: from cimc import a"]
    (cycle,) = _cycles(_graph(lambda name: name, imports))
    assert cycle.startswith(("cimc.a -> cimc.b -> cimc.a", "cimc.b -> cimc.a -> cimc.b"))


def test_no_cycle_between_packages() -> None:
    cycles = _cycles(_graph(lambda name: _package(name, MODULES)))
    assert not cycles, "packages import each other in a circle:\n" + "\n".join(cycles)


def test_packages_import_only_earlier_layers() -> None:
    row = {package: k for k, layer in enumerate(LAYERS) for package in layer}
    packages = {_package(name, MODULES) for name in MODULES}
    assert not packages - set(row), "packages missing from LAYERS (and docs/architecture.md)"
    wrong = [f"{imp}  ({_package(imp.source, MODULES)} may not import "
             f"{_package(imp.target, MODULES)})" for imp in IMPORTS
             if row[_package(imp.target, MODULES)] >= row[_package(imp.source, MODULES)]
             and _package(imp.target, MODULES) != _package(imp.source, MODULES)]
    assert not wrong, "imports against the order of docs/architecture.md:\n" + "\n".join(wrong)


def test_no_cycle_between_modules() -> None:
    cycles = _cycles(_graph(lambda name: name))
    assert not cycles, "modules import each other in a circle:\n" + "\n".join(cycles)


def _is_driver(name: str) -> bool:
    return any(name == driver or name.startswith(f"{driver}.") for driver in DRIVERS)


def test_only_the_driver_imports_the_passes() -> None:
    wrong = [str(imp) for imp in IMPORTS
             if _package(imp.target, MODULES) == "cimc.passes"
             and _package(imp.source, MODULES) != "cimc.passes" and not _is_driver(imp.source)]
    assert not wrong, (f"only {', '.join(DRIVERS)} import cimc.passes; these do too:\n"
                       + "\n".join(wrong))
