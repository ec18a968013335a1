"""The layers of DESIGN: engine (numpy and the standard library only) below service; no
import cycle inside either package; importing them has no side effects."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def imports(path: Path, package: str, lazy: bool) -> set[str]:
    """The modules of ``package`` that the module at ``path`` imports: at module level (the
    ones for type checking included), and inside functions too with ``lazy``."""
    tree = ast.parse(path.read_text())
    found = set()

    def visit(node, top: bool):
        for child in ast.iter_child_nodes(node):
            inner = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, (ast.Import, ast.ImportFrom)) and (top or lazy):
                if isinstance(child, ast.Import):
                    names = [a.name for a in child.names]
                else:
                    base = child.module or ""
                    names = [f"{base}.{a.name}" for a in child.names] + [base]
                found.update(n for n in names if n == package or n.startswith(package + "."))
            visit(child, inner)

    visit(tree, True)
    return found


def module_graph(package: str, lazy: bool) -> dict[str, set[str]]:
    folder = ROOT / package
    modules = {}
    for path in folder.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported in imports(path, package, lazy):
            # "from service.spec import Objective" names service.spec (a module) or an
            # attribute of it: keep the longest prefix that is a module
            while imported not in modules and "." in imported:
                imported = imported.rsplit(".", 1)[0]
            if imported in modules and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle found by a depth-first search (empty when the graph is acyclic)."""
    found, state = [], {}

    def walk(node, stack):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                walk(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            walk(node, [node])
    return found


def test_no_import_cycle_inside_service_even_counting_lazy_imports():
    graph = module_graph("service", lazy=True)
    graph.pop("service")    # the package's __init__ only re-exports the public names
    for targets in graph.values():
        targets.discard("service")
    assert cycles(graph) == []


def test_no_import_cycle_inside_engine_at_module_level():
    graph = module_graph("engine", lazy=False)
    graph.pop("engine")
    for targets in graph.values():
        targets.discard("engine")
    assert cycles(graph) == []


def test_the_cycle_check_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


def test_engine_imports_numpy_and_the_standard_library_only():
    for path in (ROOT / "engine").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top in ("engine", "numpy") or top in sys.stdlib_module_names, \
                    f"{path.relative_to(ROOT)} imports {name}"


def test_importing_the_packages_starts_nothing_and_loads_no_tensorboardx():
    code = ("import sys; before = list(sys.meta_path)\n"
            "import engine, service, service.driver, service.trial, service.worker, "
            "service.cli\n"
            "assert sys.meta_path == before, sys.meta_path\n"
            "assert 'tensorboardX' not in sys.modules and 'ray' not in sys.modules, "
            "[m for m in ('tensorboardX', 'ray') if m in sys.modules]\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
