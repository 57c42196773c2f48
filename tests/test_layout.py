"""The floors of the package, checked on its source with `ast`:

- imports point one way, web/cli -> services -> stores -> leaves (`BANDS`); a module may import
  its own band or any band below it, never one above;
- formats/ imports nothing of pyproxy's but model (and itself);
- no import cycle among pyproxy's modules;
- only pyproxy/web/ imports aiohttp's server side (`aiohttp.web*`) or aiohttp_jinja2;
- every test module mirrors the module it tests (tests/stores/test_private.py for
  pyproxy/stores/private.py), but for the exceptions listed with their reason.

Every import counts, wherever it is written: at the top, inside a function (a lazy import) or
under `if TYPE_CHECKING:` (a type-only edge still couples the two modules).
"""

from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "pyproxy"
TESTS = ROOT / "tests"

# band -> the modules and packages in it, highest band first; a package stands for every module
# under it. A module in no band fails the test: give each new module its floor here.
BANDS: dict[str, tuple[str, ...]] = {
    "front ends": ("pyproxy.web", "pyproxy.cli", "pyproxy.__main__"),
    "services": (
        "pyproxy.publish", "pyproxy.repository", "pyproxy.ops", "pyproxy.compose", "pyproxy.health",
    ),
    "stores": ("pyproxy.stores",),
    "leaves": (
        "pyproxy", "pyproxy.model", "pyproxy.config", "pyproxy.metrics", "pyproxy.logs",
        "pyproxy.multiproc", "pyproxy.units", "pyproxy.datadir", "pyproxy.access", "pyproxy.lru",
        "pyproxy.policy", "pyproxy.project_lists", "pyproxy.filenames", "pyproxy.soon",
        "pyproxy.formats",
    ),
}
FORMATS_MAY_IMPORT = ("pyproxy.model", "pyproxy.formats")
SERVER_SIDE = ("aiohttp.web", "aiohttp_jinja2")  # `aiohttp.web` covers aiohttp.web_* too
SERVER_SIDE_HOME = "pyproxy.web"

# test modules that mirror no module of pyproxy/, and why
NOT_MIRRORS: dict[str, str] = {
    "tests/test_layout.py": "checks the package layout as a whole",
    "tests/test_fake_upstream.py": "tests the test helper tests/fake_upstream.py",
    "tests/test_benchmark_smoke.py": "runs the benchmark (benchmarks/), not a pyproxy module",
    "tests/servers/test_servers.py": "tests the test servers tests/servers/ (PostgreSQL, S3)",
    "tests/web/test_warmup_downloads.py": "web/warmup.py's downloads ahead of pip through the"
                                          " stack: tests/web/test_warmup.py's second half",
}
NOT_MIRRORED_DIRS = ("tests/e2e",)  # real clients against `pyproxy serve`, by feature


@dataclass
class Edge:
    source: str
    target: str
    sites: list[tuple[int, str]]  # (line, "top-level" | "lazy" | "TYPE_CHECKING")

    def __str__(self) -> str:
        where = ", ".join(f"{line} {kind}" for line, kind in self.sites)
        return f"{self.source} -> {self.target} ({_path(self.source)}: line {where})"


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path
    return modules


MODULES = _modules()


def _path(module: str) -> str:
    return str(MODULES[module].relative_to(ROOT))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.Module) -> list[tuple[ast.Import | ast.ImportFrom, str]]:
    """Every import statement with where it sits: top-level, lazy (in a function) or
    TYPE_CHECKING (under `if TYPE_CHECKING:`)."""
    found: list[tuple[ast.Import | ast.ImportFrom, str]] = []

    def visit(node: ast.AST, kind: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                found.append((child, kind))
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                visit(child, "lazy" if kind == "top-level" else kind)
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for statement in child.body:
                    visit(ast.Module(body=[statement], type_ignores=[]), "TYPE_CHECKING")
                for statement in child.orelse:
                    visit(ast.Module(body=[statement], type_ignores=[]), kind)
            else:
                visit(child, kind)

    visit(tree, "top-level")
    return found


def _imported_names(name: str, path: Path, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The full dotted names a statement imports (`from a import b` gives a.b)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        base = ".".join(package[: len(package) - node.level + 1])
        module = f"{base}.{node.module}" if node.module else base
    else:
        module = node.module or ""
    return [module, *(f"{module}.{alias.name}" for alias in node.names)]


def _owner(dotted: str) -> str | None:
    """The pyproxy module a dotted name lives in (the longest prefix that is a module)."""
    while dotted and dotted not in MODULES:
        dotted = dotted.rpartition(".")[0]
    return dotted or None


@dataclass
class Graph:
    edges: list[Edge]
    server_side: list[str]  # "module (path:line) imports name"


def _graph() -> Graph:
    edges: dict[tuple[str, str], Edge] = {}
    server_side = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node, kind in _imports(tree):
            names = _imported_names(name, path, node)
            if isinstance(node, ast.ImportFrom):
                # `from a import b`: an edge to a.b when that is a module, else to a
                module, members = names[0], names[1:]
                targets = [m for m in members if m in MODULES]
                if len(targets) < len(members):
                    targets.append(module)
            else:
                targets = names
            for target in targets:
                owner = _owner(target)
                if owner is not None and owner != name:
                    edge = edges.setdefault((name, owner), Edge(name, owner, []))
                    edge.sites.append((node.lineno, kind))
            server = [n for n in names if any(n == s or n.startswith(s) for s in SERVER_SIDE)]
            if server and not _inside(name, SERVER_SIDE_HOME):
                server_side.append(
                    f"{name} ({_path(name)}: line {node.lineno} {kind}) imports {server[-1]}"
                )
        if not _inside(name, SERVER_SIDE_HOME):
            server_side += [
                f"{name} ({_path(name)}: line {attribute.lineno}) uses aiohttp.{attribute.attr}"
                for attribute in ast.walk(tree)
                if isinstance(attribute, ast.Attribute) and attribute.attr.startswith("web")
                and isinstance(attribute.value, ast.Name) and attribute.value.id == "aiohttp"
            ]
    return Graph(sorted(edges.values(), key=lambda e: (e.source, e.target)), server_side)


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _band(module: str) -> int | None:
    """Index into BANDS (0 = highest); the longest matching entry decides."""
    best: tuple[int, int] | None = None
    for index, members in enumerate(BANDS.values()):
        for member in members:
            if _inside(module, member) and (best is None or len(member) > best[0]):
                best = (len(member), index)
    return None if best is None else best[1]


BAND_NAMES = list(BANDS)


def _cycles(edges: list[Edge]) -> list[list[Edge]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    successors: dict[str, list[Edge]] = {}
    for edge in edges:
        successors.setdefault(edge.source, []).append(edge)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for edge in successors.get(module, []):
            if edge.target not in index:
                connect(edge.target)
                low[module] = min(low[module], low[edge.target])
            elif edge.target in on_stack:
                low[module] = min(low[module], index[edge.target])
        if low[module] == index[module]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == module:
                    break
            if len(component) > 1:
                components.append(component)

    for module in sorted(MODULES):
        if module not in index:
            connect(module)

    cycles = []
    for component in components:
        # a shortest way from the component's first module back to itself, inside it
        start = min(component)
        paths: dict[str, list[Edge]] = {start: []}
        frontier = [start]
        cycle: list[Edge] | None = None
        while frontier and cycle is None:
            following = []
            for module in frontier:
                for edge in successors.get(module, []):
                    if edge.target not in component:
                        continue
                    if edge.target == start:
                        cycle = [*paths[module], edge]
                        break
                    if edge.target not in paths:
                        paths[edge.target] = [*paths[module], edge]
                        following.append(edge.target)
                if cycle is not None:
                    break
            frontier = following
        assert cycle is not None
        cycles.append(cycle)
    return cycles


GRAPH = _graph()


def _fail_if(problems: list[str], heading: str) -> None:
    if problems:
        pytest.fail(f"{heading}:\n" + "\n".join(problems), pytrace=False)


def test_the_walk_sees_every_kind_of_import() -> None:
    source = textwrap.dedent("""
        import a
        from b import c
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            from d import e
        else:
            import f
        class G:
            import h
        def i():
            import j
            if TYPE_CHECKING:
                import k
        try:
            import l
        except ImportError:
            pass
    """)
    found = {
        (node.names[0].name if isinstance(node, ast.Import) else node.module, kind)
        for node, kind in _imports(ast.parse(source))
    }
    assert found == {
        ("a", "top-level"), ("b", "top-level"), ("typing", "top-level"), ("d", "TYPE_CHECKING"),
        ("f", "top-level"), ("h", "top-level"), ("j", "lazy"), ("k", "TYPE_CHECKING"),
        ("l", "top-level"),
    }


def test_relative_imports_resolve() -> None:
    module = PACKAGE / "web" / "app.py"
    package = PACKAGE / "web" / "__init__.py"
    node = ast.parse("from ..stores import auth").body[0]
    assert isinstance(node, ast.ImportFrom)
    assert _imported_names("pyproxy.web.app", module, node) == [
        "pyproxy.stores", "pyproxy.stores.auth"
    ]
    node = ast.parse("from . import app").body[0]
    assert isinstance(node, ast.ImportFrom)
    assert _imported_names("pyproxy.web", package, node) == ["pyproxy.web", "pyproxy.web.app"]


def test_the_graph_sees_the_package() -> None:
    """The walk itself: it finds modules and edges of all kinds, so an empty result below means
    the rules hold, not that nothing was looked at."""
    assert "pyproxy.web.app" in MODULES and "pyproxy.model" in MODULES
    kinds = {kind for edge in GRAPH.edges for _, kind in edge.sites}
    assert {"top-level", "lazy"} <= kinds, kinds
    assert any(edge.target == "pyproxy.model" for edge in GRAPH.edges)


def test_every_module_has_a_floor() -> None:
    unplaced = [f"{name} ({_path(name)})" for name in MODULES if _band(name) is None]
    _fail_if(unplaced, "modules in no band of BANDS (tests/test_layout.py)")


def test_imports_point_down() -> None:
    upward = []
    for edge in GRAPH.edges:
        source, target = _band(edge.source), _band(edge.target)
        if source is not None and target is not None and target < source:
            upward.append(f"{edge}: {BAND_NAMES[source]} imports {BAND_NAMES[target]}")
    _fail_if(upward, "upward imports")


def test_formats_import_only_the_model() -> None:
    wrong = [
        str(edge)
        for edge in GRAPH.edges
        if _inside(edge.source, "pyproxy.formats")
        and not any(_inside(edge.target, allowed) for allowed in FORMATS_MAY_IMPORT)
    ]
    _fail_if(wrong, "formats/ may import only pyproxy.model")


def test_no_import_cycle() -> None:
    cycles = _cycles(GRAPH.edges)
    described = [
        " -> ".join([cycle[0].source, *(edge.target for edge in cycle)])
        + "\n" + "\n".join(f"    {edge}" for edge in cycle)
        for cycle in cycles
    ]
    _fail_if(described, "import cycles")


def test_only_web_imports_the_server_side_of_aiohttp() -> None:
    _fail_if(GRAPH.server_side, "aiohttp.web / aiohttp_jinja2 outside pyproxy/web/")


def _mirror(test_file: Path) -> Path:
    """tests/a/test_b.py -> pyproxy/a/b.py, or pyproxy/a/b/__init__.py when b is a package."""
    relative = test_file.relative_to(TESTS)
    module = PACKAGE.joinpath(*relative.parts[:-1], relative.name.removeprefix("test_"))
    package = module.with_suffix("") / "__init__.py"
    return package if package.is_file() else module


def _test_files() -> list[Path]:
    return [
        path
        for path in sorted(TESTS.rglob("test_*.py"))
        if not any(path.is_relative_to(ROOT / directory) for directory in NOT_MIRRORED_DIRS)
    ]


def test_every_test_module_mirrors_a_module() -> None:
    unmatched = [
        f"{path.relative_to(ROOT)}: no {_mirror(path).relative_to(ROOT)}"
        for path in _test_files()
        if not _mirror(path).is_file() and str(path.relative_to(ROOT)) not in NOT_MIRRORS
    ]
    _fail_if(unmatched, "test modules that mirror no module (move them beside what they test, "
                        "or list them in NOT_MIRRORS with a reason)")


def test_the_exceptions_are_current() -> None:
    stale = []
    for name in NOT_MIRRORS:
        path = ROOT / name
        if not path.is_file():
            stale.append(f"{name}: no such test module")
        elif _mirror(path).is_file():
            stale.append(f"{name}: mirrors {_mirror(path).relative_to(ROOT)} now")
    _fail_if(stale, "stale entries in NOT_MIRRORS")
